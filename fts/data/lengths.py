"""Prompts and examples too long for the model, found before anything is tokenized, trained or generated.

One 50 MB prompt line once passed every check and grew generation to 24 GB before the kernel killed the run. Two
checks stop that: before any model loads, a text longer than `max_tokens * CHARS_PER_TOKEN` characters cannot fit
under any tokenizer in use (their pieces are at most a few dozen characters); once the tokenizer is loaded, the
rendered prompt is counted exactly (`fts.stages.evaluation.fit_to_context`). Evaluation prompts follow `eval.too_long`:
fail (default: the run stops, naming the prompts) or drop (they are skipped, and the manifest counts them).
"""

import logging
from collections.abc import Callable

from fts.core.errors import DataError
from fts.core.records import Example, Prompt

log = logging.getLogger(__name__)
CHARS_PER_TOKEN = 64  # far above any tokenizer's longest piece: a text past this many characters per token is too long
TOO_LONG_CHOICES = ("fail", "drop")
# Where each evaluation set comes from, for the error message.
SET_KEYS = {
    "harmful": "eval.benchmark",
    "benign": "eval.benign",
    "xstest": "eval.xstest",
    "utility": "eval.utility",
    "mt_bench": "eval.mt_bench.questions",
}


def text_chars(record: Prompt | Example) -> int:
    return sum(len(m["content"]) for m in record["messages"]) + sum(len(t) for t in record.get("turns") or [])


def min_tokens(record: Prompt | Example) -> int:
    """A lower bound on the tokens of a record under any tokenizer."""
    return -(-text_chars(record) // CHARS_PER_TOKEN)


def fit_prompts(
    prompts: list[Prompt], max_tokens: int, policy: str, measure: Callable[[Prompt], int], unit: str
) -> tuple[list[Prompt], int]:
    """`eval.too_long` applied to the prompts `measure` puts over `max_tokens`: (the prompts kept, how many were
    dropped). `unit` says what `measure` counts, for the message."""
    over = [(p, n) for p in prompts if (n := measure(p)) > max_tokens]
    if not over:
        return prompts, 0
    listing = "; ".join(
        f"{SET_KEYS.get(p.get('set', ''), 'eval')} prompt '{p['id']}' ({n} {unit})" for p, n in over[:3]
    )
    what = f"{len(over)} of {len(prompts)} evaluation prompts do not fit model.max_length={max_tokens} tokens"
    if policy == "fail" or len(over) == len(prompts):
        raise DataError(
            f"{what}: {listing}. Shorten or remove them in their file, raise model.max_length, or set "
            "eval.too_long=drop to skip them (the manifest counts what was skipped)."
        )
    log.warning("%s (%s): skipped (eval.too_long=drop)", what, listing)
    kept = [p for p in prompts if all(p is not o for o, _ in over)]
    return kept, len(over)


def check_example_chars(examples: list[Example], max_tokens: int, policy: str) -> list[Example]:
    """Fine-tuning examples that cannot fit `train.max_length` under any tokenizer: dropped with train.too_long=drop,
    else the run stops before the tokenizer ever sees them (warn would make TRL tokenize all of a huge text)."""
    over = [ex for ex in examples if min_tokens(ex) > max_tokens]
    if not over:
        return examples
    listing = ", ".join(f"{ex['source']} ({text_chars(ex)} characters)" for ex in over[:3])
    what = f"{len(over)} of {len(examples)} fine-tuning examples are far longer than train.max_length={max_tokens}"
    if policy != "drop" or len(over) == len(examples):
        raise DataError(
            f"{what} tokens: {listing}. Shorten them in their file, raise model.max_length, or set "
            "train.too_long=drop to skip them."
        )
    log.warning("%s tokens (%s): dropped (train.too_long=drop)", what, listing)
    return [ex for ex in examples if all(ex is not o for o in over)]
