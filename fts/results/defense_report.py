"""The defense part of `report.md`: the model at each point of the pipeline (aligned -> defended -> fine-tuned, when
an alignment-stage defense ran) and what each defense cost (stage, wall time, peak memory, forward/backward passes
per step against plain SFT's one each)."""

from typing import Any

from fts.core.records import ALIGNED, BASELINE, FINETUNED
from fts.results.metrics import SIDE_BLOCKS, headline_metric
from fts.results.schema import headline_judge


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def defense_lines(metrics: dict[str, Any]) -> list[str]:
    lines = points_lines(metrics) if ALIGNED in metrics else []
    costs = metrics.get("defense_cost") or {}
    if costs:
        lines += ["", "Defense cost:", "", "| defense | stage | wall | peak memory | passes per step (fwd/bwd) |"]
        lines.append("|---|---|---|---|---|")
        lines += [cost_row(name, cost) for name, cost in costs.items()]
    return ["## Defenses", "", *lines] if lines else []


def points_lines(metrics: dict[str, Any]) -> list[str]:
    """Headline harm, over-refusal and utility of the aligned, defended and fine-tuned model."""
    points = [(ALIGNED, "aligned"), (BASELINE, "defended (baseline)"), (FINETUNED, "after fine-tuning")]
    points = [(side, label) for side, label in points if side in metrics]
    judges = [k for k, v in metrics[BASELINE].items() if isinstance(v, dict) and k not in SIDE_BLOCKS]
    judge = headline_judge(metrics[BASELINE], judges)
    metric = headline_metric(metrics[BASELINE].get(judge, {}))
    rows = [
        (f"{judge}: {metric}", lambda s: s.get(judge, {}).get(metric)),
        ("over-refusal", lambda s: s.get("over_refusal_rate")),
        ("utility: QA accuracy", lambda s: s.get("utility", {}).get("qa", {}).get("accuracy")),
    ]
    lines = ["| | " + " | ".join(label for _, label in points) + " |", "|---" * (len(points) + 1) + "|"]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(pct(get(metrics[side])) for side, _ in points) + " |")
    return lines


def cost_row(name: str, cost: dict[str, Any]) -> str:
    if "wall_s" not in cost:  # a defense that changes the data only
        return f"| {name} | {cost.get('stage', '—')} | — | — | changes {cost.get('changes', 'the data')} |"
    passes = cost.get("passes_per_step")
    extra = cost.get("extra_passes_per_step")
    shown = f"{passes['forward']:g} / {passes['backward']:g}" if passes else "—"
    if extra:
        shown += f" (+{extra['forward']:g} / +{extra['backward']:g})"
    cached = " (cached; the build's)" if cost.get("cached") else ""
    memory = f"{cost['peak_memory_gib']:.2f} GiB {cost.get('memory', '')}".strip()
    return f"| {name} | {cost['stage']} | {cost['wall_s']:.1f} s{cached} | {memory} | {shown} |"
