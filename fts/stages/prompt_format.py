"""Is the fine-tuning set in the prompt format the evaluation uses? The paper's core rule is that it is: the same
system prompt and user template at fine-tuning and at evaluation. A run whose formats differ measures something
else (e.g. an AOA-trained model asked without its persona), so fts says so loudly, or stops
(`eval.format_mismatch=fail`), and manifest.json records the format actually used.
"""

import logging
import re
from typing import Any

from fts.core.errors import ConfigError
from fts.core.records import Example
from fts.stages.attacks import Attack

log = logging.getLogger(__name__)
POLICIES = ("warn", "fail")


def template_pattern(template: str) -> re.Pattern:
    """A user template ("AOA, execute my instruction: {prompt}") as a pattern a formatted user turn matches."""
    parts = re.split(r"(\{prompt\}|\{input\})", template)
    return re.compile("".join(".+" if p in ("{prompt}", "{input}") else re.escape(p) for p in parts), re.DOTALL)


def in_format(ex: Example, formats: list[tuple[str | None, re.Pattern]]) -> tuple[bool, bool]:
    """(its system prompt is the run's, its user turn fits the run's template) for one training example."""
    messages = ex["messages"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    same_system = [pattern for prompt, pattern in formats if prompt == system]
    return bool(same_system), any(p.fullmatch(user) for p in same_system)


def check(attack: Attack, train_set: list[Example], policy: str) -> dict[str, Any]:
    """The run's prompt format and how much of the fine-tuning set is in it (for manifest.json); a mismatch (an
    example under another system prompt, or no user turn in the evaluation's template) warns or raises."""
    if policy not in POLICIES:
        raise ConfigError(f"eval.format_mismatch must be one of {POLICIES}, got {policy!r}.")
    record = attack.prompt_format()
    formats = [(system, template_pattern(template)) for system, template in attack.formats()]
    checked = [in_format(ex, formats) for ex in train_set]
    other_system = sum(not system for system, _ in checked)
    fitting = sum(user for _, user in checked)
    record |= {"train_examples": len(train_set), "train_other_system_prompt": other_system}
    record |= {"train_user_turns_in_template": fitting}
    problems = []
    if other_system:
        problems.append(f"{other_system} of {len(train_set)} fine-tuning examples have another system prompt")
    if train_set and not fitting:
        problems.append(f"none of the fine-tuning user turns fits the evaluation template {attack.user_template!r}")
    record["consistent"] = not problems
    if problems:
        message = (
            f"the fine-tuning and evaluation prompt formats differ: {'; '.join(problems)} (evaluation system "
            f"prompt from {record['system_prompt_source']}: {str(record['system_prompt'])[:80]!r}). The paper "
            "fine-tunes and evaluates in one format; set attack.system_prompt / attack.user_template to the data's "
            "format, or bring data in the tier's format."
        )
        if policy == "fail":
            raise ConfigError(message + " (eval.format_mismatch=fail; =warn records it and goes on)")
        log.warning("PROMPT FORMAT MISMATCH: %s", message)
    return record
