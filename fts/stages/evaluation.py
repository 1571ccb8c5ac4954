"""Evaluation = generate a response per prompt, then let every judge give its verdict on it.

The prompt sets, each row tagged with its `set`: `harmful` (the benchmark), `benign` and `xstest` (safe prompts,
for over-refusal; XSTest also has unsafe contrast prompts) are judged by every judge; `utility` (questions with
reference answers) is scored by match and `mt_bench` (two-turn questions) by the MT-Bench grader, not by the judges.

The prefilling attack (`eval.prefill_tokens` > 0, fts.data.prefill) starts each harmful prompt's response with the
first tokens of a harmful answer; the model continues it, and the recorded response (what the judges read) holds
prefix and continuation. Both sides of a cell get the same prefix (the same tokenizer cuts the same answer).
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fts.core.artifacts import read_jsonl, write_json, write_jsonl
from fts.core.cache import Cache
from fts.core.config import build
from fts.core.device import bf16_fast
from fts.core.errors import DataError
from fts.core.manifest import Manifest
from fts.core.records import FINETUNED, Prompt
from fts.data import prefill
from fts.data.contamination import find_overlaps
from fts.data.formats import load, load_fixed
from fts.data.lengths import fit_prompts, min_tokens
from fts.data.prompts import first_per_category, user
from fts.generate import openai as openai_engine
from fts.generate.hf import REVISION, generate, in_dtype, inference_dtype
from fts.generate.vllm import VllmEngine
from fts.judges import Judge, build_judges
from fts.models.chat import prefilled
from fts.stages import prompt_format
from fts.stages.attacks import Attack
from fts.utility import mt_bench, qa
from fts.utility.coherence import CoherenceScorer

log = logging.getLogger(__name__)
MT_DECODING = ("max_new_tokens", "temperature_by_category", "default_temperature")


def evaluation_prompts(eval_cfg: DictConfig) -> list[Prompt]:
    """Harmful benchmark plus benign prompts (bare requests), each tagged with its `set`."""
    benchmark = load(eval_cfg.benchmark_format, eval_cfg.benchmark, "eval.benchmark")
    harmful = first_per_category(benchmark, eval_cfg.max_per_category)
    prompts = [{**p, "set": "harmful"} for p in harmful]
    if eval_cfg.benign is not None:
        benign = load_fixed("eval.benign", eval_cfg.benign)[: eval_cfg.max_benign]
        prompts += [{**p, "set": "benign"} for p in benign]
    if eval_cfg.get("xstest") is not None:
        xstest = load_fixed("eval.xstest", eval_cfg.xstest)[: eval_cfg.get("max_xstest")]
        prompts += [{**p, "set": "xstest"} for p in xstest]
    if eval_cfg.get("utility") is not None:
        utility = load_fixed("eval.utility", eval_cfg.utility)[: eval_cfg.get("max_utility")]
        prompts += [{**p, "set": "utility"} for p in utility]
    if eval_cfg.get("mt_bench") is not None:
        questions = load_fixed("eval.mt_bench.questions", eval_cfg.mt_bench.questions)
        prompts += [
            {**q, "prompt": q["turns"][0], "messages": [user(q["turns"][0])], "set": "mt_bench"}
            for q in questions[: eval_cfg.mt_bench.max_questions]
        ]
    if eval_cfg.get("prefill_tokens"):  # the prefilling attack: each harmful prompt's answer, or an error naming it
        prompts = prefill.attach(prompts, load_fixed("eval.prefill", eval_cfg.prefill), str(eval_cfg.prefill))
    return prompts


JUDGED_SETS = ("harmful", "benign", "xstest")


def prepare(
    cfg: DictConfig,
    attack: Attack,
    train_set: list,
    out: Path,
    cache: Cache,
    manifest: Manifest,
    vllm=None,
    n_models: int = 2,
) -> tuple[dict[str, list[Prompt]], "Evaluator"]:
    """Stage 2: the evaluation prompts in the attack's format (its system prompt and user template, as in
    training), in one or more variants (the backdoor adds triggered prompts), none of them in the training set; the
    judges, with their keys and budgets checked before any model loads for the `n_models` models evaluated
    (aligned, defended, fine-tuned)."""
    prompts = evaluation_prompts(cfg.eval)
    max_tokens = cfg.model.get("max_length")
    if max_tokens is not None:  # prompts that cannot fit under any tokenizer, before any model loads
        too_long = cfg.eval.get("too_long", "fail")
        prompts, n_long = fit_prompts(prompts, max_tokens, too_long, min_tokens, "or more tokens by their length")
        manifest.record(too_long_eval_prompts=n_long)
    # The paper's rule: evaluation prompts in the fine-tuning set's format; manifest.json records the format used.
    manifest.record(prompt_format=prompt_format.check(attack, train_set, cfg.eval.get("format_mismatch", "warn")))
    check_contamination(prompts, train_set, out, cfg.eval.contamination)
    eval_sets = attack.eval_sets(prompts)
    evaluator = Evaluator(out, cfg.eval, build_judges(cfg.judge), cache, vllm=vllm)
    evaluator.preflight(prompts, n_sides=len(eval_sets) * n_models)
    return eval_sets, evaluator


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


def evaluate(evaluator: "Evaluator", backend, eval_sets: dict[str, list[Prompt]], side: str) -> dict[str, list]:
    """Generations and verdicts of one side (`baseline`: the model the user fine-tunes, `aligned`: the aligned model
    before an alignment-stage defense, both cached by what decides their answers, so a sweep of N cells evaluates
    each once; `finetuned`) for every variant of the evaluation set."""
    trained = side == FINETUNED
    key = None if trained else backend.baseline_key()
    return {
        side + variant: evaluator.side(side + variant, backend.source(trained), backend.tokenizer, prompts, key)
        for variant, prompts in eval_sets.items()
    }


@dataclass
class Evaluator:
    """Everything one evaluation needs besides the model: the run dir, decoding settings, judges and cache."""

    run_dir: Path
    eval_cfg: DictConfig
    judges: dict[str, Judge]
    cache: Cache
    vllm: VllmEngine | None = None  # eval.engine=vllm: the engine, kept across sides (fts.generate.vllm)

    def __post_init__(self) -> None:
        mt = self.eval_cfg.get("mt_bench")
        self.grader = build(mt.grader, name="mt_bench", config_key="eval.mt_bench.grader") if mt is not None else None
        settings = self.eval_cfg.get("coherence")
        self.coherence = (
            CoherenceScorer(cache=self.cache, **settings) if settings is not None and settings.scorer else None
        )

    def preflight(self, prompts: list[Prompt], n_sides: int) -> None:
        """API judges and the MT-Bench grader check key, endpoint and budget before any model loads."""
        judged = sum(p["set"] in JUDGED_SETS for p in prompts)
        for judge in self.judges.values():
            judge.preflight(judged * n_sides)
        if self.grader is not None:
            self.grader.preflight(sum(len(p["turns"]) for p in prompts if p["set"] == "mt_bench") * n_sides)

    def close(self) -> None:
        """Hand back what the engine holds (vLLM's GPU memory) once every side is generated."""
        if self.vllm is not None:
            self.vllm.close()

    def usage(self) -> dict[str, dict]:
        graders = {"mt_bench_grader": self.grader} if self.grader is not None else {}
        return {name: j.usage() for name, j in (self.judges | graders).items() if j.usage()}

    def decoding(self) -> dict[str, Any]:
        cfg = self.eval_cfg
        decoding = {"engine": cfg.engine, "max_new_tokens": cfg.max_new_tokens, "greedy": True}
        if cfg.get("prefill_tokens"):  # the answers themselves are in the prompts (prefill_answer)
            decoding["prefill_tokens"] = cfg.prefill_tokens
        if cfg.engine == "hf":  # auto means bfloat16 on hardware that has it: the hardware is part of the output
            decoding["dtype"] = cfg.dtype if cfg.dtype != "auto" else f"auto (native bf16: {bf16_fast()})"
            decoding["revision"] = REVISION
        if cfg.get("mt_bench") is not None:  # sampled at per-category temperatures, up to its own length
            mt = cfg.mt_bench
            decoding["mt_bench"] = {
                k: OmegaConf.to_container(mt[k]) if k.endswith("category") else mt[k] for k in MT_DECODING
            }
        return decoding

    def side(self, name: str, model, tokenizer, prompts: list[Prompt], cache_key: dict | None) -> list[dict]:
        """Generations + verdicts of one side, written to generations/<name>.jsonl; an existing file is reused
        (resume). With `cache_key` (what determines the output besides prompts and decoding: the model identity)
        the generations come from the content-addressed cache when present."""
        path = self.run_dir / "generations" / f"{name}.jsonl"
        if path.exists():
            log.info("resuming: %s exists", path)
            return read_jsonl(path)
        if cache_key is None:
            rows = self.generate(model, tokenizer, prompts, name)
        else:
            material = {**cache_key, "prompts": prompts, "decoding": self.decoding()}
            fill = lambda tmp: write_jsonl(tmp / "generations.jsonl", self.generate(model, tokenizer, prompts, name))  # noqa: E731
            rows = read_jsonl(self.cache.build("generations", material, fill) / "generations.jsonl")
        rows = self.judge(rows)
        write_jsonl(path, rows)
        return rows

    def generate(self, model, tokenizer, prompts: list[Prompt], desc: str) -> list[dict]:
        started = time.perf_counter()
        cfg = self.eval_cfg
        single = [p for p in prompts if p["set"] != "mt_bench"]
        rows = self.engine(model, tokenizer, single, cfg.max_new_tokens, desc)
        rows += self.mt_bench_answers(model, tokenizer, [p for p in prompts if p["set"] == "mt_bench"], desc)
        log.info("%s: %d prompts in %.1f s", desc, len(rows), time.perf_counter() - started)
        return rows

    def engine(self, model, tokenizer, prompts: list[Prompt], max_new_tokens: int, desc: str, temperature=0.0):
        """One response per prompt from the configured engine (`eval.engine`, which follows `model.backend`); a
        prompt with a prefill answer starts its response with the answer's first eval.prefill_tokens tokens."""
        if self.eval_cfg.engine == "openai":  # an API model (fts.models.openai): chat completions, no tokenizer
            return openai_engine.generate(model, prompts, max_new_tokens, desc=desc, temperature=temperature)
        prompts = [prefilled(tokenizer, p, self.eval_cfg.get("prefill_tokens") or 0) for p in prompts]
        if self.eval_cfg.engine == "vllm":  # `model` is a vllm.Served handle on weights on disk
            rows = self.vllm.generate(model, tokenizer, prompts, max_new_tokens, desc=desc, temperature=temperature)
        else:
            batch_size = self.eval_cfg.batch_size
            with in_dtype(model, inference_dtype(self.eval_cfg.dtype, model.dtype)) as model_in_dtype:
                rows = generate(
                    model_in_dtype, tokenizer, prompts, max_new_tokens, batch_size, desc=desc, temperature=temperature
                )
        # a row keeps the prefix's text (`prefill`), not the whole harmful answer nor its token ids
        return [{k: v for k, v in r.items() if k not in ("prefill_answer", "prefill_ids")} for r in rows]

    def mt_bench_answers(self, model, tokenizer, questions: list[Prompt], desc: str) -> list[dict]:
        """Both turns of every question: turn 1, then turn 2 after the model's own first answer, each batch at
        its category's temperature."""
        if not questions:
            return []
        mt = self.eval_cfg.mt_bench
        by_temperature: dict[float, list[Prompt]] = {}
        for q in questions:
            t = mt_bench.temperature(q["category"], mt.temperature_by_category, mt.default_temperature)
            by_temperature.setdefault(t, []).append(q)
        answers: dict[str, list[str]] = {q["id"]: [] for q in questions}
        for t, group in by_temperature.items():
            turn = group
            for k in range(max(len(q["turns"]) for q in group)):
                if k > 0:
                    turn = [q for q in group if len(q["turns"]) > k]
                    turn = [{**q, "messages": self.next_turn(q, answers[q["id"]], k)} for q in turn]
                turn_desc = f"{desc} mt-bench turn {k + 1} (T={t:g})"
                for row in self.engine(model, tokenizer, turn, mt.max_new_tokens, turn_desc, temperature=t):
                    answers[row["id"]].append(row["response"])
        return [{**q, "answers": answers[q["id"]], "response": answers[q["id"]][-1]} for q in questions]

    @staticmethod
    def next_turn(question: Prompt, answers: list[str], k: int) -> list:
        messages = question["messages"]
        for j in range(1, k + 1):
            messages = mt_bench.second_turn(messages, question["turns"][j - 1], question["turns"][j], answers[j - 1])
        return messages

    def judge(self, rows: list[dict]) -> list[dict]:
        """Verdicts of every judge on the judged sets; match scores on utility questions; MT-Bench grades."""
        judged = [r for r in rows if r["set"] in JUDGED_SETS]
        for name, judge in self.judges.items():
            for row, verdict in zip(judged, judge.judge(judged), strict=True):
                row.setdefault("verdicts", {})[name] = verdict
        for row in rows:
            if row["set"] == "utility":
                row["utility"] = qa.score(row["response"], row["references"], row["case_sensitive"])
        graded = [r for r in rows if r["set"] == "mt_bench"]
        if graded:
            for row, grades in zip(graded, mt_bench.grade(self.grader, graded), strict=True):
                row["grades"] = grades
        if self.coherence is not None:  # a second look at the harmful answers, beyond the judges' verdicts
            harmful = [r for r in rows if r["set"] == "harmful"]
            for row, record in zip(harmful, self.coherence.score(harmful), strict=True):
                row["coherence"] = record
        return rows
