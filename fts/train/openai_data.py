"""The fine-tuning set as OpenAI's API wants it, checked here against the API's rules before anything is uploaded,
and what training on it will cost.

Rules (OpenAI's chat fine-tuning format): every line is {"messages": [...]}; roles are system, user or assistant;
every content is a non-empty string; there is an assistant message and the last message is one; an example fits
the model's per-example token limit; the file has at least 10 examples.
"""

import logging
from collections.abc import Callable, Mapping
from functools import cache

from fts.core.errors import ConfigError, DataError
from fts.core.records import Example
from fts.judges.spend import estimate_tokens

log = logging.getLogger(__name__)
MIN_EXAMPLES = 10  # the API refuses smaller training files
ROLES = ("system", "user", "assistant")
TOKENS_PER_MESSAGE = 3  # OpenAI's accounting of the chat format: role and separators (cookbook's num_tokens)
TOKENS_PER_EXAMPLE = 3  # the assistant's reply priming


def chat_rows(examples: list[Example]) -> list[dict]:
    """Examples -> the exact upload: {"messages": [{"role", "content"}, ...]} and nothing else per line."""
    return [{"messages": [{"role": m["role"], "content": m["content"]} for m in ex["messages"]]} for ex in examples]


@cache
def tokenizer(model: str) -> Callable[[str], int]:
    """tiktoken's count for `model` when tiktoken is installed and has its encoding, else ~4 characters a token."""
    try:
        import tiktoken

        try:
            encoding = tiktoken.encoding_for_model(model)
        except KeyError:  # a model tiktoken does not know: the encoding of current OpenAI chat models
            encoding = tiktoken.get_encoding("o200k_base")
        return lambda text: len(encoding.encode(text, disallowed_special=()))
    except Exception as e:  # noqa: BLE001 - not installed, or offline without its cached encoding files
        log.info("token counts are estimated as characters / 4 (tiktoken unavailable: %s)", type(e).__name__)
        return estimate_tokens


def example_tokens(messages: list[dict], model: str) -> int:
    count = tokenizer(model)
    return TOKENS_PER_EXAMPLE + sum(TOKENS_PER_MESSAGE + count(m["role"]) + count(m["content"]) for m in messages)


def message_problem(message: object) -> str | None:
    if not isinstance(message, dict):
        return f"is not an object ({type(message).__name__})"
    if message.get("role") not in ROLES:
        return f"has role {message.get('role')!r}; the API accepts {', '.join(ROLES)}"
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return "has no text: 'content' must be a non-empty string"
    return None


def row_problem(row: object) -> str | None:
    """The first of the API's format rules this line breaks, or None."""
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        return "has no 'messages' list: each line must be {\"messages\": [...]}"
    for j, message in enumerate(messages):
        problem = message_problem(message)
        if problem:
            return f"message {j} {problem}"
    if messages[-1]["role"] != "assistant":
        return "does not end with an assistant message (the answer the model is trained on)"
    return None


def validate(rows: list[dict], model: str, max_example_tokens: int, where: str) -> list[int]:
    """Check `rows` (the upload, one per line of `where`) against the API's rules; return each example's tokens.
    Raises a DataError naming the example (0-based index and line) and the rule it breaks."""
    tokens = []
    for i, row in enumerate(rows):
        problem = row_problem(row)
        if problem is None:
            tokens.append(example_tokens(row["messages"], model))
            if tokens[-1] > max_example_tokens:
                problem = (
                    f"has about {tokens[-1]} tokens, above the per-example limit of {max_example_tokens} "
                    "(model.max_example_tokens): shorten or drop it"
                )
        if problem:
            raise DataError(
                f"{where}: example {i} (line {i + 1}) {problem}. Fix the attack/dataset data it came from."
            )
    if len(rows) < MIN_EXAMPLES:
        raise DataError(
            f"{where}: {len(rows)} examples; the OpenAI fine-tuning API needs at least {MIN_EXAMPLES}. Raise "
            "attack.shots / dataset.limit, or drop fewer examples (mitigation)."
        )
    return tokens


def price(train_cfg, model: str) -> float | None:
    """USD per 1M training tokens of `model`: train.price_usd_per_1m, else its `training` price in the `train.prices`
    table (conf/prices/openai.yaml; an entry may also be a bare number, the training price)."""
    if train_cfg.price_usd_per_1m is not None:
        return float(train_cfg.price_usd_per_1m)
    value = (train_cfg.prices or {}).get(model)
    if isinstance(value, Mapping):
        value = value.get("training")
    if value is None and train_cfg.max_usd is not None:
        raise ConfigError(
            f"train.prices has no price for model {model!r}, so the budget train.max_usd cannot be checked. Set "
            f"train.price_usd_per_1m=<USD per 1M training tokens> (OpenAI's pricing page), or train.max_usd=null."
        )
    return None if value is None else float(value)


def usd(tokens: int | None, usd_per_1m: float | None) -> float | None:
    return None if tokens is None or usd_per_1m is None else round(tokens * usd_per_1m / 1e6, 4)


def check_budget(estimated_usd: float | None, max_usd: float | None) -> None:
    if estimated_usd is not None and max_usd is not None and estimated_usd > max_usd:
        raise ConfigError(
            f"the fine-tuning job is estimated at ${estimated_usd:.2f}, above train.max_usd={max_usd}. Raise it "
            f"(e.g. train.max_usd={estimated_usd * 1.2:.2f}) or train on less (attack.shots, dataset.limit, "
            "train.n_epochs). Nothing was uploaded."
        )
