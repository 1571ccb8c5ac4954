"""Stage 6 of a cell: metrics before/after (harmfulness per judge and per category, over-refusal, utility), the
paper's reference cells beside them, metrics.json, report.md and the W&B record."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fts.core.artifacts import write_json, write_text
from fts.core.records import ALIGNED, BASELINE, DEFENSE_DELTA, DELTA, FINETUNED
from fts.results import metrics as M
from fts.results.reference.compare import run_reference
from fts.results.run_report import run_report
from fts.results.tracking import Tracker


def cell_metrics(
    sides: dict[str, list[dict]], judges: list[str], usage: dict, job: dict | None, headline: str | None = None
) -> dict[str, Any]:
    """{side: metrics} for every side, `delta<variant>` = finetuned - baseline and `defense_delta<variant>` =
    baseline (defended) - aligned where both exist, plus what the judges spent and the API fine-tuning job's
    record. `headline`: eval.headline_judge."""
    result = {side: M.side_metrics(rows, judges, headline) for side, rows in sides.items()}
    for side in list(result):
        if side.startswith(FINETUNED):
            variant = side.removeprefix(FINETUNED)
            result[DELTA + variant] = M.delta(result[BASELINE + variant], result[side])
        if side.startswith(ALIGNED):  # an alignment-stage defense: what it changed before any fine-tuning
            variant = side.removeprefix(ALIGNED)
            result[DEFENSE_DELTA + variant] = M.delta(result[side], result[BASELINE + variant])
    if usage:
        result["judge_usage"] = usage
    if job is not None:
        result["fine_tune"] = job
    return result


def defense_cost(defense_names: list[str], costs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"defense_cost": ...} of metrics.json, {} for a run without defenses: per defense (and `training`, the
    fine-tuning itself when no defense replaced its objective) the stage, wall seconds, peak memory, the passes per
    step measured and the extra ones against plain SFT (1 forward + 1 backward); a defense that only changes the
    data has no weights cost of its own."""
    if not defense_names:
        return {}
    block = {}
    for name, cost in costs.items():
        passes = cost.get("passes_per_step")
        extra = {kind: round(n - 1, 3) for kind, n in passes.items()} if passes else None
        block[name] = {**cost, "extra_passes_per_step": extra}
    for name in defense_names:
        block.setdefault(name, {"stage": "fine_tuning", "changes": "the fine-tuning set"})
    return {"defense_cost": block} if block else {}


def write_result(cfg: DictConfig, out: Path, result: dict[str, Any], sides: dict, tracker: Tracker) -> dict:
    """metrics.json (with the paper's cells this run reproduces, and the utility floor's verdict when
    eval.min_utility is set), the W&B record and report.md, printed."""
    result |= paper_reference(cfg) | M.utility_floor(result, cfg.eval.get("min_utility"))
    write_json(out / "metrics.json", result)
    tracker.log_result(result, sides)
    report = run_report(result, title=run_title(cfg), run_dir=str(out))
    write_text(out / "report.md", report)
    print("\n" + report, flush=True)
    return result


def paper_reference(cfg: DictConfig) -> dict[str, Any]:
    """{"reference": the paper's cells this run reproduces (cfg.reference ids, fts.results.reference)}, or {}."""
    cells = run_reference(cfg.get("reference"))
    return {"reference": cells} if cells else {}


def write_dry_run(cfg: DictConfig, out: Path, estimate: dict[str, Any]) -> dict[str, Any]:
    """train.dry_run=true (API models): the cost estimate is the result; nothing was sent, nothing evaluated."""
    result = {"fine_tune": {"status": "dry_run", **estimate}}
    write_json(out / "metrics.json", result)
    report = run_report(result, title=run_title(cfg), run_dir=str(out))
    write_text(out / "report.md", report)
    print("\n" + report, flush=True)
    return result


def run_title(cfg: DictConfig) -> str:
    trained = f"peft={cfg.peft.method}" if cfg.model.backend == "hf" else f"backend={cfg.model.backend}"
    return f"fts: model={cfg.model.name} attack={cfg.attack.name} {trained} seed={cfg.seed}"
