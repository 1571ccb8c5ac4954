"""The shape of results that every reader and writer shares: side and variant names, the judge order, and the
flat `side/judge/metric` keys of metrics.json (W&B summaries, sweep.csv columns)."""

from typing import Any

from fts.core.records import SIDES, VARIANTS

__all__ = [
    "HEADLINE_JUDGE",
    "SIDES",
    "VARIANTS",
    "flatten",
    "headline_judge",
    "judge_order",
    "recorded_headline_judge",
]
# eval.headline_judge's default (the paper's keyword ASR): the headline of metrics.json that does not record one.
HEADLINE_JUDGE = "keyword"


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"finetuned": {"keyword": {"asr": .4, "asr_ci95": [.3, .5]}}} -> finetuned/keyword/asr, .../asr_ci95_lo, _hi.

    None values are left out (a W&B summary cannot chart them)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat |= flatten(value, name)
        elif isinstance(value, list | tuple) and len(value) == 2:
            flat[f"{name}_lo"], flat[f"{name}_hi"] = value
        elif value is not None:
            flat[name] = value
    return flat


def judge_order(name: str) -> tuple[bool, str]:
    return name != HEADLINE_JUDGE, name  # the paper's keyword ASR first


def headline_judge(side: dict[str, Any], judges: list[str]) -> str | None:
    """The headline judge a side records (eval.headline_judge), else the default one or the first of `judges`
    (metrics.json written before the headline was recorded)."""
    recorded = side.get("headline_judge")
    if recorded in judges:
        return recorded
    return HEADLINE_JUDGE if HEADLINE_JUDGE in judges or not judges else judges[0]


def recorded_headline_judge(results: list[dict[str, Any] | None]) -> str | None:
    """The headline judge most of these metrics.json record (eval.headline_judge); None when none does."""
    recorded = [
        side["headline_judge"]
        for result in results
        for side in (result or {}).values()
        if isinstance(side, dict) and side.get("headline_judge")
    ]
    return max(set(recorded), key=recorded.count) if recorded else None
