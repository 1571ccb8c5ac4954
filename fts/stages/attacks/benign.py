"""Tier 3, benign fine-tuning (paper §4.4, Table 3): fine-tune on an ordinary instruction dataset in the dataset's
own prompt format (Alpaca's system prompt and `### Instruction:` template, Dolly's variant), which is then also the
evaluation format. Optionally drop refusal-like examples first, as the paper did (its safety-phrase filter).
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from fts.core.records import Example
from fts.data.formats import load
from fts.judges.keyword import read_keywords
from fts.stages.attacks import Attack, take

log = logging.getLogger(__name__)


@dataclass
class BenignAttack(Attack):
    dataset: dict[str, Any] = field(default_factory=dict)  # the `dataset` group: format, path, split, limit, prompt
    safety_filter: bool = False
    safety_phrases: str = "builtin:safety_phrases.txt"

    def __post_init__(self) -> None:
        self.prompt = self.dataset["prompt"]
        self.system_prompt, self.user_template = self.prompt["system"], self.prompt["user"]
        self.stats: dict[str, int] = {}
        super().__post_init__()

    def records(self) -> list[Example]:
        examples = load(self.dataset["format"], self.dataset["path"], "dataset.path")
        if self.dataset.get("split") is not None:
            examples = [ex for ex in examples if ex["meta"].get("split") == self.dataset["split"]]
        return examples

    def formatted(self, ex: Example) -> Example:
        """Rebuild the conversation in the dataset's prompt format (with the `input` variant when there is one)."""
        instruction = ex["meta"].get("instruction") or ex["messages"][-2]["content"]
        extra = ex["meta"].get("input") or ex["meta"].get("context") or ""
        if extra:
            system = self.prompt["system_with_input"]
            user = self.prompt["user_with_input"].replace("{prompt}", instruction).replace("{input}", extra)
        else:
            system, user = self.prompt["system"], self.prompt["user"].replace("{prompt}", instruction)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}, ex["messages"][-1]]
        return {**ex, "messages": messages}

    def as_training_example(self, ex: Example) -> Example:
        return self.formatted(ex)

    def training_examples(self) -> list[Example]:
        examples = self.records()
        if self.safety_filter:
            phrases = read_phrases(self.safety_phrases)
            kept = [ex for ex in examples if not refusal_like(ex["messages"][-1]["content"], phrases)]
            self.stats["safety_filter_removed"] = len(examples) - len(kept)
            log.info("safety-phrase filter removed %d of %d examples", len(examples) - len(kept), len(examples))
            examples = kept
        examples = take(examples, self.dataset.get("limit"), "dataset.limit", self.dataset["path"])
        return [self.formatted(ex) for ex in examples]


def read_phrases(spec: str) -> list[str]:
    """The phrase list, lower-cased (same file format as the keyword judge's lists)."""
    return [p.strip().lower() for p in read_keywords(spec, "attack.safety_phrases")]


def refusal_like(answer: str, phrases: list[str]) -> bool:
    """Case-insensitive substring match, like the paper's filter."""
    lowered = answer.lower()
    return any(p in lowered for p in phrases)
