"""The sweep plots of `python -m fts.report` (and the per-category chart W&B gets): ASR vs. safety-mix ratio, ASR per
harm category before/after, and harmfulness against over-refusal and against utility. Matplotlib `Figure`s without
pyplot (no global state; PNG through Agg).

Every cell of a sweep stays visible: cells that coincide (same numbers) are spread around their value and labelled
once, 0% bars get a marker and a "0%" text, and fine-tuned markers are drawn above the aligned model's.
"""

import math
from collections import defaultdict
from statistics import mean
from typing import Any, NamedTuple

from fts.core.records import BASELINE, FINETUNED
from fts.results.runs import Run, grouped
from fts.results.sweep import PLOTS, asr, main_judge, mean_asr

PLOT_TITLE_NOTE = "bars: bootstrap 95% CI over prompts, averaged over seeds"
BEFORE_Z, AFTER_Z, LABEL_Z = 3, 4, 5  # fine-tuned markers above the aligned model's star, labels above both
STAR = dict(marker="*", ms=15, mec="black", zorder=BEFORE_Z)  # the aligned model (before) in the trade-off plots
DOT = dict(marker="o", ms=7, mec="white", mew=1, zorder=AFTER_Z)  # fine-tuned: the white rim sets it off a star


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, Agg when saved to PNG

    return Figure(figsize=(width, height), layout="constrained")


def attack_color(i: int):
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


def no_data(fig, message: str):
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return fig


def y_percent(values) -> tuple[list[float], list[list[float]]]:
    """ASR triples -> y values and error-bar lengths, in percent."""
    ys = [100 * v[0] for v in values]
    return ys, [[100 * (v[0] - v[1]) for v in values], [100 * (v[2] - v[0]) for v in values]]


def asr_vs_mix_ratio_figure(runs: list[Run]):
    """Fine-tuned ASR against the safety-mix ratio, one line per attack (dashed: the aligned model before)."""
    fig = new_figure(7.5, 4.8)
    done = [r for r in runs if r.metrics and FINETUNED in r.metrics]
    if not done:
        return no_data(fig, "no finished fine-tuning runs yet")
    ax = fig.add_subplot()
    by_attack = grouped(done, lambda r: r.attack)
    ratios = {r.ratio for r in done}
    dodge = 0.012 * ((max(ratios) - min(ratios)) or 1)  # side by side, so that overlapping intervals stay readable
    befores: dict[float, list] = defaultdict(list)  # the aligned model's lines by height: equal ones interleave
    for i, (attack, attack_runs) in enumerate(by_attack.items()):
        by_ratio = {
            x: mean_asr([r.metrics[FINETUNED] for r in rs])
            for x, rs in grouped(attack_runs, lambda r: r.ratio).items()
        }
        by_ratio = {x: v for x, v in by_ratio.items() if v}
        ys, yerr = y_percent(list(by_ratio.values()))
        xs = [x + dodge * (i - (len(by_attack) - 1) / 2) for x in by_ratio]
        label = f"{attack}: fine-tuned"
        ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=4, color=attack_color(i), label=label, zorder=AFTER_Z)
        before = mean_asr([r.metrics[BASELINE] for r in attack_runs])
        if before:
            line = ax.axhline(100 * before[0], color=attack_color(i), lw=1.2, label=f"{attack}: aligned (before)")
            befores[round(100 * before[0], 1)].append(line)
    for lines in befores.values():
        for k, line in enumerate(lines):  # dashes of n equal lines take turns: each color shows every n-th dash
            line.set_linestyle((4 * k, (4, 4 * len(lines) - 4)) if len(lines) > 1 else "--")
    judge = main_judge(done[0].metrics[FINETUNED])
    ax.set(
        xlabel="safety mix ratio (mitigation.safety_mix.ratio: share of safety examples in the fine-tuning set)",
        ylabel=f"ASR, {judge} judge (%)",
        ylim=(-3, 103),
    )
    ax.set_title(f"Attack success after fine-tuning vs. safety mix\n(mean over seeds; {PLOT_TITLE_NOTE})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def per_category_figure(runs: list[Run]):
    """Before/after ASR per harm category: one panel per attack, one bar per mix ratio (mean over seeds)."""
    done = [r for r in runs if r.metrics]
    by_attack = grouped(done, lambda r: r.attack)
    categories = list(dict.fromkeys(c for r in done for c in r.metrics[BASELINE].get("per_category", {})))
    ncols = min(len(by_attack), 3) or 1
    nrows = -(-len(by_attack) // ncols) or 1
    fig = new_figure(5.2 * ncols + 1.5, (0.55 * len(categories) + 1.2) * nrows + 0.8)
    if not categories:
        return no_data(fig, "no finished runs with per-category metrics yet")
    colors = ratio_colors(sorted({r.ratio for r in done if FINETUNED in r.metrics}))
    legend = {}
    for panel, (attack, attack_runs) in enumerate(by_attack.items()):
        ax = fig.add_subplot(nrows, ncols, panel + 1)
        series = [("aligned (before)", [r.metrics[BASELINE] for r in attack_runs], "0.6")]
        for ratio, rs in grouped([r for r in attack_runs if FINETUNED in r.metrics], lambda r: r.ratio).items():
            label = f"fine-tuned, mix ratio {ratio:g}" if len(colors) > 1 or ratio else "fine-tuned"
            series.append((label, [r.metrics[FINETUNED] for r in rs], colors[ratio]))
        height = 0.8 / len(series)
        for k, (label, sides, color) in enumerate(series):
            values = [mean_asr([s.get("per_category", {}).get(c) for s in sides]) for c in categories]
            ys = [i - 0.4 + height * (k + 0.5) for i in range(len(categories))]
            legend[label] = ax.barh(ys, [100 * v[0] if v else 0 for v in values], height=height, color=color)
            mark_empty_bars(ax, ys, values, color)
        ax.set_yticks(range(len(categories)), labels=[c.replace("_", " ") for c in categories], fontsize=8)
        ax.invert_yaxis()
        ax.set(xlim=(0, 100), xlabel="ASR (%)")
        seeds = len({r.seed for r in attack_runs})
        title = f"attack: {attack}" if attack else "ASR per category"
        ax.set_title(title + (f" (mean over seeds, {len(attack_runs)} runs)" if seeds > 1 else ""), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    judge = main_judge(done[0].metrics[BASELINE])
    fig.suptitle(f"ASR per harm category before and after fine-tuning ({judge} judge)", fontsize=11)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(len(legend), 4), fontsize=8)
    return fig


def mark_empty_bars(ax, ys: list[float], values: list, color) -> None:
    """A bar under 0.5% has (next to) no width: a marker in its color on the axis and its value as text keep the
    cell visible, so that a panel of zeros does not look empty ("n/a": no run measured the category)."""
    for y, v in zip(ys, values, strict=True):
        if v is not None and 100 * v[0] >= 0.5:
            continue
        if v is not None:
            ax.plot(0, y, marker="D", ms=4, color=color, mec="black", mew=0.6, clip_on=False, zorder=AFTER_Z)
        text = "n/a" if v is None else f"{100 * v[0]:.2g}%"
        ax.annotate(text, (0, y), xytext=(5, 0), textcoords="offset points", va="center", fontsize=6.5, color="0.2")


def ratio_colors(ratios: list[float]) -> dict[float, Any]:
    """Dark red for the unmitigated attack, lighter with more safety data."""
    from matplotlib import colormaps

    return {x: colormaps["Reds"](0.9 - 0.5 * k / max(len(ratios) - 1, 1)) for k, x in enumerate(ratios)}


def harm_vs_over_refusal_figure(runs: list[Run]):
    """ASR against over-refusal: the aligned model (star) and each fine-tuned setting (dots, by mix ratio)."""
    title = "Harmfulness vs. over-refusal (mean over seeds; lower left is better)"
    return trade_off_figure(runs, over_refusal_pct, "over-refusal: benign prompts refused (%)", title)


def harm_vs_utility_figure(runs: list[Run]):
    """ASR against utility (built-in QA accuracy): what a fine-tune or a mitigation costs in helpfulness."""
    title = "Harmfulness vs. utility (mean over seeds; lower right is better)"
    return trade_off_figure(runs, qa_accuracy_pct, "utility: built-in questions answered correctly (%)", title)


def over_refusal_pct(side: dict[str, Any]) -> float | None:
    value = side.get("over_refusal_rate")
    return None if value is None else 100 * value


def qa_accuracy_pct(side: dict[str, Any]) -> float | None:
    value = side.get("utility", {}).get("qa", {}).get("accuracy")
    return None if value is None else 100 * value


class Point(NamedTuple):
    """A marker of the trade-off plots: the aligned model of an attack (ratio None) or one fine-tuned setting."""

    color: int
    attack: str
    ratio: float | None
    xy: tuple[float, float]


def trade_off_figure(runs: list[Run], x_of, xlabel: str, title: str):
    """ASR (y) against a helpfulness measure (x): the aligned model (star) and each fine-tuned setting (dots, by
    mix ratio), one color per attack."""
    fig = new_figure(7.5, 5.2)
    done = [r for r in runs if r.metrics and x_of(r.metrics[BASELINE]) is not None]
    if not done:
        return no_data(fig, f"no finished runs with {xlabel.split(':')[0]} yet")
    ax = fig.add_subplot()
    points = []
    for i, (attack, attack_runs) in enumerate(grouped(done, lambda r: r.attack).items()):
        points.append(Point(i, attack, None, trade_off([r.metrics[BASELINE] for r in attack_runs], x_of)))
        finetuned = grouped([r for r in attack_runs if FINETUNED in r.metrics], lambda r: r.ratio)
        points += [
            Point(i, attack, x, trade_off([r.metrics[FINETUNED] for r in rs], x_of)) for x, rs in finetuned.items()
        ]
    points = [p for p in points if p.xy]
    for i in sorted({p.color for p in points}):  # the line through an attack's fine-tuned settings, by ratio
        line = [p.xy for p in points if p.color == i and p.ratio is not None]
        ax.plot([x for x, _ in line], [y for _, y in line], "-", color=attack_color(i), lw=1.2, alpha=0.6)
    xmax = max(p.xy[0] for p in points)
    xlim = (-3, xmax + 0.06 * (xmax + 3))  # room for the markers spread around a point at the right edge
    for group in coinciding(points, (0.03 * (xlim[1] - xlim[0]), 0.03 * 106)):
        draw_group(ax, group, xlim)
    judge = main_judge(done[0].metrics[BASELINE])
    ax.set(xlabel=xlabel, ylabel=f"ASR: harmful prompts answered, {judge} judge (%)")
    ax.set_xlim(*xlim)
    ax.set_ylim(-3, 103)
    ax.set_title(title + "\n(equal settings are spread around their value and labelled together)", fontsize=10)
    ax.grid(alpha=0.3)
    handles = dict(sorted(dict(zip(*ax.get_legend_handles_labels()[::-1], strict=True)).items()))  # one per label
    ax.legend(handles.values(), handles.keys(), fontsize=8)
    separate_labels(fig, ax)
    return fig


def separate_labels(fig, ax) -> None:
    """Groups that are near but not coinciding (66.7% and 70% over-refusal at 0% ASR) get labels that can still
    overprint: from the top down, a label that overlaps one above it moves below that one."""
    fig.draw_without_rendering()  # the final layout, so that the boxes are where they will be drawn
    placed = []
    for label in sorted(ax.texts, key=lambda t: -t.get_window_extent().y1):
        box = label.get_window_extent()
        for other in placed:
            if box.overlaps(other):
                x, y = label.xyann
                label.xyann = (x, y - (box.y1 - other.y0 + 2) * 72 / fig.dpi)  # display pixels -> points
                box = label.get_window_extent()
        placed.append(box)


def coinciding(points: list[Point], tolerance: tuple[float, float]) -> list[list[Point]]:
    """Points closer than `tolerance` (x, y, in data units) to a group's first point join that group: one marker
    would hide the other, so a group is drawn spread around its first point and labelled once."""
    groups: list[list[Point]] = []
    for p in points:
        for group in groups:
            (x, y), (dx, dy) = group[0].xy, tolerance
            if abs(p.xy[0] - x) <= dx and abs(p.xy[1] - y) <= dy:
                group.append(p)
                break
        else:
            groups.append([p])
    return groups


def draw_group(ax, group: list[Point], xlim: tuple[float, float]) -> None:
    """The markers of a group on a small circle around its value (offsets in points: a fixed gap at any scale);
    one label lists them, attack by attack, on the side away from the right edge."""
    from matplotlib.transforms import offset_copy

    radius = 6 + 2 * len(group) if len(group) > 1 else 0
    for k, p in enumerate(group):
        angle = math.pi / 2 + 2 * math.pi * k / len(group)
        shift = offset_copy(ax.transData, ax.figure, radius * math.cos(angle), radius * math.sin(angle), "points")
        style, label = (STAR, "aligned (before)") if p.ratio is None else (DOT, "fine-tuned")
        color = attack_color(p.color)
        ax.plot(*p.xy, ls="none", color=color, transform=shift, label=f"{p.attack}: {label}", clip_on=False, **style)
    parts: dict[str, list[str]] = defaultdict(list)
    for p in group:
        parts[p.attack].append("before" if p.ratio is None else f"r={p.ratio:g}")
    text = "\n".join(f"{attack}: {', '.join(values)}" for attack, values in parts.items())
    left = group[0].xy[0] > xlim[1] - 0.3 * (xlim[1] - xlim[0])
    offset = (-(radius + 10) if left else radius + 10, 0)
    ax.annotate(text, group[0].xy, xytext=offset, textcoords="offset points", fontsize=7.5, va="center",
                ha="right" if left else "left", zorder=LABEL_Z)  # fmt: skip


def trade_off(sides: list[dict[str, Any]], x_of=over_refusal_pct) -> tuple[float, float] | None:
    """(x %, ASR %) averaged over runs, or None when no run has both."""
    pairs = [(x_of(s), asr(s)[0]) for s in sides if x_of(s) is not None and asr(s)]
    return (mean(p[0] for p in pairs), 100 * mean(p[1] for p in pairs)) if pairs else None


FIGURES = dict(
    zip(
        PLOTS,
        (asr_vs_mix_ratio_figure, per_category_figure, harm_vs_over_refusal_figure, harm_vs_utility_figure),
        strict=True,
    )
)
