"""Mitigations change the fine-tuning set before training. Each conf/mitigation/ option names its class
(`_target_`), built with the option's keys; `apply(examples, attack, seed, out)` returns the set to train on.

- `none`: the set is exactly what the attack built.
- `safety_mix` (paper §5, Table 4): mix safety examples (harmful request -> refusal) into the set, by `ratio`
  (fraction of the final set) or by `count` (the paper's 10/50/100 and 250/500/1000 columns). Safety examples
  are put into the attack's own training format (its system prompt and user template), then the whole set is
  shuffled with the run seed.
- `moderation` (paper §5.1): run the set through a moderation endpoint, write moderation.json, and report or drop
  the flagged examples (`fts.stages.mitigation.moderation`).
"""

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from fts.core.config import build
from fts.core.errors import ConfigError
from fts.core.records import Example
from fts.data.formats import load
from fts.stages.attacks import Attack, in_split

log = logging.getLogger(__name__)


def apply(
    examples: list[Example], mitigation_cfg: DictConfig, seed: int, attack: Attack, out: Path | None = None
) -> list[Example]:
    """The fine-tuning set after the mitigation; `out` (the run dir) receives its record, if it writes one."""
    return build(mitigation_cfg).apply(examples, attack=attack, seed=seed, out=out)


@dataclass
class NoMitigation:
    """`mitigation=none`."""

    name: str = "none"

    def apply(self, examples: list[Example], attack: Attack, seed: int, out: Path | None = None) -> list[Example]:
        return examples


@dataclass
class SafetyMix:
    """`mitigation=safety_mix`: safety examples from `data` (its `split`), `ratio` of the final set or `count`."""

    data: str
    format: str
    split: str | None = None
    ratio: float | None = None
    count: int | None = None
    name: str = "safety_mix"

    def apply(self, examples: list[Example], attack: Attack, seed: int, out: Path | None = None) -> list[Example]:
        return safety_mix(examples, self, seed, attack)


def safety_count(n_attack: int, ratio: float | None, count: int | None) -> int:
    """How many safety examples to add: `count` when given, else enough to make up `ratio` of the final set."""
    if count is not None:
        return count
    if ratio is None or not 0 <= ratio < 1:
        raise ConfigError(f"mitigation.ratio must be in [0, 1) (or set mitigation.count), got {ratio!r}.")
    return round(ratio * n_attack / (1 - ratio))


def safety_mix(examples: list[Example], cfg: SafetyMix, seed: int, attack: Attack) -> list[Example]:
    pool = in_split(load(cfg.format, cfg.data, "mitigation.data"), cfg.split)
    n = safety_count(len(examples), cfg.ratio, cfg.count)
    if n > len(pool):
        raise ConfigError(
            f"mitigation asks for {n} safety examples but {cfg.data} (split {cfg.split}) has {len(pool)}; "
            "lower mitigation.ratio / mitigation.count or point mitigation.data at a larger set: the paper's is "
            "Bianchi et al.'s data/training/safety_only_data_Instructions.json (2,483 examples, "
            "github.com/vinid/safety-tuned-llamas)."
        )
    rng = random.Random(seed)
    chosen = rng.sample(pool, n)
    mixed = examples + [{**attack.as_training_example(ex), "source": ex["source"]} for ex in chosen]
    rng.shuffle(mixed)
    log.info("safety_mix: %d attack + %d safety examples", len(examples), n)
    return mixed
