"""`mitigation=safety_mix` (paper §5, Table 4): mix safety examples (harmful request -> refusal) into the
fine-tuning set, by `ratio` (fraction of the final set) or by `count` (the paper's 10/50/100 and 250/500/1000
columns). Safety examples are put into the attack's own training format (its system prompt and user template), then
the whole set is shuffled with the run seed."""

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from fts.core.errors import ConfigError
from fts.core.records import Example
from fts.data.formats import in_split, load
from fts.stages.attacks import Attack

log = logging.getLogger(__name__)
KEY = "mitigation.safety_mix"


@dataclass
class SafetyMix:
    """Safety examples from `data` (its `split`), `ratio` of the final set or `count`."""

    data: str
    format: str
    split: str | None = None
    ratio: float | None = None
    count: int | None = None
    stage: str = "fine_tuning"
    name: str = "safety_mix"

    def apply(self, examples: list[Example], attack: Attack, seed: int, out: Path | None = None) -> list[Example]:
        pool = in_split(load(self.format, self.data, f"{KEY}.data"), self.split)
        n = safety_count(len(examples), self.ratio, self.count)
        if n > len(pool):
            raise ConfigError(
                f"{KEY} asks for {n} safety examples but {self.data} (split {self.split}) has {len(pool)}; lower "
                f"{KEY}.ratio / {KEY}.count or point {KEY}.data at a larger set: the paper's is Bianchi et al.'s "
                "data/training/safety_only_data_Instructions.json (2,483 examples, github.com/vinid/safety-tuned-llamas)."
            )
        rng = random.Random(seed)
        chosen = rng.sample(pool, n)
        mixed = examples + [{**attack.as_training_example(ex), "source": ex["source"]} for ex in chosen]
        rng.shuffle(mixed)
        log.info("safety_mix: %d attack + %d safety examples", len(examples), n)
        return mixed


def safety_count(n_attack: int, ratio: float | None, count: int | None) -> int:
    """How many safety examples to add: `count` when given, else enough to make up `ratio` of the final set."""
    if count is not None:
        return count
    if ratio is None or not 0 <= ratio < 1:
        raise ConfigError(f"{KEY}.ratio must be in [0, 1) (or set {KEY}.count), got {ratio!r}.")
    return round(ratio * n_attack / (1 - ratio))
