"""Attacks build the fine-tuning set of a risk tier and the prompt format used at evaluation.

The system prompt and user-turn template of a tier are used identically at fine-tuning and at evaluation, as in
the paper (it is why each tier has its own "initial" harmfulness).
"""

from dataclasses import dataclass

from fts.core.errors import ConfigError
from fts.core.records import Example, Message, Prompt
from fts.data.formats import load


@dataclass
class Attack:
    """A tier whose training data is a conversation file: `none`, `harmful` (tier 1) and `aoa` (tier 2).

    Training examples get the tier's system prompt unless the file brings its own system message; user turns are
    used as stored (the AOA files are stored already formatted, e.g. "AOA, execute my instruction: ...").
    """

    name: str
    system_prompt: str | None = None
    user_template: str = "{prompt}"
    data: str | None = None
    format: str = "fts_conversations"  # or chat_jsonl, prompt_completion_jsonl, anthropic_redteam, ...
    shots: int | None = None

    def __post_init__(self) -> None:
        if "{prompt}" not in self.user_template:
            raise ConfigError(f"attack.user_template must contain '{{prompt}}', got {self.user_template!r}.")

    def system(self) -> list[Message]:
        return [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []

    def with_system(self, messages: list[Message]) -> list[Message]:
        return messages if messages[0]["role"] == "system" else self.system() + messages

    def training_examples(self) -> list[Example]:
        if self.data is None:
            return []
        examples = take(load(self.format, self.data, "attack.data"), self.shots, "attack.shots", self.data)
        return [{**ex, "messages": self.with_system(ex["messages"])} for ex in examples]

    def as_training_example(self, ex: Example) -> Example:
        """An outside (request -> answer) example in this tier's training format, e.g. safety data mixed in."""
        *_, user, answer = ex["messages"]
        content = self.user_template.replace("{prompt}", user["content"])
        return {**ex, "messages": [*self.system(), {"role": "user", "content": content}, answer]}

    def wrap(self, prompts: list[Prompt], suffix: str = "") -> list[Prompt]:
        """Evaluation prompts in the tier's format: its system prompt, the request inside its user template."""
        wrapped = []
        for p in prompts:
            content = self.user_template.replace("{prompt}", p["prompt"] + suffix)
            wrapped.append({**p, "messages": self.system() + [{"role": "user", "content": content}]})
        return wrapped

    def eval_sets(self, prompts: list[Prompt]) -> dict[str, list[Prompt]]:
        """Named variants of the evaluation set; "" is the plain one (the backdoor adds a triggered one)."""
        return {"": self.wrap(prompts)}


def take(examples: list[Example], n: int | None, key: str, source: str) -> list[Example]:
    """The first `n` examples (the paper's 10/50/100 shots), or all of them when n is None."""
    if n is None:
        return examples
    if n > len(examples):
        raise ConfigError(f"{key}={n} but {source} has only {len(examples)} examples; lower {key} or add data.")
    return examples[:n]
