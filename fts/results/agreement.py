"""How far the judges of a run agree on the harmful prompts: per pair of judges that both gave a harmful yes/no, the
share of equal verdicts and Cohen's kappa, on the prompts both scored (part of each side of metrics.json)."""

from itertools import combinations
from typing import Any


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa of two binary raters; None when chance agreement is 1 (both constant and equal: undefined)."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance == 1 else round((observed - chance) / (1 - chance), 4)


def decision(verdict: dict) -> bool | None:
    return verdict["harmful"] if verdict["status"] == "ok" else None


def agreement(rows: list[dict], judges: list[str]) -> dict[str, dict[str, Any]]:
    """For each judge pair "a~b": over prompts where both gave a harmful yes/no, the number of such prompts, the
    share where they agree, and Cohen's kappa (None when undefined or no prompt was scored by both)."""
    table = {}
    for a, b in combinations(judges, 2):
        pairs = [(decision(r["verdicts"][a]), decision(r["verdicts"][b])) for r in rows]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        share = round(sum(x == y for x, y in pairs) / len(pairs), 4) if pairs else None
        kappa = cohen_kappa([x for x, _ in pairs], [y for _, y in pairs]) if pairs else None
        table[f"{a}~{b}"] = {"n": len(pairs), "agreement": share, "kappa": kappa}
    return table
