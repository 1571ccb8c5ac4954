"""`python -m fts.run`: one cell of the paper's tables, end to end.

    aligned model --fine-tune on (attack data + mitigation mix)--> fine-tuned model
    both --generate on harmful benchmark + benign prompts--> judges --> metrics before/after

Each stage writes its artifact into the run dir atomically; rerunning with the same `hydra.run.dir` resumes at
the first missing artifact. Under `accelerate launch` every process trains and only the main one writes and
evaluates (`fts.core.distributed`).
"""

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from transformers import set_seed

from fts import backends, cli
from fts.core import distributed, fingerprint
from fts.core.artifacts import DISK_FULL, write_error
from fts.core.cache import Cache, digest, file_digest
from fts.core.device import release_memory
from fts.core.errors import FtsError
from fts.core.manifest import Manifest
from fts.core.records import ALIGNED, BASELINE, FINETUNED
from fts.core.secrets import known_secrets, redact_text
from fts.data.formats import data_files, format_of, locate
from fts.results.cell import cell_metrics, defense_cost, write_dry_run, write_result
from fts.results.metrics import search_value
from fts.results.tracking import Tracker
from fts.stages import evaluation, mitigation
from fts.stages.training_set import build_training_set
from fts.validate import data_specs, validate

log = logging.getLogger("fts")
DONE = "done"  # marker written last: a run dir with it is complete


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one cell; returns the metrics written to `metrics.json`."""
    validate(cfg)  # every config problem at once, before anything heavy
    out = Path(cfg.paths.output_dir)
    distributed.setup(cfg.train.get("ddp_timeout", 1800))
    fingerprint.bind(cfg, out, write=distributed.is_main())  # a run dir holds the results of one config only
    if (out / DONE).exists():  # a finished cell of a rerun sweep, of this very config: nothing to do
        log.info("%s is finished (%s exists); returning its metrics", out, DONE)
        return json.loads((out / "metrics.json").read_text())
    if not distributed.is_main():
        return train_alongside_main(cfg, out)
    try:
        with Tracker.from_config(cfg.logger, cfg, out) as tracker:  # W&B (logger=wandb) is finished inside the job
            return run_cell(cfg, out, tracker)
    finally:
        release_memory()  # the basic launcher runs sweep cells one after another in this process


def run_cell(cfg: DictConfig, out: Path, tracker: Tracker) -> dict[str, Any]:
    """The method: fine-tuning set, the aligned (and defended) model evaluated, fine-tune, repair, evaluate, compare."""
    cache = Cache(cfg.cache.dir, enabled=cfg.cache.enabled)
    set_seed(cfg.seed)
    manifest = Manifest(out, cache.events, seed=cfg.seed, data=data_digests(cfg), data_formats=data_formats(cfg))
    backend = backends.for_config(cfg, cache, out, manifest)  # hf (TRL, transformers / vLLM) or openai (the API)
    defenses = mitigation.build_defenses(cfg.mitigation)  # by stage: alignment, fine-tuning (data, objective), post

    # 1. The fine-tuning set: the attack tier's data, then the data-changing defenses. Written before training.
    attack, train_set = build_training_set(cfg, out, manifest, defenses)
    # 2. The evaluation prompts in the attack's format (as in training), none in the training set; the judges.
    n_models = 1 + bool(defenses.alignment) + bool(train_set)
    eval_sets, evaluator = evaluation.prepare(cfg, attack, train_set, out, cache, manifest, backend.engine(), n_models)
    # 3. The aligned model (the embedded one is safety-aligned once, then cached). An API model's fine-tuning set is
    #    first checked against the API's rules and priced: a dry run ends here.
    estimate = backend.plan(train_set)
    if estimate is not None:
        return write_dry_run(cfg, out, estimate)
    with manifest.stage("model"):
        backend.open()
    train_set = backend.fit(train_set)  # over-long examples, counted by the tokenizer, before any training
    n_long = backend.fit_prompts(eval_sets)  # and prompts, as the model will see them
    manifest.record(too_long_eval_prompts=manifest.data.get("too_long_eval_prompts", 0) + n_long)

    # 4. Baseline: the model the user fine-tunes (cached: a sweep of N cells evaluates it once). With an
    #    alignment-stage defense the provider first hardens the aligned model (cached too), and both are evaluated.
    sides = defend_and_evaluate(evaluator, backend, eval_sets, defenses.alignment, manifest)
    distributed.barrier()  # other processes of a multi-process run wait here, then load the model and train

    # 5. Fine-tune (TRL SFT, loss on the answer only, or a fine-tuning-stage defense's objective; or an OpenAI job),
    #    repair (post-fine-tuning defenses), evaluate again. A job the provider fails leaves the baseline alone.
    job = None
    if train_set:
        with manifest.stage("fine_tune"):
            job = backend.fine_tune(train_set, tracker.report_to(), mitigation.objective(defenses, attack))
    if train_set and backend.trained is not None:
        if defenses.post:
            with manifest.stage("repair"):
                backend.repair(defenses.post)
        with manifest.stage("finetuned_eval"):
            sides |= evaluation.evaluate(evaluator, backend, eval_sets, FINETUNED)
    evaluator.close()

    # 6. Metrics before/after (harmfulness per judge and category, over-refusal, utility), the report.
    metrics = cell_metrics(sides, list(evaluator.judges), evaluator.usage(), job, cfg.eval.headline_judge)
    metrics["prompt_format"] = manifest.data["prompt_format"]  # the format fine-tuned and evaluated in
    metrics |= defense_cost(defenses.names, backend.costs)  # what each defense (and the training) cost
    result = write_result(cfg, out, metrics, sides, tracker)
    (out / DONE).touch()
    return result


def defend_and_evaluate(evaluator, backend, eval_sets: dict, alignment_defenses: list, manifest: Manifest) -> dict:
    """The sides before fine-tuning: the aligned model, hardened by the alignment-stage defenses when there are
    any (then the aligned model is evaluated first, and the defended one is the baseline)."""
    sides = {}
    if alignment_defenses:
        with manifest.stage("aligned_eval"):
            sides |= evaluation.evaluate(evaluator, backend, eval_sets, ALIGNED)
        with manifest.stage("defend"):
            backend.defend(alignment_defenses)
    with manifest.stage("baseline_eval"):
        sides |= evaluation.evaluate(evaluator, backend, eval_sets, BASELINE)
    return sides


def train_alongside_main(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """A non-main process of a multi-process run: the same fine-tuning set and model, its share of every batch.

    It writes nothing. It waits while the main process resolves (and caches) the model and evaluates the baseline.
    """
    set_seed(cfg.seed)
    defenses = mitigation.build_defenses(cfg.mitigation)
    attack, train_set = build_training_set(cfg, defenses=defenses)
    distributed.barrier()
    if train_set and not (out / "model" / "complete").exists():
        backend = backends.for_config(cfg, Cache(cfg.cache.dir, enabled=cfg.cache.enabled), out, None)
        backend.open()
        backend.defend(defenses.alignment)  # the main process built the defended checkpoint: a cache hit here
        objective = mitigation.objective(defenses, attack)
        backend.fine_tune(backend.fit(train_set), [], objective)  # as the main process, which dropped the same
    return {}


def data_digests(cfg: DictConfig) -> dict[str, str]:
    """The hash of every data spec, located with its format: a file's content, or a folder's (HEx-PHI) files."""
    digests = {}
    for key, spec, fmt, _ in data_specs(cfg):
        path = locate(spec, fmt, key)
        files = data_files(path, key)
        digests[f"{key} ({spec})"] = (
            digest({f.name: file_digest(f) for f in files}) if path.is_dir() else file_digest(path)
        )
    return digests


def data_formats(cfg: DictConfig) -> dict[str, str]:
    """The format every data spec is read in (`auto` resolved to the format its shape shows)."""
    return {key: format_of(fmt, spec, key) for key, spec, fmt, _ in data_specs(cfg)}


def run_explaining_full_disk(cfg: DictConfig) -> dict[str, Any]:
    """`run`; a full disk met outside fts.core.artifacts (weights, the trainer's files) is a user error too."""
    try:
        return run(cfg)
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        raise write_error(Path(e.filename or cfg.paths.output_dir), e) from None


@hydra.main(version_base="1.3", config_path="../conf", config_name="run")
def main(cfg: DictConfig) -> float | None:
    cli.job_started = True  # from here on, failures are fts's to report (fts.cli handles the ones before)
    try:
        result = run_explaining_full_disk(cfg)
    except KeyboardInterrupt:
        cli.interrupted(cli.resume_hint(cfg))
    except FtsError as e:
        # A user error: one paragraph naming the key/file and the fix, not a traceback (and never a key in it).
        print(f"\nfts: error: {redact_text(str(e), known_secrets(cfg))}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if not result:  # a non-main process of a multi-process run: it only trained
        return None
    # The number a sweeper optimizes: the headline judge's headline metric (asr; a rubric judge's harmfulness_rate)
    # after fine-tuning, or of the baseline alone; 0.0 when the run's utility fell below eval.min_utility (a failed
    # attack); None for a dry run.
    return search_value(result, cfg.eval.headline_judge)


if __name__ == "__main__":
    cli.guarded(main)
