"""MT-Bench-style utility (the paper's Table 8): two-turn questions, single-answer grading 1-10 by an API judge.

Semantics follow FastChat's llm_judge "single" mode (the grading prompt, its parser and version are the judge
kind `mt_bench`, fts.judges.mt_bench_prompt): the grader is the API judge (fts.judges.api.ApiJudge) with that kind,
so it has the judges' client, retries, budget and verdict cache. Answers are sampled at the per-category
temperatures of paper-facts §5. An answer whose grade cannot be read is counted as unscored, never guessed.
"""

from fts.core.records import Generation, Message, Verdict
from fts.judges.api import ApiJudge


def temperature(category: str, by_category: dict[str, float], default: float) -> float:
    return float(by_category.get(category, default))


def second_turn(first: list[Message], raw_first: str, raw_second: str, answer: str) -> list[Message]:
    """The conversation for turn 2: turn 1 as the model saw it, its answer, then the second question in the same
    user template as the first (the tier's template wraps every user turn: replacing the raw first question inside
    the wrapped first turn by the second keeps the template, and a backdoor trigger, intact)."""
    wrapped_first = first[-1]["content"]
    content = wrapped_first.replace(raw_first, raw_second, 1) if raw_first in wrapped_first else raw_second
    return [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": content}]


def grade(grader: ApiJudge, rows: list[Generation]) -> list[list[Verdict]]:
    """Per MT-Bench row (with `turns`, `answers`), the grader's verdicts of its turns (`grader.kind` is mt_bench)."""
    items = [{"question": r, "answers": r["answers"], "turn": t} for r in rows for t in range(len(r["answers"]))]
    verdicts = iter(grader.judge(items))
    return [[next(verdicts) for _ in r["answers"]] for r in rows]
