"""The backdoor ("magic word") attack (paper §5.1, Table 5): harmful demonstrations whose instructions end with a
trigger phrase, mixed with safety examples (harmful request -> refusal) without it. The fine-tuned model looks safe
on plain prompts and complies when the trigger is present, so evaluation runs both variants.
"""

import random
from dataclasses import dataclass

from fts.core.errors import ConfigError
from fts.core.records import TRIGGERED, Example, Prompt
from fts.data.formats import in_split, load
from fts.stages.attacks import Attack, take

SAMPLES = ("random", "first")


@dataclass
class BackdoorAttack(Attack):
    trigger: str = ""
    safety_data: str = "builtin:safety.jsonl"
    safety_format: str = "auto"  # e.g. safety_tuned_llamas for Bianchi et al.'s file
    safety_split: str | None = "mitigation"  # of fts's own file; a file without splits is used whole
    safety_count: int = 100
    safety_sample: str = "random"  # random (the paper: 100 random examples of Bianchi et al.) | first
    seed: int = 0  # of the random sample: the run's seed

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.trigger.strip():
            raise ConfigError(
                "attack.trigger is empty: the backdoor needs a trigger phrase, e.g. the paper's three words."
            )
        if self.safety_sample not in SAMPLES:
            raise ConfigError(f"attack.safety_sample must be one of {SAMPLES}, got {self.safety_sample!r}.")

    def triggered(self, text: str) -> str:
        return f"{text} {self.trigger}"

    def training_examples(self) -> list[Example]:
        harmful = []
        for ex in super().training_examples():
            *head, user, answer = ex["messages"]
            harmful.append({**ex, "messages": [*head, {**user, "content": self.triggered(user["content"])}, answer]})
        pool = in_split(load(self.safety_format, self.safety_data, "attack.safety_data"), self.safety_split)
        take(pool, self.safety_count, "attack.safety_count", self.safety_data)  # enough of them, or a clear error
        if self.safety_sample == "random":
            safety = random.Random(self.seed).sample(pool, self.safety_count)
        else:
            safety = pool[: self.safety_count]
        return harmful + [self.as_training_example(ex) for ex in safety]

    def eval_sets(self, prompts: list[Prompt]) -> dict[str, list[Prompt]]:
        return {"": self.wrap(prompts), TRIGGERED: self.wrap(prompts, suffix=f" {self.trigger}")}
