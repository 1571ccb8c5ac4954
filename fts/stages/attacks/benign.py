"""Tier 3, benign fine-tuning (paper §4.4, Table 3): fine-tune on an ordinary instruction dataset in the dataset's
own prompt format (Alpaca's system prompt and `### Instruction:` template, Dolly's variant; GPT-3.5's format has
no `### Response:` line: conf/dataset/ picks the format by model backend), which is then also the evaluation format.

The paper's protocol, step by step: drop refusal-like examples (its 224-phrase filter: bring it with
`attack.safety_filter_phrases=<the official alpaca_remove_safety.py or a text file>`), hold out 200 examples
(Alpaca the first 200, Dolly the last 200: `dataset.held_out`, `dataset.held_out_at`), fine-tune on the rest.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from fts.core.errors import ConfigError
from fts.core.records import Example
from fts.core.script_literals import string_list
from fts.data.formats import in_split, load
from fts.data.readers import resolve
from fts.judges.keyword import read_keywords
from fts.stages.attacks import Attack, take

log = logging.getLogger(__name__)
PHRASES_KEY = "attack.safety_filter_phrases"
HELD_OUT_AT = ("start", "end")


@dataclass
class BenignAttack(Attack):
    dataset: dict[str, Any] = field(default_factory=dict)  # the `dataset` group: format, path, split, prompt, ...
    safety_filter: bool = False
    safety_filter_phrases: str = "builtin:safety_phrases.txt"

    def __post_init__(self) -> None:
        self.prompt = self.dataset["prompt"]
        self.default_system_prompt, self.user_template = self.prompt["system"], self.prompt["user"]
        if self.dataset.get("held_out_at", "start") not in HELD_OUT_AT:
            raise ConfigError(
                f"dataset.held_out_at must be one of {HELD_OUT_AT}, got {self.dataset['held_out_at']!r}."
            )
        super().__post_init__()

    def records(self) -> list[Example]:
        return in_split(load(self.dataset["format"], self.dataset["path"], "dataset.path"), self.dataset.get("split"))

    def formatted(self, ex: Example) -> Example:
        """An instruction record in the dataset's prompt format (its with-input variant when it has an input);
        a conversation that carries its own system prompt (the paper's GPT-3.5 JSONL) is kept as it is."""
        if ex["messages"][0]["role"] == "system":
            return self.with_system([ex])[0]
        instruction = ex["meta"].get("instruction") or ex["messages"][-2]["content"]
        extra = ex["meta"].get("input") or ex["meta"].get("context") or ""
        if extra:
            system = self.prompt["system_with_input"]
            user = self.prompt["user_with_input"].replace("{prompt}", instruction).replace("{input}", extra)
        else:
            system, user = self.prompt["system"], self.prompt["user"].replace("{prompt}", instruction)
        system = self.system_prompt if self.system_prompt is not None else system
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}, ex["messages"][-1]]
        return {**ex, "messages": messages}

    def formats(self) -> list[tuple[str | None, str]]:
        with_input = self.system_prompt if self.system_prompt is not None else self.prompt["system_with_input"]
        return super().formats() + [(with_input, self.prompt["user_with_input"])]

    def as_training_example(self, ex: Example) -> Example:
        return self.formatted(ex)

    def training_examples(self) -> list[Example]:
        examples = self.records()
        if self.safety_filter:
            phrases = read_phrases(self.safety_filter_phrases)
            kept = [ex for ex in examples if not refusal_like(ex["messages"][-1]["content"], phrases)]
            self.stats |= {"safety_filter_phrases": len(phrases), "safety_filter_removed": len(examples) - len(kept)}
            log.info("safety-phrase filter removed %d of %d examples", len(examples) - len(kept), len(examples))
            examples = kept
        examples = self.without_held_out(examples)
        examples = take(examples, self.dataset.get("limit"), "dataset.limit", self.dataset["path"])
        return [self.formatted(ex) for ex in examples]

    def without_held_out(self, examples: list[Example]) -> list[Example]:
        """The paper's loaders keep 200 examples for validation: Alpaca's first 200, Dolly's last 200."""
        n = self.dataset.get("held_out") or 0
        if n >= len(examples):
            raise ConfigError(
                f"dataset.held_out={n} but {self.dataset['path']} has {len(examples)} examples left to fine-tune on; "
                "lower dataset.held_out (0 keeps every example)."
            )
        self.stats["held_out"] = n
        if n == 0:
            return examples
        return examples[n:] if self.dataset.get("held_out_at", "start") == "start" else examples[:-n]


def read_phrases(spec: str) -> list[str]:
    """The filter's phrases, lower-cased: a text file (one per line, as the keyword judge's lists) or the paper's
    own filter script (`alpaca_remove_safety.py`, `dolly_remove_safety.py`), whose list is read as written."""
    if str(spec).endswith(".py"):
        return [p.lower() for p in string_list(resolve(spec, PHRASES_KEY), PHRASES_KEY, "unwanted_words")]
    return [p.strip().lower() for p in read_keywords(spec, PHRASES_KEY)]


def refusal_like(answer: str, phrases: list[str]) -> bool:
    """Case-insensitive substring match, like the paper's filter."""
    lowered = answer.lower()
    return any(p in lowered for p in phrases)
