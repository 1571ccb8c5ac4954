"""The defense view of a sweep (`python -m fts.run -m mitigation=none,vaccine,safelora attack=harmful,aoa`, then
`python -m fts.report`): defense x attack tables of the headline harm before -> after the attack and of the utility
after it, each cell the mean over the sweep's cells of that pair (seeds, mix ratios, ...), and a plot of harm after
the attack against utility, one marker per defense. A run's defense is its conf/mitigation/ selection (Run.defense)."""

from statistics import mean
from typing import Any

from fts.core.records import BASELINE, FINETUNED
from fts.results.metrics import headline_metric
from fts.results.plots import attack_color, new_figure, no_data
from fts.results.runs import Run, grouped
from fts.results.sweep import main_judge

DEFENSE_PLOT = "defense_harm_vs_utility.png"


def finished(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.metrics and FINETUNED in r.metrics and BASELINE in r.metrics]


def harm(side: dict[str, Any], judge: str) -> float | None:
    metrics = side.get(judge) or {}
    return metrics.get(headline_metric(metrics))


def utility(side: dict[str, Any]) -> float | None:
    return (side.get("utility") or {}).get("qa", {}).get("accuracy")


def average(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return mean(present) if present else None


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def has_defenses(runs: list[Run]) -> bool:
    return any(r.defense != "none" for r in finished(runs))


def defense_attack_lines(runs: list[Run]) -> list[str]:
    """Two markdown tables (rows: defenses, columns: attacks); [] when no finished run had a defense."""
    done = finished(runs)
    if not has_defenses(runs):
        return []
    judge = main_judge(done[0].metrics[FINETUNED]) or "keyword"
    cells = grouped(done, lambda r: (r.defense, r.attack))
    defenses = sorted({d for d, _ in cells}, key=lambda d: (d != "none", d))
    attacks = sorted({a for _, a in cells})

    def table(title: str, value) -> list[str]:
        lines = ["", title, "", "| defense | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
        for d in defenses:
            lines.append(f"| {d} | " + " | ".join(value(cells.get((d, a), [])) for a in attacks) + " |")
        return lines

    def harm_cell(group: list[Run]) -> str:
        if not group:
            return ""
        before = average([harm(r.metrics[BASELINE], judge) for r in group])
        after = average([harm(r.metrics[FINETUNED], judge) for r in group])
        return f"{pct(before)} → {pct(after)}" + (f" (n={len(group)})" if len(group) > 1 else "")

    def utility_cell(group: list[Run]) -> str:
        return pct(average([utility(r.metrics[FINETUNED]) for r in group])) if group else ""

    return [
        "## Defense x attack",
        *table(f"Harm ({judge}), the model the user fine-tunes → after the attack; mean over cells:", harm_cell),
        *table("Utility after the attack (built-in QA accuracy):", utility_cell),
        "",
        f"![{DEFENSE_PLOT}]({DEFENSE_PLOT})",
    ]


def defense_harm_vs_utility_figure(runs: list[Run]):
    """Harm after the attack against utility after it: one marker shape per defense, one color per attack."""
    fig = new_figure(7.5, 4.8)
    done = finished(runs)
    if not done:
        return no_data(fig, "no finished fine-tuning runs yet")
    judge = main_judge(done[0].metrics[FINETUNED]) or "keyword"
    ax = fig.add_subplot()
    markers = "osD^vP*X"
    attacks = sorted({r.attack for r in done})
    for k, (defense, group) in enumerate(sorted(grouped(done, lambda r: r.defense).items())):
        for attack, cell in grouped(group, lambda r: r.attack).items():
            x = average([utility(r.metrics[FINETUNED]) for r in cell])
            y = average([harm(r.metrics[FINETUNED], judge) for r in cell])
            if x is None or y is None:
                continue
            color = attack_color(attacks.index(attack))
            shape = markers[k % len(markers)]
            ax.plot(100 * x, 100 * y, shape, color=color, ms=9, mec="black", label=f"{defense}, {attack}")
    ax.set(xlabel="utility after the attack (QA accuracy, %)", ylabel=f"harm after the attack ({judge}, %)")
    ax.set(xlim=(-3, 103), ylim=(-3, 103), title="Defenses: harm vs utility after the attack (mean over cells)")
    ax.legend(fontsize=8, loc="best")
    return fig
