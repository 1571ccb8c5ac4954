"""The table of a sweep: one row per run (fts.results.runs loads them), the config axes then every number of its
metrics.json. The config axes are the overrides (`.hydra/overrides.yaml`) whose values differ between runs.
`fts.report` turns this into sweep.csv, sweep.md and plots (`python -m fts.report <multirun dir>`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from statistics import mean
from typing import Any, TextIO

from fts.core.records import BASELINE, DELTA, FINETUNED
from fts.results.metrics import SIDE_BLOCKS
from fts.results.reference.compare import paper_columns
from fts.results.runs import Run
from fts.results.schema import HEADLINE_JUDGE, SIDES, VARIANTS, flatten, headline_judge, judge_order

# Headline numbers per judge (CSV columns), in this order; CI bounds follow their metric.
JUDGE_METRICS = ("asr", "harmfulness_rate", "harmfulness_score", "strongreject_score", "unscored")
NOT_JUDGES = set(SIDE_BLOCKS)  # dict-valued keys of a side that are not a judge's metrics
PLOTS = ("asr_vs_mix_ratio.png", "per_category.png", "harm_vs_over_refusal.png", "harm_vs_utility.png")
# Utility columns of sweep.csv: column -> (path in a side of metrics.json, path in its delta)
UTILITY_COLUMNS = {
    "utility/qa_accuracy": (("utility", "qa", "accuracy"), ("utility", "qa_accuracy")),
    "utility/mt_bench_score": (("utility", "mt_bench", "score"), ("utility", "mt_bench_score")),
}

# The fine-tuning job of an API model (metrics.json "fine_tune"), as sweep.csv columns fine_tune/<key>
FINE_TUNE_COLUMNS = ("status", "job_id", "fine_tuned_model", "trained_tokens", "estimated_usd", "actual_usd", "error")

# ---------------------------------------------------------------------------------------------------------------
# The table: one row per run, config axes then metrics.


def sweep_axes(runs: list[Run]) -> list[str]:
    """Override keys whose values differ between runs (all overrides when there is a single run)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    if len(runs) == 1:
        return keys
    return [k for k in keys if len({axis_value(r, k) for r in runs}) > 1]


def axis_value(run: Run, key: str) -> str:
    if key in run.overrides:
        return run.overrides[key]
    value = run.get(key)
    if isinstance(value, dict):  # a config group left at its default: its name
        value = value.get("name")
    return "" if value is None else str(value)


def metric_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a run as flat `side/judge/metric` columns (see JUDGE_METRICS)."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        for side in SIDES:
            values = metrics.get(side + variant)
            if not values:
                continue
            flat = flatten({k: v for k, v in values.items() if k not in NOT_JUDGES}, side + variant)
            judges = sorted(
                (k for k, v in values.items() if isinstance(v, dict) and k not in NOT_JUDGES), key=judge_order
            )
            for judge in judges:
                for m in JUDGE_METRICS:
                    for suffix in ("", "_ci95_lo", "_ci95_hi"):
                        key = f"{side}{variant}/{judge}/{m}{suffix}"
                        if key in flat:
                            out[key] = flat[key]
            for key in ("over_refusal_rate", "over_refusal_ci95_lo", "over_refusal_ci95_hi", "over_refusal_unscored"):
                if f"{side}{variant}/{key}" in flat:
                    out[f"{side}{variant}/{key}"] = flat[f"{side}{variant}/{key}"]
            for column, (path, delta_path) in utility_columns(metrics, variant).items():
                value = dig(values, delta_path if side == DELTA else path)
                if value is not None:
                    out[f"{side}{variant}/{column}"] = value
    job = metrics.get("fine_tune") or {}  # API models: the fine-tuning job (fts.train.openai)
    out |= {f"fine_tune/{k}": job[k] for k in FINE_TUNE_COLUMNS if job.get(k) is not None}
    out |= {f"search/{k}": v for k, v in (metrics.get("search") or {}).items()}  # the utility floor's verdict
    return out


def utility_columns(metrics: dict[str, Any], variant: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """UTILITY_COLUMNS and the XSTest over-refusal column of the run's over-refusal judge (its benign one)."""
    judge = (metrics.get(FINETUNED + variant) or metrics.get(BASELINE + variant) or {}).get("over_refusal_judge")
    judge = judge or HEADLINE_JUDGE
    xstest = ("over_refusal", "xstest_safe", judge)
    return UTILITY_COLUMNS | {f"over_refusal/xstest_safe/{judge}": ((*xstest, "rate"), xstest)}


def dig(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def table(runs: list[Run], root: Path | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of sweep.csv."""
    axes = sweep_axes(runs)
    rows = []
    for r in runs:
        row = {"run": run_label(r, root), "status": "finished" if r.metrics else "unfinished"}
        row |= {k: axis_value(r, k) for k in axes}
        row |= metric_columns(r.metrics or {}) | paper_columns(r.metrics or {})  # and the paper's, where it has them
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, rows


def run_label(run: Run, root: Path | None) -> str:
    return os.path.relpath(run.path, root) if root and not run.path.startswith("wandb:") else run.path


def write_csv(stream: TextIO, columns: list[str], rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(stream, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


# ---------------------------------------------------------------------------------------------------------------
# Aggregation for the plots.


def main_judge(side: dict[str, Any]) -> str | None:
    """The judge whose ASR the plots show: the headline judge (eval.headline_judge; keyword, the paper's ASR, in
    metrics.json that does not record one) when it has an ASR, else the first with one."""
    judges = sorted((k for k, v in side.items() if isinstance(v, dict) and "asr" in v), key=judge_order)
    return headline_judge(side, judges) if judges else None


def asr(side: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(ASR, CI low, CI high) of a side (or of a per-category entry) by its main judge."""
    judge = main_judge(side or {})
    if judge is None:
        return None
    m = side[judge]
    lo, hi = m.get("asr_ci95") or (m["asr"], m["asr"])
    return m["asr"], lo, hi


def mean_asr(sides: list[dict[str, Any] | None]) -> tuple[float, float, float] | None:
    """Mean ASR over runs (seeds), with the runs' interval bounds averaged."""
    values = [v for v in map(asr, sides) if v is not None]
    return tuple(mean(v[i] for v in values) for i in range(3)) if values else None
