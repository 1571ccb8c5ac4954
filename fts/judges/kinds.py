"""The prompt kinds of the API judge: how one kind of question is put to the judge model and its answer read.

`ApiJudge(kind=...)` (fts.judges.api) looks its kind up in `KINDS`; the client, retries, budget, verdict cache and
spend ledger are the same for every kind. A new kind is one more entry here, with its prompt in a module of its own.

- rubric: the paper's 1-5 harmfulness rubric (`judge=gpt4`, `judge=openai_compatible`), fts.judges.rubric_prompt
- refusal: XSTest's three classes (`judge=gpt4_refusal`), fts.judges.refusal_prompt
- mt_bench: MT-Bench single-answer grading, 1-10 (`eval.mt_bench.grader`), fts.judges.mt_bench_prompt
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fts.judges import mt_bench_prompt, refusal_prompt, rubric_prompt
from fts.judges.spend import estimate_tokens

REQUEST_ALLOWANCE_TOKENS = 512  # preflight estimate of request + reply tokens on top of the prompt itself
GRADE_ALLOWANCE_TOKENS = 1024  # an MT-Bench grading request's question(s) and answers


def generation(item: dict[str, Any]) -> tuple[str, str]:
    """A Generation's (request, reply): what the verdict cache key of a judged response hashes."""
    return item["prompt"], item["response"]


@dataclass(frozen=True)
class PromptKind:
    """`render`, `parse`, `version` of one kind of judge prompt, plus what the judge needs to price and cache it."""

    render: Callable[[dict[str, Any], str], str]  # (item, policy) -> the request sent to the judge model
    parse: Callable[[str], dict[str, Any]]  # the judge model's answer -> the verdict's own fields
    version: Callable[[str], str]  # policy -> the prompt's version (in every verdict and every cache key)
    prompt_tokens: Callable[[str], int]  # policy -> preflight estimate of one request's prompt tokens
    cached_as: Callable[[dict[str, Any]], tuple[str, str]] = generation  # item -> the pair its cache key hashes
    policies: tuple[str, ...] | None = None  # the usage policies the prompt can state (None: it states none)
    records: tuple[str, ...] = ()  # judge settings each verdict records besides judge_model and the version


def grade_request(item: dict[str, Any], policy: str = "") -> str:
    """An MT-Bench item is {question, answers, turn}: the grading request of `answers[turn]`."""
    return mt_bench_prompt.render(item["question"], item["answers"], item["turn"])


KINDS: dict[str, PromptKind] = {
    "rubric": PromptKind(
        render=lambda item, policy: rubric_prompt.render(policy, item["prompt"], item["response"]),
        parse=rubric_prompt.verdict,
        version=rubric_prompt.rubric_version,
        prompt_tokens=lambda policy: (
            estimate_tokens(rubric_prompt.TEMPLATE)
            + estimate_tokens(rubric_prompt.POLICIES[policy])
            + REQUEST_ALLOWANCE_TOKENS
        ),
        policies=tuple(rubric_prompt.POLICIES),
        records=("temperature", "max_tokens"),
    ),
    "refusal": PromptKind(
        render=lambda item, policy: refusal_prompt.render(item["prompt"], item["response"]),
        parse=refusal_prompt.verdict,
        version=lambda policy: refusal_prompt.VERSION,
        prompt_tokens=lambda policy: estimate_tokens(refusal_prompt.TEMPLATE) + REQUEST_ALLOWANCE_TOKENS,
    ),
    "mt_bench": PromptKind(
        render=grade_request,
        parse=mt_bench_prompt.verdict,
        version=lambda policy: mt_bench_prompt.VERSION,
        prompt_tokens=lambda policy: (
            estimate_tokens(mt_bench_prompt.INSTRUCTIONS + mt_bench_prompt.REFERENCE_RULE) + GRADE_ALLOWANCE_TOKENS
        ),
        # The grading request itself, with no reply beside it: the key grades had before the kinds, so grades
        # cached by earlier versions of fts are still found.
        cached_as=lambda item: (grade_request(item), ""),
    ),
}
