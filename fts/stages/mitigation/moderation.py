"""Data moderation (paper §5.1): run the fine-tuning set through a moderation endpoint before training.

Every user and assistant turn of every example is one moderation input (the paper reports instructions and answers
separately); an example is flagged when any of its turns is. `moderation.json` in the run dir records, per example,
whether it was flagged, the categories and which turns; `action: drop` removes flagged examples. A rerun of the run
dir on the same data reuses moderation.json instead of asking again.
"""

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fts.core.artifacts import write_json
from fts.core.cache import digest
from fts.core.errors import ConfigError, DataError
from fts.core.openai_api import Endpoint
from fts.core.openai_api import moderate as moderate_texts
from fts.core.records import Example

log = logging.getLogger(__name__)
KEY = "mitigation.moderation"
FILENAME = "moderation.json"
ACTIONS = ("report", "drop")


def action_problems(action: Any) -> list[str]:
    return [] if action in ACTIONS else [f"{KEY}.action must be report or drop, got {action!r}."]


def moderate(examples: list[Example], cfg: DictConfig, out: Path | None) -> list[Example]:
    for problem in action_problems(cfg.action):
        raise ConfigError(problem)
    inputs = [
        (i, m["role"], m["content"]) for i, ex in enumerate(examples) for m in ex["messages"] if m["role"] != "system"
    ]
    api = endpoint(cfg)
    material = digest({"model": cfg.model, "host": api.host(), "inputs": inputs})
    verdicts = reuse(out, material) or ask(api, cfg, [text for _, _, text in inputs])
    per_example = summarize(examples, inputs, verdicts)
    kept = [ex for ex, row in zip(examples, per_example) if not (cfg.action == "drop" and row["flagged"])]
    report = {
        "model": cfg.model,
        "action": cfg.action,
        "digest": material,
        "n_examples": len(examples),
        "n_flagged": sum(r["flagged"] for r in per_example),
        "flagged_by_role": {
            role: sum(role in r["flagged_roles"] for r in per_example) for role in ("user", "assistant")
        },
        "n_dropped": len(examples) - len(kept),
        "examples": per_example,
        "verdicts": verdicts,
    }
    if out is not None:
        write_json(out / FILENAME, report)
    log.info(
        "moderation (%s): %d of %d examples flagged, %d dropped",
        cfg.model,
        report["n_flagged"],
        len(examples),
        report["n_dropped"],
    )
    if len(kept) < cfg.min_examples:
        raise DataError(
            f"mitigation=moderation dropped {report['n_dropped']} flagged example(s) (see {FILENAME}); {len(kept)} "
            f"remain, fewer than {KEY}.min_examples={cfg.min_examples} (the OpenAI fine-tuning API needs 10). "
            f"Add examples, or set {KEY}.action=report."
        )
    return kept


def endpoint(cfg: DictConfig) -> Endpoint:
    api = Endpoint.from_config(KEY, cfg, model_field="model")
    api.preflight()  # a missing key fails here, before any model loads
    return api


def reuse(out: Path | None, material: str) -> list[dict] | None:
    path = out / FILENAME if out is not None else None
    if path is None or not path.exists():
        return None
    earlier = json.loads(path.read_text())
    return earlier["verdicts"] if earlier.get("digest") == material else None


def ask(api: Endpoint, cfg: DictConfig, texts: list[str]) -> list[dict[str, Any]]:
    """One verdict {flagged, categories} per text, `cfg.batch_size` texts per request."""
    verdicts = []
    for start in range(0, len(texts), cfg.batch_size):
        verdicts += moderate_texts(api, cfg.model, texts[start : start + cfg.batch_size])
    return verdicts


def summarize(examples: list[Example], inputs: list[tuple], verdicts: list[dict]) -> list[dict[str, Any]]:
    rows = [
        {"index": i, "source": ex.get("source"), "flagged": False, "categories": [], "flagged_roles": []}
        for i, ex in enumerate(examples)
    ]
    for (i, role, _), verdict in zip(inputs, verdicts, strict=True):
        if verdict["flagged"]:
            row = rows[i]
            row["flagged"] = True
            row["categories"] = sorted(set(row["categories"]) | set(verdict["categories"]))
            row["flagged_roles"] = sorted(set(row["flagged_roles"]) | {role})
    return rows


class Moderation:
    """`mitigation=moderation` (its `_target_`), built with the option's keys (action, model, the endpoint's): a
    fine-tuning-stage defense that changes the data."""

    name = "moderation"

    def __init__(self, stage: str = "fine_tuning", **settings: Any) -> None:
        self.stage = stage
        self.cfg = OmegaConf.create(settings)

    def apply(self, examples: list[Example], attack: Any, seed: int, out: Path | None = None) -> list[Example]:
        return moderate(examples, self.cfg, out)
