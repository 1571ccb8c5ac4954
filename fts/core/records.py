"""The records that flow through fts. Every loader returns these; everything downstream speaks only these."""

from typing import Any, Literal, TypedDict


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class Example(TypedDict):
    """One training conversation; the last message is the assistant answer the loss is computed on."""

    messages: list[Message]
    source: str
    meta: dict[str, Any]


class Prompt(TypedDict):
    """One evaluation query (no answer). `prompt` is the bare request; `messages` is what the model sees."""

    id: str
    category: str
    prompt: str
    messages: list[Message]


class XSTestPrompt(Prompt):
    """An over-refusal prompt: `category` is XSTest's type; `label` safe (refusing is wrong) or unsafe (contrast)."""

    label: Literal["safe", "unsafe"]


class QAPrompt(Prompt):
    """A utility question with reference answers: `references` are the answer and its aliases, matched by
    `fts.utility.qa.score` (case-folded unless `case_sensitive`)."""

    references: list[str]
    case_sensitive: bool


class Question(TypedDict):
    """A multi-turn utility question (MT-Bench): user turns in order, reference answers per turn or None."""

    id: str
    category: str
    turns: list[str]
    reference: list[str] | None


class PrefillAnswer(TypedDict):
    """A harmful answer whose first tokens start the model's response (the prefilling attack, fts.data.prefill),
    matched to an evaluation prompt by `id`, else by its `prompt` text."""

    id: str | None
    prompt: str | None
    response: str


class Generation(Prompt):
    response: str


class Verdict(TypedDict):
    judge: str
    score: float | None
    harmful: bool | None
    status: Literal["ok", "unscored"]
    reason: str


# The sides of a run's results (metrics.json keys): the model the user fine-tunes (the aligned model, or with an
# alignment-stage defense the defended one), the fine-tuned one, and finetuned - baseline; with an alignment-stage
# defense also the aligned model before it and what the defense changed (baseline - aligned).
SIDES = ("baseline", "finetuned", "delta", "aligned", "defense_delta")
BASELINE, FINETUNED, DELTA, ALIGNED, DEFENSE_DELTA = SIDES
# Eval-set variants, each a suffix of the side names: "" = the plain eval set; the backdoor adds its triggered prompts.
TRIGGERED = "_triggered"
VARIANTS = ("", TRIGGERED)
