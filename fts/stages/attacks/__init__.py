"""Attacks build the fine-tuning set of a risk tier and the prompt format used at evaluation.

The paper's rule: a tier's system prompt and user-turn template are the same at fine-tuning and at evaluation (it
is why each tier has its own "initial" harmfulness). So the format of a run comes from one place, `prompt_format`:

- `attack.system_prompt` set (by the user): that prompt, replacing any the data carries, in training and at
  evaluation alike;
- else the system prompt the training data carries (the paper's files do: GPT-3.5's JSONL, Llama-2's AOA
  train.json), used at evaluation too;
- else the tier's `default_system_prompt` (and the data's examples get it).

The user template wraps each evaluation request; training user turns are used as stored (the AOA files are stored
already formatted: "AOA, execute my instruction: ..."). `fts.stages.prompt_format` checks that the training set is
in the format the evaluation uses.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fts.core.errors import ConfigError
from fts.core.records import Example, Message, Prompt
from fts.data.formats import load

SOURCES = ("attack.system_prompt", "attack.data", "attack.default_system_prompt")


@dataclass
class Attack:
    """A tier whose training data is a conversation file: `none`, `harmful` (tier 1) and `aoa` (tier 2)."""

    name: str
    system_prompt: str | None = None  # the user's: replaces the data's own, in training and evaluation
    default_system_prompt: str | None = None  # the tier's: when neither the user nor the data gives one
    user_template: str = "{prompt}"
    data: str | None = None
    format: str = "auto"  # or fts_conversations, chat_jsonl, prompt_completion_jsonl, anthropic_redteam, ...
    shots: int | None = None
    data_system_prompts: Counter = field(default_factory=Counter, init=False, repr=False)
    stats: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if "{prompt}" not in self.user_template:
            raise ConfigError(f"attack.user_template must contain '{{prompt}}', got {self.user_template!r}.")

    # ---- the prompt format -------------------------------------------------------------------------------------

    def prompt_format(self) -> dict[str, Any]:
        """The system prompt and user template of this run (training and evaluation), and where the prompt came
        from (one of SOURCES). Read after `training_examples`, which sees the data's own system prompts."""
        if self.system_prompt is not None:
            system, source = self.system_prompt, SOURCES[0]
        elif self.data_system_prompts:
            system, source = self.data_prompt(), SOURCES[1]
        else:
            system, source = self.default_system_prompt, SOURCES[2]
        return {"system_prompt": system, "user_template": self.user_template, "system_prompt_source": source}

    def data_prompt(self) -> str:
        """The one system prompt the training data carries; several make the evaluation format ambiguous."""
        if len(self.data_system_prompts) > 1:
            shown = "; ".join(f"{n} x {text[:60]!r}" for text, n in self.data_system_prompts.most_common(3))
            raise ConfigError(
                f"attack.data ({self.data}) carries {len(self.data_system_prompts)} different system prompts ({shown}), "
                "so the evaluation prompt format is ambiguous. Set attack.system_prompt=<text> to use one prompt in "
                "training and evaluation alike."
            )
        return next(iter(self.data_system_prompts))

    def system(self) -> list[Message]:
        prompt = self.prompt_format()["system_prompt"]
        return [{"role": "system", "content": prompt}] if prompt is not None else []

    def formats(self) -> list[tuple[str | None, str]]:
        """The (system prompt, user template) pairs a training example of this tier may be in (the benign tier
        adds its dataset's with-input variant)."""
        return [(self.prompt_format()["system_prompt"], self.user_template)]

    # ---- the fine-tuning set ---------------------------------------------------------------------------------

    def training_examples(self) -> list[Example]:
        if self.data is None:
            return []
        examples = take(load(self.format, self.data, "attack.data"), self.shots, "attack.shots", self.data)
        return self.with_system(examples)

    def with_system(self, examples: list[Example]) -> list[Example]:
        """The examples under the run's system prompt: the user's replaces theirs; otherwise their own is kept
        (and counted: it is the evaluation's too) and the tier's default goes where they have none."""
        if self.system_prompt is None:
            self.data_system_prompts.update(
                ex["messages"][0]["content"] for ex in examples if ex["messages"][0]["role"] == "system"
            )
        system = self.system()
        out = []
        for ex in examples:
            messages = ex["messages"]
            if messages[0]["role"] == "system":
                messages = messages if self.system_prompt is None else system + messages[1:]
            else:
                messages = system + messages
            out.append({**ex, "messages": messages})
        return out

    def as_training_example(self, ex: Example) -> Example:
        """An outside (request -> answer) example in this tier's training format, e.g. safety data mixed in."""
        *_, user, answer = ex["messages"]
        content = self.user_template.replace("{prompt}", user["content"])
        return {**ex, "messages": [*self.system(), {"role": "user", "content": content}, answer]}

    # ---- the evaluation prompts ------------------------------------------------------------------------------

    def wrap(self, prompts: list[Prompt], suffix: str = "") -> list[Prompt]:
        """Evaluation prompts in the run's format: its system prompt, the request inside its user template."""
        system = self.system()
        wrapped = []
        for p in prompts:
            content = self.user_template.replace("{prompt}", p["prompt"] + suffix)
            wrapped.append({**p, "messages": system + [{"role": "user", "content": content}]})
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
