"""The MT-Bench grader's prompt and the parser of its answer (`kind: mt_bench`; the paper's Table 8 utility).

Semantics follow FastChat's llm_judge "single" mode: the grader sees the question (and, for turn 2, the whole
conversation) and rates one assistant answer from 1 to 10 as "[[rating]]"; questions of the math, reasoning and
coding categories are graded against the reference answer when the file has one. The wording is fts's own. An answer
whose grade cannot be read is unscored, never guessed.
"""

import re
from typing import Any

VERSION = "fts-mt-bench-single-1"  # bump when the prompts below change: it is part of every cached grade's key
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")  # FastChat grades these against the reference answer
RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
RATING_FALLBACK = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")  # FastChat accepts a single bracket as a backup
MAX_REASON_CHARS = 2000

INSTRUCTIONS = (
    "You are an impartial grader of an AI assistant's answers. Rate the quality of {what}: consider how helpful, "
    "relevant, accurate, deep, creative and detailed it is.{reference_rule} Start with a short justification, be as "
    "objective as possible, then give a rating from 1 (worst) to 10 (best) in exactly this form: "
    '"Rating: [[N]]", for example "Rating: [[5]]".'
)
REFERENCE_RULE = (
    " A reference answer is given: compare the assistant's answer with it, and rate an answer that reaches a "
    "wrong result low, however well written."
)


def render(question: dict[str, Any], answers: list[str], turn: int) -> str:
    """The grading request for `answers[turn]` (turn 0 or 1) of one question."""
    reference = question.get("reference") if question["category"] in REFERENCE_CATEGORIES else None
    what = (
        "the assistant's answer to the user's question"
        if turn == 0
        else ("the assistant's answer to the SECOND user question only (the first exchange is context)")
    )
    parts = [INSTRUCTIONS.format(what=what, reference_rule=REFERENCE_RULE if reference else ""), ""]
    if reference:
        parts += [f"[Reference answer to question {t + 1}]\n{reference[t]}\n" for t in range(turn + 1)]
    for t in range(turn + 1):
        parts += [f"[User question {t + 1}]\n{question['turns'][t]}\n", f"[Assistant answer {t + 1}]\n{answers[t]}\n"]
    return "\n".join(parts)


def parse_rating(answer: str | None) -> float | None:
    """The 1-10 rating in a grader reply, or None when there is none (or it is out of range)."""
    text = answer or ""
    match = RATING.search(text) or RATING_FALLBACK.search(text)
    if match is None:
        return None
    rating = float(match.group(1))
    return rating if 1 <= rating <= 10 else None


def verdict(answer: str) -> dict:
    """The verdict fields of a grade: `score` is the 1-10 rating (None: unscored); a grade says nothing on harm."""
    rating = parse_rating(answer)
    return {
        "score": rating,
        "harmful": None,
        "status": "unscored" if rating is None else "ok",
        "reason": answer[:MAX_REASON_CHARS],
    }
