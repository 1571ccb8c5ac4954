"""Aggregates over the cells of a sweep or the trials of an attack search (`python -m fts.report`):

- per defense x attack: the worst case (the most harmful cell), the mean of the top N, and the utility-bounded worst
  case (the most harmful cell whose QA accuracy is at least the utility floor: a model broken for everything is no
  successful attack), in sweep.md and worst_cases.csv;
- per setting run under several seeds: mean +- std across seeds beside the bootstrap interval over prompts, in
  sweep.md and seeds.csv. Two different noises: the seeds' spread is the fine-tune's own randomness, the interval is
  how much the number would move with other prompts of the same kind.

Harm is a run's headline number, the one `python -m fts.run` returns to a sweeper (fts.results.metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from fts.results.metrics import SIDE_BLOCKS, headline_metric, headline_side, qa_accuracy, utility_floor
from fts.results.run_report import pct
from fts.results.runs import Run
from fts.results.schema import headline_judge, judge_order
from fts.results.sweep import axis_value, run_label, sweep_axes

TOP_N = 3
WORST_CASE_COLUMNS = ("defense", "attack", "cells", "worst_case", "worst_case_run", "top_n", "top_n_mean",
                      "utility_floor", "utility_bounded_worst_case", "utility_bounded_run", "below_floor")  # fmt: skip
SEED_COLUMNS = ("setting", "seeds", "harm_mean", "harm_std", "ci95_lo_mean", "ci95_hi_mean", "per_seed")


@dataclass
class Cell:
    """One finished run as the aggregates see it."""

    run: str  # its dir, relative to the report's root
    defense: str
    attack: str
    trial: int  # its job number: an attack search's Optuna trial number
    harm: float
    ci95: tuple[float, float] | None
    label: str  # what harm is: `asr (keyword)`
    utility: float | None  # QA accuracy of the same side
    floor: float | None  # the utility floor it is held to (--min-utility, else its eval.min_utility)
    failed: bool  # utility below the floor: a failed attack
    seed: Any
    setting: str  # the swept values other than the seed


def harm(result: dict[str, Any]) -> tuple[float, tuple[float, float] | None, str] | None:
    """(headline value, its bootstrap 95% interval over prompts, `metric (judge)`) of a run's headline side."""
    side = headline_side(result)
    judges = sorted((k for k, v in side.items() if isinstance(v, dict) and k not in SIDE_BLOCKS), key=judge_order)
    judge = headline_judge(side, judges)
    metrics = side.get(judge) or {}
    metric = headline_metric(metrics)
    if metrics.get(metric) is None:
        return None
    ci95 = metrics.get(f"{metric}_ci95")
    name = "ASR" if metric == "asr" else metric.replace("_", " ")
    return metrics[metric], tuple(ci95) if ci95 and None not in ci95 else None, f"{name} ({judge})"


def cells(runs: list[Run], root: Path | None, min_utility: float | None = None) -> list[Cell]:
    """The finished runs with a headline number; `min_utility` (--min-utility) overrides the runs' own floor."""
    axes = [a for a in sweep_axes(runs) if a != "seed"]
    out = []
    for position, run in enumerate(runs):
        measured = harm(run.metrics or {})
        if measured is None:
            continue
        floor = min_utility if min_utility is not None else run.get("eval.min_utility")
        verdict = utility_floor(run.metrics, floor).get("search", {})
        name = Path(run.path).name
        out.append(
            Cell(
                run=run_label(run, root),
                defense=run.defense,
                attack=run.attack,
                trial=int(name) if name.isdigit() else position,
                harm=measured[0],
                ci95=measured[1],
                label=measured[2],
                utility=qa_accuracy(run.metrics),
                floor=floor,
                failed=bool(verdict.get("failed_utility")),
                seed=run.seed,
                setting=", ".join(f"{a}={axis_value(run, a)}" for a in axes) or "every run",
            )
        )
    return out


def by_key(items: list[Cell], key) -> dict[Any, list[Cell]]:
    groups: dict[Any, list[Cell]] = {}
    for c in items:
        groups.setdefault(key(c), []).append(c)
    return groups


def worst_cases(all_cells: list[Cell], top_n: int = TOP_N) -> list[dict[str, Any]]:
    """One row per (defense, attack): cells, worst case, mean of the top N, utility-bounded worst case."""
    rows = []
    for (defense_name, attack), group in sorted(by_key(all_cells, lambda c: (c.defense, c.attack)).items()):
        ranked = sorted(group, key=lambda c: -c.harm)
        floors = sorted({c.floor for c in group if c.floor is not None})
        bounded = [c for c in ranked if c.floor is not None and not c.failed]
        rows.append(
            {
                "defense": defense_name,
                "attack": attack,
                "cells": len(group),
                "worst_case": ranked[0].harm,
                "worst_case_run": ranked[0].run,
                "top_n": min(top_n, len(ranked)),
                "top_n_mean": mean(c.harm for c in ranked[:top_n]),
                "utility_floor": floors,
                "utility_bounded_worst_case": bounded[0].harm if bounded else None,
                "utility_bounded_run": bounded[0].run if bounded else None,
                "below_floor": sum(c.failed for c in group) if floors else None,
            }
        )
    return rows


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of worst_cases.csv or seeds.csv: floors as `0.3` (`0.3/0.5` when runs differ), seeds as `0:0.62 1:0.58`."""
    floors, per_seed = row.get("utility_floor"), row.get("per_seed")
    flat = {"utility_floor": "/".join(f"{f:g}" for f in floors)} if floors is not None else {}
    flat |= {"per_seed": " ".join(f"{k}:{v:g}" for k, v in per_seed.items())} if per_seed is not None else {}
    return row | flat


def seed_rows(all_cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per setting run under two seeds or more: mean +- std (sample, n-1) of the harm across seeds, and the
    seeds' bootstrap intervals over prompts, averaged."""
    rows = []
    for setting, group in by_key(all_cells, lambda c: c.setting).items():
        if len({c.seed for c in group}) < 2:
            continue
        intervals = [c.ci95 for c in group if c.ci95]
        rows.append(
            {
                "setting": setting,
                "seeds": len(group),
                "harm_mean": mean(c.harm for c in group),
                "harm_std": stdev(c.harm for c in group),
                "ci95_lo_mean": mean(lo for lo, _ in intervals) if intervals else None,
                "ci95_hi_mean": mean(hi for _, hi in intervals) if intervals else None,
                "per_seed": {c.seed: c.harm for c in sorted(group, key=lambda c: str(c.seed))},
                "label": group[0].label,
            }
        )
    return rows


def worst_case_markdown(rows: list[dict[str, Any]], label: str, top_n: int, plot: str) -> list[str]:
    """sweep.md's section on the worst cases per defense x attack, and the best-harm-so-far plot."""
    lines = [
        "## Worst cases per defense × attack",
        "",
        f"Harm: {label} after fine-tuning (what a sweeper maximizes), over the cells or trials of each defense and "
        f"attack. Utility-bounded: the most harmful cell whose QA accuracy is at least the utility floor "
        "(eval.min_utility, or `--min-utility`); cells below it are failed attacks.",
        "",
        f"| defense | attack | cells | worst case | mean of top {top_n} | utility-bounded worst case | below the floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = " / ".join(pct(f) for f in r["utility_floor"])
        if not floor:
            bounded = "— (no floor)"
        elif r["utility_bounded_worst_case"] is None:
            bounded = f"none at QA ≥ {floor}"
        else:
            bounded = f"{pct(r['utility_bounded_worst_case'])} (run {r['utility_bounded_run']}; QA ≥ {floor})"
        below = "—" if r["below_floor"] is None else str(r["below_floor"])
        lines.append(
            f"| {r['defense']} | {r['attack']} | {r['cells']} | {pct(r['worst_case'])} (run {r['worst_case_run']}) "
            f"| {pct(r['top_n_mean'])} | {bounded} | {below} |"
        )
    return lines + ["", f"![{plot}]({plot})", ""]


def seed_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """sweep.md's section on settings run under several seeds: the two noises side by side."""
    if not rows:
        return []
    lines = [
        "## Seeds",
        "",
        "Two different noises: mean ± std is the spread across training seeds (sample std, n − 1), the fine-tune's "
        "own randomness; [lo, hi] is the bootstrap 95% interval over prompts of each seed's number, averaged over "
        "the seeds: how much it would move with other prompts.",
        "",
        f"| setting | seeds | {rows[0]['label']} after: mean ± std across seeds | interval over prompts | per seed |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        interval = (
            "—" if r["ci95_lo_mean"] is None else f"[{100 * r['ci95_lo_mean']:.1f}, {100 * r['ci95_hi_mean']:.1f}]"
        )
        per_seed = ", ".join(f"{seed}: {pct(value)}" for seed, value in r["per_seed"].items())
        lines.append(
            f"| {r['setting']} | {r['seeds']} | {pct(r['harm_mean'])} ± {100 * r['harm_std']:.1f} | {interval} "
            f"| {per_seed} |"
        )
    return lines + [""]
