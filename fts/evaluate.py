"""Evaluation = generate a response per prompt, then let every judge give its verdict on it."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fts.artifacts import read_jsonl, write_jsonl
from fts.cache import Cache
from fts.data import first_per_category, load_prompts
from fts.data.formats import load_by_format
from fts.generate import openai as openai_engine
from fts.generate.hf import generate
from fts.judges import Judge
from fts.records import Prompt

log = logging.getLogger(__name__)


def evaluation_prompts(eval_cfg: DictConfig) -> list[Prompt]:
    """Harmful benchmark plus benign prompts (bare requests), each tagged with its `set`."""
    benchmark = load_by_format(eval_cfg.benchmark_format, eval_cfg.benchmark, "eval.benchmark")
    harmful = first_per_category(benchmark, eval_cfg.max_per_category)
    prompts = [{**p, "set": "harmful"} for p in harmful]
    if eval_cfg.benign is not None:
        benign = load_prompts(eval_cfg.benign, "eval.benign")[: eval_cfg.max_benign]
        prompts += [{**p, "set": "benign"} for p in benign]
    return prompts


@dataclass
class Evaluator:
    """Everything one evaluation needs besides the model: the run dir, decoding settings, judges and cache."""

    run_dir: Path
    eval_cfg: DictConfig
    judges: dict[str, Judge]
    cache: Cache

    def decoding(self) -> dict[str, Any]:
        return {"engine": self.eval_cfg.engine, "max_new_tokens": self.eval_cfg.max_new_tokens, "greedy": True}

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
        if cfg.engine == "openai":  # an API model (fts.models.openai): chat completions, no tokenizer here
            rows = openai_engine.generate(model, prompts, cfg.max_new_tokens, desc=desc)
        else:
            rows = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size, desc=desc)
        log.info("%s: %d prompts in %.1f s", desc, len(rows), time.perf_counter() - started)
        return rows

    def judge(self, rows: list[dict]) -> list[dict]:
        for name, judge in self.judges.items():
            for row, verdict in zip(rows, judge.judge(rows)):
                row.setdefault("verdicts", {})[name] = verdict
        return rows
