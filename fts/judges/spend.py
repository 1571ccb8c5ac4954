"""Token and dollar accounting of an API judge, and the budget guard (`max_usd`).

Before each request the worst case (estimated prompt tokens + `max_tokens` out) is reserved; a request whose
reservation would take the spend past `max_usd` is not sent. After the reply the reservation is replaced by the
billed usage. Thread-safe: the judge's worker threads share one ledger. `Spend` is how a request reaches it: the
hooks (`fts.core.openai_api.Meter`) that `Endpoint.call` runs around each attempt.
"""

import threading
from concurrent.futures import CancelledError
from typing import Any

from fts.core.errors import ConfigError

CHARS_PER_TOKEN = 4  # rough English average; good enough for a budget guard, exact usage comes back from the API


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


class Ledger:
    def __init__(self, price: tuple[float, float] | None, max_usd: float | None, key: str) -> None:
        self.price = price  # USD per 1M (input, output) tokens; None = free (e.g. a local server)
        self.max_usd = max_usd
        self.key = key  # the config key prefix named in messages, e.g. judge.gpt4
        self.lock = threading.Lock()
        self.requests = self.cached = self.retries = self.input_tokens = self.output_tokens = 0
        self.usd = self.reserved = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        if self.price is None:
            return 0.0
        return (input_tokens * self.price[0] + output_tokens * self.price[1]) / 1e6

    def check_estimate(self, n_requests: int, prompt_tokens: int, max_tokens: int) -> None:
        """Preflight: refuse a run whose worst-case cost is above the budget, before anything is spent."""
        estimate = n_requests * self.cost(prompt_tokens, max_tokens)
        if self.max_usd is not None and estimate > self.max_usd:
            raise ConfigError(
                f"{self.key}: judging {n_requests} responses may cost up to ${estimate:.2f} (about {prompt_tokens} "
                f"prompt tokens + {max_tokens} max_tokens each at ${self.price[0]}/${self.price[1]} per 1M tokens), "
                f"above {self.key}.max_usd={self.max_usd}. Raise it (e.g. {self.key}.max_usd={estimate * 1.2:.0f}), "
                f"lower {self.key}.max_tokens or eval.max_per_category; verdicts already cached cost nothing."
            )

    def reserve(self, prompt_tokens: int, max_tokens: int) -> float:
        amount = self.cost(prompt_tokens, max_tokens)
        with self.lock:
            if self.max_usd is not None and self.usd + self.reserved + amount > self.max_usd:
                raise ConfigError(
                    f"{self.key}: stopped before exceeding the budget: ${self.usd:.2f} spent, ${self.reserved:.2f} "
                    f"in flight, next request up to ${amount:.4f}, {self.key}.max_usd={self.max_usd}. Verdicts so "
                    f"far are cached: raise {self.key}.max_usd and rerun to finish without paying for them again."
                )
            self.reserved += amount
        return amount

    def settle(self, reserved: float, input_tokens: int | None, output_tokens: int | None) -> None:
        """Replace a reservation by the billed usage (None usage: a failed attempt, nothing billed)."""
        with self.lock:
            self.reserved -= reserved
            if input_tokens is None:
                self.retries += 1
                return
            self.requests += 1
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens or 0
            self.usd += self.cost(input_tokens, output_tokens or 0)

    def usage(self) -> dict:
        return {
            "requests": self.requests,
            "cached": self.cached,
            "retries": self.retries,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usd": round(self.usd, 6),
        }


class Spend:
    """The meter of one judge request: before each attempt, a stopped run sends nothing (another request failed for
    good) and the worst case is reserved; after it, the reservation is settled with the billed usage."""

    def __init__(self, ledger: Ledger, prompt_tokens: int, max_tokens: int, stop: threading.Event) -> None:
        self.ledger, self.prompt_tokens, self.max_tokens, self.stop = ledger, prompt_tokens, max_tokens, stop

    def begin(self) -> float:
        if self.stop.is_set():
            raise CancelledError()
        return self.ledger.reserve(self.prompt_tokens, self.max_tokens)

    def end(self, reserved: float, reply: Any | None) -> None:
        if reply is None:
            self.ledger.settle(reserved, None, None)
            return
        used = reply.usage
        if used is not None:
            self.ledger.settle(reserved, used.prompt_tokens, used.completion_tokens)
            return
        answer = (reply.choices[0].message.content or "") if reply.choices else ""
        self.ledger.settle(reserved, self.prompt_tokens, estimate_tokens(answer))
