"""Open-weight models under the defenses that change weights (fts.train.defenses): the defended checkpoint an
alignment-stage defense builds (once, cached by content hash: every attack cell of a sweep fine-tunes the same
one), and the repair a post-fine-tuning defense makes to the fine-tuned model (saved over the run dir's model/, so
that a resumed run evaluates what was repaired). Each records its cost: wall time, peak memory, passes per step."""

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import transformers
from omegaconf import DictConfig
from peft import PeftModel

from fts.core.artifacts import write_json
from fts.core.cache import Cache
from fts.core.device import PeakMemory, release_memory
from fts.models import load

COST = "cost.json"
REPAIR = "repair.json"  # in model/: the saved weights are the repaired ones


def measured(stage: str, work: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """(what `work()` returns, its cost: stage, wall seconds, peak memory)."""
    with PeakMemory() as peak:
        started = time.perf_counter()
        result = work()
        wall = time.perf_counter() - started
    return result, {"stage": stage, "wall_s": round(wall, 1), "peak_memory_gib": peak.gib, "memory": peak.device}


def defended_checkpoint(
    defense: Any, checkpoint: str, identity: dict[str, Any], model_cfg: DictConfig, cache: Cache
) -> tuple[str, dict[str, Any]]:
    """(the directory of `checkpoint` hardened by an alignment-stage `defense`, its cost). Built on a cache miss
    from a full-precision load of `checkpoint`; a hit costs nothing and reports the cost of the build."""
    material = {
        "model": identity,
        "defense": defense.material(),
        "versions": {"transformers": transformers.__version__, "fts_defended": 1},
    }
    hit = cache.get("models/defended", material) is not None

    def fill(tmp: Path) -> None:
        print(f"fts: hardening the aligned model with mitigation={defense.name} (cached in {cache.root})", flush=True)

        def harden() -> dict[str, float]:
            model, tokenizer = load(checkpoint, model_cfg)
            hardened, passes = defense.harden(model, tokenizer, tmp / "trainer")
            hardened.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            return passes

        passes, cost = measured("alignment", harden)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        write_json(tmp / COST, {**cost, "passes_per_step": passes})
        release_memory()

    path = cache.build("models/defended", material, fill)
    return str(path), {**json.loads((path / COST).read_text()), "cached": hit, "checkpoint": path.name}


def repaired(defenses: list, trained: Any, model_dir: Path, context: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Apply the post-fine-tuning `defenses` to `trained` in place, in order, and save the result over `model_dir`;
    {name: cost and what the repair did}. A model/ already repaired (a resumed run) is loaded as it is."""
    record = model_dir / REPAIR
    if record.exists():
        return json.loads(record.read_text())
    costs = {}
    for defense in defenses:
        stats, cost = measured("post_fine_tuning", lambda d=defense: d.repair(trained, **context))
        costs[defense.name] = {**cost, "passes_per_step": None, "repair": stats}
    save_repaired(trained, model_dir, {REPAIR: costs})
    return costs


def save_repaired(model: Any, model_dir: Path, records: dict[str, Any]) -> None:
    """The repaired model saved over `model_dir` (its adapter, or its full weights when model_dir holds them), with
    `records` ({file name: JSON}) beside it, atomically. A model_dir without weights (save_model=false under full
    fine-tuning) gets the records only: a resumed run trains and repairs again."""
    tmp = model_dir.with_name(f".{model_dir.name}.repair.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if model_dir.exists():
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns("merged"))  # folded before the repair
    else:
        tmp.mkdir(parents=True)
    if isinstance(model, PeftModel) or (model_dir / "config.json").exists():
        model.save_pretrained(tmp)
    for name, value in records.items():
        write_json(tmp / name, value)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
