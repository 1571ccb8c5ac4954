"""The shape of results that every reader and writer shares: side and variant names, the judge order, and the
flat `side/judge/metric` keys of metrics.json (W&B summaries, sweep.csv columns)."""

from typing import Any

SIDES = ("baseline", "finetuned", "delta")
VARIANTS = ("", "_triggered")  # "" = the plain eval set; the backdoor adds prompts with its trigger


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
    return name != "keyword", name  # the paper's keyword ASR first
