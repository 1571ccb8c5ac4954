"""`python -m fts.run`: one cell of the paper's tables, end to end.

    aligned model --fine-tune on (attack data + mitigation mix)--> fine-tuned model
    both --generate on harmful benchmark + benign prompts--> judges --> metrics before/after

Each stage writes its artifact into the run dir atomically; rerunning with the same `hydra.run.dir` resumes at
the first missing artifact. Under `accelerate launch` every process trains and only the main one writes and
evaluates (`fts.core.distributed`).
"""

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from fts import cli
from fts.core import distributed, fingerprint
from fts.core.artifacts import DISK_FULL, write_error, write_json, write_jsonl, write_text
from fts.core.cache import Cache, digest, file_digest
from fts.core.config import build
from fts.core.device import release_memory
from fts.core.errors import DataError, FtsError
from fts.core.manifest import Manifest
from fts.core.secrets import known_secrets, redact_text
from fts.data.contamination import find_overlaps
from fts.data.formats import data_files, locate
from fts.data.lengths import check_example_chars, fit_prompts, min_tokens
from fts.generate import vllm as vllm_engine
from fts.judges import build_judges
from fts.models import generation_key, load, open_model
from fts.results import metrics as M
from fts.results.reference.compare import run_reference
from fts.results.report import run_report
from fts.results.tracking import Tracker
from fts.stages import mitigation
from fts.stages.evaluation import Evaluator, evaluation_prompts, fit_to_context
from fts.train import openai as api_training
from fts.train.hf import fine_tune, fit_lengths, load_trained, save_merged
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
    """The method: build the fine-tuning set, evaluate the aligned model, fine-tune, evaluate again, compare."""
    cache = Cache(cfg.cache.dir, enabled=cfg.cache.enabled)
    set_seed(cfg.seed)
    manifest = Manifest(out, seed=cfg.seed, data=data_digests(cfg))

    # 1. The fine-tuning set: the attack tier's data, then the mitigation's changes. Written before training.
    attack = build(cfg.attack)
    train_set = mitigation.apply(attack.training_examples(), cfg.mitigation, cfg.seed, attack, out)
    if cfg.train.get("max_length") is not None:  # a huge example stops here, before any tokenizer sees it
        train_set = check_example_chars(train_set, cfg.train.max_length, cfg.train.get("too_long", "warn"))
    write_jsonl(out / "train.jsonl", train_set)
    manifest.record(train_examples=len(train_set), attack_stats=getattr(attack, "stats", {}))

    # 2. The evaluation prompts in the attack's format (its system prompt and user template, as in training), in
    #    one or more variants (the backdoor adds triggered prompts): harmful benchmark, safe prompts (over-refusal),
    #    utility questions. No eval prompt may be in the training set.
    prompts = evaluation_prompts(cfg.eval)
    max_tokens, too_long = cfg.model.get("max_length"), cfg.eval.get("too_long", "fail")
    if max_tokens is not None:  # prompts that cannot fit under any tokenizer, before any model loads
        prompts, n_long = fit_prompts(prompts, max_tokens, too_long, min_tokens, "or more tokens by their length")
        manifest.record(too_long_eval_prompts=n_long)
    check_contamination(prompts, train_set, out, cfg.eval.contamination)
    eval_sets = attack.eval_sets(prompts)
    judges = build_judges(cfg.judge)
    evaluator = Evaluator(out, cfg.eval, judges, cache, vllm=vllm_engine.engine_for(cfg))
    evaluator.preflight(prompts, n_sides=len(eval_sets) * (2 if train_set else 1))  # API keys/budgets, before loading

    # 3. The aligned model (the embedded one is materialized and safety-aligned once, then cached). An API model is
    #    a handle; its fine-tuning set is first checked against the API's rules and priced, and a dry run ends here.
    plan = api_training.plan_for(cfg, train_set, out)
    if plan is not None and plan.dry_run:
        return dry_run(cfg, out, plan.summary())
    quantization = cfg.peft.get("quantization") if plan is None else None  # QLoRA loads the model in 4 bit
    with manifest.stage("model"):
        model, tokenizer, identity, checkpoint = open_model(cfg.model, cache, quantization)
    manifest.record(
        model_identity=identity, model_commit=getattr(getattr(model, "config", None), "_commit_hash", None)
    )
    if plan is None and train_set:  # over-long examples, counted by the tokenizer, before any GPU time is spent
        train_set = fit_training_set(cfg, train_set, tokenizer, out, manifest)
    if tokenizer is not None and max_tokens is not None:  # the same for the prompts, as the model will see them
        n_long = fit_to_context(eval_sets, tokenizer, max_tokens, too_long)
        manifest.record(too_long_eval_prompts=manifest.data.get("too_long_eval_prompts", 0) + n_long)

    # 4. Baseline: the aligned model before fine-tuning. Cached by model (weights, dtype, attention, template) +
    #    prompts + decoding, so a sweep of N cells evaluates it once.
    sides = {}
    with manifest.stage("baseline_eval"):
        for variant, variant_prompts in eval_sets.items():
            name = f"baseline{variant}"
            source = generated_from(cfg, model, tokenizer, checkpoint, None)
            key = generation_key(cfg.model, identity, tokenizer)
            sides[name] = evaluator.side(name, source, tokenizer, variant_prompts, cache_key=key)
    distributed.barrier()  # other processes of a multi-process run wait here, then load the model and train

    # 5. Fine-tune on the attack set (one TRL SFT stage, loss on the answer only; or a job of the OpenAI fine-tuning
    #    API), then evaluate again. A job the provider fails is recorded in `job` and leaves the baseline alone.
    job = None
    if train_set:
        with manifest.stage("fine_tune"):
            if plan is None:
                model = fine_tuned_model(cfg, checkpoint, model, tokenizer, train_set, out, tracker.report_to())
            else:
                model, job = api_training.fine_tune(model, plan, cfg.train, out)
    if train_set and model is not None:
        with manifest.stage("finetuned_eval"):
            for variant, variant_prompts in eval_sets.items():
                name = f"finetuned{variant}"
                source = generated_from(cfg, model, tokenizer, checkpoint, out / "model")
                sides[name] = evaluator.side(name, source, tokenizer, variant_prompts, cache_key=None)
    evaluator.close()

    # 6. Metrics before/after: harmfulness per judge and per category, over-refusal and utility; the report.
    result = {side: M.side_metrics(rows, list(judges)) for side, rows in sides.items()}
    for variant in eval_sets:
        if f"finetuned{variant}" in result:
            result[f"delta{variant}"] = M.delta(result[f"baseline{variant}"], result[f"finetuned{variant}"])
    usage = evaluator.usage()
    if usage:
        result["judge_usage"] = usage
    if job is not None:
        result["fine_tune"] = job
    result |= paper_reference(cfg)
    write_json(out / "metrics.json", result)
    tracker.log_result(result, sides)
    report = run_report(result, title=run_title(cfg), run_dir=str(out))
    write_text(out / "report.md", report)
    print("\n" + report, flush=True)
    (out / DONE).touch()
    return result


def generated_from(cfg: DictConfig, model, tokenizer, checkpoint: str, model_dir: Path | None):
    """What the eval engine generates from: the model in memory, or for eval.engine=vllm the weights on disk (the
    checkpoint; after fine-tuning, the adapter or full weights saved in `model_dir`)."""
    if cfg.eval.engine != "vllm":
        return model
    revision = cfg.model.get("revision")
    return vllm_engine.served(model, tokenizer, checkpoint, revision, cfg.peft.method, model_dir)


def fit_training_set(cfg: DictConfig, train_set: list, tokenizer, out: Path | None, manifest: Manifest | None):
    """`train.too_long` applied; with `drop`, train.jsonl is rewritten to the set that is really trained on."""
    policy = cfg.train.get("too_long", "warn")
    fitted, n_long = fit_lengths(train_set, tokenizer, cfg.train.get("max_length"), policy)
    if n_long and manifest is not None:
        manifest.record(too_long={"examples": n_long, "policy": policy})
        if len(fitted) < len(train_set):
            write_jsonl(out / "train.jsonl", fitted)
    return fitted


def fine_tuned_model(cfg: DictConfig, checkpoint: str, model, tokenizer, train_set: list, out: Path, report_to: list):
    """Train, or reload what an earlier, interrupted run of this run dir already trained; merge on request."""
    model_dir = out / "model"
    if (model_dir / "complete").exists():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the trainer's scratch, left by a crash after saving
        model = load_trained(model, model_dir)
    elif distributed.num_processes() > 1:
        train_and_save(cfg, model, tokenizer, train_set, out, report_to)
        # FSDP / ZeRO-3 leave the trained model sharded across processes: evaluate the saved one, reloaded whole
        release_memory()
        base, _ = load(checkpoint, cfg.model, cfg.peft.get("quantization"))
        model = load_trained(base, model_dir)
    else:
        model = train_and_save(cfg, model, tokenizer, train_set, out, report_to)
    if cfg.save_model == "merged" and cfg.peft.method != "full" and not (model_dir / "merged").exists():
        base, _ = load(checkpoint, cfg.model)  # the full-precision base, whatever the training loaded
        save_merged(base, tokenizer, model_dir)
        del base
    return model


def train_and_save(cfg: DictConfig, model, tokenizer, train_set: list, out: Path, report_to: list):
    """Fine-tune and save into out/model (every process of a multi-process run calls it; the main one writes).

    A multi-process run always saves the weights: the main process evaluates them reloaded.
    """
    weights = bool(cfg.save_model) or distributed.num_processes() > 1
    train_cfg = OmegaConf.merge(cfg.train, {"report_to": report_to})  # TRL's curves go into our W&B run
    scratch = out / "checkpoints"  # the trainer's output_dir; fts saves the model itself (save_strategy "no")
    cache = Cache(cfg.cache.dir, enabled=cfg.cache.enabled)  # the tokenized training set
    model, _ = fine_tune(
        model, tokenizer, train_set, train_cfg, cfg.peft.config, scratch, cfg.seed, out / "model", weights, cache
    )
    if distributed.is_main():
        shutil.rmtree(scratch, ignore_errors=True)
    return model


def dry_run(cfg: DictConfig, out: Path, estimate: dict[str, Any]) -> dict[str, Any]:
    """train.dry_run=true (API models): the cost estimate is the result; nothing was sent, nothing evaluated, and
    no done marker is written, so the real run of this run dir still happens."""
    result = {"fine_tune": {"status": "dry_run", **estimate}}
    write_json(out / "metrics.json", result)
    report = run_report(result, title=run_title(cfg), run_dir=str(out))
    write_text(out / "report.md", report)
    print("\n" + report, flush=True)
    return result


def train_alongside_main(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """A non-main process of a multi-process run: the same fine-tuning set and model, its share of every batch.

    It writes nothing. It waits while the main process resolves (and caches) the model and evaluates the baseline.
    """
    set_seed(cfg.seed)
    attack = build(cfg.attack)
    train_set = mitigation.apply(attack.training_examples(), cfg.mitigation, cfg.seed, attack)
    distributed.barrier()
    if train_set and not (out / "model" / "complete").exists():
        cache = Cache(cfg.cache.dir, enabled=cfg.cache.enabled)
        model, tokenizer, _, _ = open_model(cfg.model, cache, cfg.peft.get("quantization"))
        train_set = fit_training_set(cfg, train_set, tokenizer, None, None)  # as the main process dropped them
        train_and_save(cfg, model, tokenizer, train_set, out, report_to=[])
    return {}


def check_contamination(prompts: list, train_set: list, out: Path, policy: str) -> None:
    hits = find_overlaps(prompts, train_set)
    write_json(out / "contamination.json", {"n_eval_prompts": len(prompts), "hits": hits})
    if not hits:
        return
    listing = "; ".join(f"{h['eval_id']} ~ {h['train_source']} ({h['match']})" for h in hits[:5])
    message = f"{len(hits)} evaluation prompt(s) also occur in the fine-tuning set: {listing}. See contamination.json."
    if policy == "fail":
        raise DataError(message + " Remove them from the training data, or set eval.contamination=warn.")
    log.warning(message)


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


def paper_reference(cfg: DictConfig) -> dict[str, Any]:
    """{"reference": the paper's cells this run reproduces (cfg.reference ids, fts.reference)}, or {} for none."""
    cells = run_reference(cfg.get("reference"))
    return {"reference": cells} if cells else {}


def run_title(cfg: DictConfig) -> str:
    trained = f"peft={cfg.peft.method}" if cfg.model.backend == "hf" else f"backend={cfg.model.backend}"
    return f"fts: model={cfg.model.name} attack={cfg.attack.name} {trained} seed={cfg.seed}"


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
    # The number a sweeper optimizes: keyword ASR after fine-tuning (or of the baseline alone).
    side = result.get("finetuned") or result.get("baseline") or {}  # a dry run has neither
    return side.get("keyword", {}).get("asr")


if __name__ == "__main__":
    cli.guarded(main)
