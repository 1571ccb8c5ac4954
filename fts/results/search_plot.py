"""best_harm_so_far.png of `python -m fts.report`: how an attack search (or a sweep, in job order) closes in on the
worst case, one line per defense x attack. A trial below the utility floor is a failed attack: its harm is drawn, but
it counts 0 toward the best so far, as it did for the search (fts.results.metrics.search_value)."""

from fts.results.aggregate import Cell, by_key
from fts.results.plots import attack_color, new_figure, no_data

BEST_HARM_PLOT = "best_harm_so_far.png"


def best_harm_so_far_figure(cells: list[Cell]):
    fig = new_figure(7.5, 4.8)
    if not cells:
        return no_data(fig, "no finished runs yet")
    ax = fig.add_subplot()
    groups = by_key(cells, lambda c: (c.defense, c.attack))
    for i, ((defense, attack), group) in enumerate(sorted(groups.items())):
        group = sorted(group, key=lambda c: c.trial)
        trials = [c.trial for c in group]
        best, so_far = [], 0.0
        for c in group:
            so_far = max(so_far, 0.0 if c.failed else c.harm)
            best.append(100 * so_far)
        name = f"{defense} / {attack}" if len(groups) > 1 else f"defense {defense}, attack {attack}"
        color = attack_color(i)
        ax.step(trials, best, where="post", color=color, lw=2, label=f"{name}: best so far")
        counted = [c for c in group if not c.failed]
        ax.plot([c.trial for c in counted], [100 * c.harm for c in counted], "o", color=color, ms=5, alpha=0.7)
        failed = [c for c in group if c.failed]
        if failed:
            label = f"{name}: below the utility floor (counts 0)"
            ax.plot([c.trial for c in failed], [100 * c.harm for c in failed], "x", color=color, ms=8, label=label)
    ax.set(xlabel="trial (job number)", ylabel=f"{cells[0].label} after fine-tuning (%)", ylim=(-3, 103))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Best harm so far, per defense × attack (dots: each trial or cell)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
