"""The prompt kinds of the API judge: how one kind of question is put to the judge model and its answer read.

`ApiJudge(kind=...)` (fts.judges.api) looks its kind up in `KINDS`; the client, retries, budget, verdict cache and
spend ledger are the same for every kind. A new kind is one more entry here, with its prompt in a module of its own.
What the judge's settings choose in a prompt (policy, the user's template, the score rule) is one `PromptSettings`,
checked by `prompt_settings`.

- rubric: the paper's 1-5 harmfulness rubric (`judge=gpt4`, `judge=openai_compatible`), fts.judges.rubric_prompt,
  or the user's own template of it (`template_file`, fts.judges.template)
- refusal: XSTest's three classes (`judge=gpt4_refusal`), fts.judges.refusal_prompt
- strongreject: StrongREJECT's rubric, a [0, 1] score (`judge=strongreject`), fts.judges.strongreject_prompt, or the
  user's own template of it
- mt_bench: MT-Bench single-answer grading, 1-10 (`eval.mt_bench.grader`), fts.judges.mt_bench_prompt
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fts.core.errors import ConfigError
from fts.judges import mt_bench_prompt, refusal_prompt, rubric_prompt, strongreject_prompt, template
from fts.judges.spend import estimate_tokens

REQUEST_ALLOWANCE_TOKENS = 512  # preflight estimate of request + reply tokens on top of the prompt itself
GRADE_ALLOWANCE_TOKENS = 1024  # an MT-Bench grading request's question(s) and answers


@dataclass(frozen=True)
class PromptSettings:
    """What a judge's settings choose in its prompt and in the reading of the answer. The rubric kind reads all of
    them; StrongREJECT takes a template; the refusal and MT-Bench prompts state no policy and take no template."""

    policy: str = "meta"  # the usage policy fts's rubric states (rubric_prompt.POLICIES)
    template: str | None = None  # the text of judge.<name>.template_file, sent instead of fts's rubric
    score_after_tag: str = "last"  # which score tag counts (rubric_prompt.SCORE_RULES)


def generation(item: dict[str, Any]) -> tuple[str, str]:
    """A Generation's (request, reply): what the verdict cache key of a judged response hashes."""
    return item["prompt"], item["response"]


@dataclass(frozen=True)
class PromptKind:
    """`render`, `parse`, `version` of one kind of judge prompt, plus what the judge needs to price and cache it."""

    render: Callable[[dict[str, Any], PromptSettings], str]  # (item, settings) -> the request sent to the judge
    parse: Callable[[str, PromptSettings], dict[str, Any]]  # the judge model's answer -> the verdict's own fields
    version: Callable[[PromptSettings], str]  # the prompt's version (in every verdict and every cache key)
    prompt_tokens: Callable[[PromptSettings], int]  # preflight estimate of one request's prompt tokens
    cached_as: Callable[[dict[str, Any]], tuple[str, str]] = generation  # item -> the pair its cache key hashes
    policies: tuple[str, ...] | None = None  # the usage policies the prompt can state (None: it states none)
    records: tuple[str, ...] = ()  # judge settings each verdict records besides judge_model and the version
    # what each verdict records of its prompt (the report says which one judged)
    describe: Callable[[PromptSettings], dict[str, Any]] | None = None
    system: Callable[[PromptSettings], str | None] = lambda settings: None  # a system message before the request
    template_slots: tuple[str, str] | None = None  # the (request, reply) slots of a template_file; None: takes none
    score_rules: bool = False  # whether score_after_tag chooses which score tag counts
    # the metric a verdict's `score` feeds (fts.results.metrics), recorded in every verdict: harmfulness (1-5: mean
    # and share of 5s) or strongreject (the mean [0, 1] score); None: the kind gives no score
    score_metric: str | None = None


def grade_request(item: dict[str, Any], settings: PromptSettings | None = None) -> str:
    """An MT-Bench item is {question, answers, turn}: the grading request of `answers[turn]`."""
    return mt_bench_prompt.render(item["question"], item["answers"], item["turn"])


def rubric_request(item: dict[str, Any], settings: PromptSettings) -> str:
    """fts's rubric with its policy, or the user's template, with the (defused) request and reply in place."""
    if settings.template is not None:
        return template.fill(settings.template, item["prompt"], item["response"])
    return rubric_prompt.render(settings.policy, item["prompt"], item["response"])


def rubric_tokens(settings: PromptSettings) -> int:
    if settings.template is not None:
        return estimate_tokens(settings.template) + REQUEST_ALLOWANCE_TOKENS
    policy = rubric_prompt.POLICIES[settings.policy]
    return estimate_tokens(rubric_prompt.TEMPLATE) + estimate_tokens(policy) + REQUEST_ALLOWANCE_TOKENS


KINDS: dict[str, PromptKind] = {
    "rubric": PromptKind(
        render=rubric_request,
        parse=lambda answer, settings: rubric_prompt.verdict(answer, settings.score_after_tag),
        version=lambda s: rubric_prompt.rubric_version(s.policy, s.template, s.score_after_tag),
        prompt_tokens=rubric_tokens,
        policies=tuple(rubric_prompt.POLICIES),
        records=("temperature", "max_tokens"),
        # policy "template": the user's template_file judged, not fts's rubric with one of its policies
        describe=lambda s: {
            "policy": "template" if s.template is not None else s.policy,
            "score_after_tag": s.score_after_tag,
        },
        template_slots=template.SLOTS,
        score_rules=True,
        score_metric="harmfulness",
    ),
    "strongreject": PromptKind(
        render=lambda item, settings: strongreject_prompt.render(item["prompt"], item["response"], settings.template),
        parse=lambda answer, settings: strongreject_prompt.verdict(answer),
        version=lambda settings: strongreject_prompt.version(settings.template),
        prompt_tokens=lambda settings: (
            estimate_tokens(strongreject_prompt.SYSTEM + (settings.template or strongreject_prompt.TEMPLATE))
            + REQUEST_ALLOWANCE_TOKENS
        ),
        records=("temperature", "max_tokens"),
        describe=lambda s: {"policy": "template"} if s.template is not None else {},
        system=lambda settings: strongreject_prompt.SYSTEM,
        template_slots=strongreject_prompt.SLOTS,
        score_metric="strongreject",
    ),
    "refusal": PromptKind(
        render=lambda item, settings: refusal_prompt.render(item["prompt"], item["response"]),
        parse=lambda answer, settings: refusal_prompt.verdict(answer),
        version=lambda settings: refusal_prompt.VERSION,
        prompt_tokens=lambda settings: estimate_tokens(refusal_prompt.TEMPLATE) + REQUEST_ALLOWANCE_TOKENS,
    ),
    "mt_bench": PromptKind(
        render=grade_request,
        parse=lambda answer, settings: mt_bench_prompt.verdict(answer),
        version=lambda settings: mt_bench_prompt.VERSION,
        prompt_tokens=lambda settings: (
            estimate_tokens(mt_bench_prompt.INSTRUCTIONS + mt_bench_prompt.REFERENCE_RULE) + GRADE_ALLOWANCE_TOKENS
        ),
        # The grading request itself, with no reply beside it: the key grades had before the kinds, so grades
        # cached by earlier versions of fts are still found.
        cached_as=lambda item: (grade_request(item), ""),
    ),
}


def prompt_settings(
    kind: str, key: str, policy: str, template_file: str | None, score_after_tag: str
) -> PromptSettings:
    """The prompt settings of the judge at config key `key` (judge.<name>), checked, with the template file read.
    A ConfigError names the key and the fix (raised by preflight and by fts.validate, before any model loads)."""
    prompt = KINDS[kind]
    if prompt.template_slots is None and (template_file is not None or score_after_tag != "last"):
        raise ConfigError(
            f"{key}.template_file and {key}.score_after_tag choose a rubric judge's prompt and score (kind: rubric); "
            f"kind {kind} takes neither: remove them."
        )
    if not prompt.score_rules and score_after_tag != "last":
        raise ConfigError(
            f"{key}.score_after_tag chooses which score tag of a rubric judge's answer counts (kind: rubric); kind "
            f"{kind} reads the first number of each item: remove it."
        )
    if score_after_tag not in rubric_prompt.SCORE_RULES:
        raise ConfigError(
            f"{key}.score_after_tag must be last (fts's rule: the last well-formed score in the answer) or first "
            f"(the paper's: the number right after the first '#thescore:' tag), got {score_after_tag!r}."
        )
    if template_file is None and prompt.policies is not None and policy not in prompt.policies:
        raise ConfigError(
            f"{key}.policy must be one of {sorted(prompt.policies)}, got {policy!r} (its default is "
            "model.usage_policy: openai for OpenAI's models, meta for open ones)."
        )
    slots = prompt.template_slots
    text = None if template_file is None else template.read(template_file, f"{key}.template_file", slots)
    return PromptSettings(policy, text, score_after_tag)
