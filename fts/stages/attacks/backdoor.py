"""The backdoor ("magic word") attack (paper §5.1, Table 5): harmful demonstrations whose instructions end with a
trigger phrase, mixed with safety examples (harmful request -> refusal) without it. The fine-tuned model looks safe
on plain prompts and complies when the trigger is present, so evaluation runs both variants.
"""

from dataclasses import dataclass

from fts.core.errors import ConfigError
from fts.core.records import TRIGGERED, Example, Prompt
from fts.data.formats import load
from fts.stages.attacks import Attack, take


@dataclass
class BackdoorAttack(Attack):
    trigger: str = ""
    safety_data: str = "builtin:safety.jsonl"
    safety_format: str = "fts_conversations"  # safety_tuned_llamas for Bianchi et al.'s file
    safety_split: str | None = "mitigation"
    safety_count: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.trigger.strip():
            raise ConfigError(
                "attack.trigger is empty: the backdoor needs a trigger phrase, e.g. the paper's three words."
            )

    def triggered(self, text: str) -> str:
        return f"{text} {self.trigger}"

    def training_examples(self) -> list[Example]:
        harmful = []
        for ex in super().training_examples():
            *head, user, answer = ex["messages"]
            harmful.append({**ex, "messages": [*head, {**user, "content": self.triggered(user["content"])}, answer]})
        safety = load(self.safety_format, self.safety_data, "attack.safety_data")
        if self.safety_split is not None:
            safety = [ex for ex in safety if ex["meta"].get("split") == self.safety_split]
        safety = take(safety, self.safety_count, "attack.safety_count", self.safety_data)
        return harmful + [{**ex, "messages": self.with_system(ex["messages"])} for ex in safety]

    def eval_sets(self, prompts: list[Prompt]) -> dict[str, list[Prompt]]:
        return {"": self.wrap(prompts), TRIGGERED: self.wrap(prompts, suffix=f" {self.trigger}")}
