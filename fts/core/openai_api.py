"""The OpenAI client as fts uses it: `Endpoint` is the one way to it, shared by the API judges and the MT-Bench
grader, the OpenAI model backend (chat engine, fine-tuning jobs), the moderation filter and the moderation judge
(both through `moderate`). `make_client` is the one
place the client is constructed. Its settings are one config node, conf/endpoint/openai.yaml, that every config
talking to the API pulls in through its defaults list.

Keys come from the environment only (the variable named by `api_key_env`), never from a config file, and never go
into an artifact, a log line or an error message. Transient failures (429, 408, 409, 5xx, timeouts, connection
errors) are retried with exponential backoff + jitter; anything else fails at once with a message naming the config
key to fix.
"""

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import openai

from fts.core.errors import ConfigError, FtsError

T = TypeVar("T")
RETRY_STATUS = (408, 409, 429)  # plus every 5xx
PLACEHOLDER_KEY = "EMPTY"  # a custom endpoint without a key (a local server) still needs some key in the client


class ApiError(FtsError):
    """An OpenAI-compatible endpoint refused a request or stayed unreachable after every retry."""


class Meter(Protocol):
    """Hooks around every attempt of `Endpoint.call`, e.g. the spend ledger of an API judge."""

    def begin(self) -> Any:
        """Before each attempt; what it returns goes to `end`. Raising stops the call (budget spent, run stopped)."""

    def end(self, ticket: Any, reply: Any | None) -> None:
        """After each attempt: `reply` is the response, or None when the attempt failed (nothing billed)."""


def api_key(env_name: str, base_url: str | None) -> str | None:
    return os.environ.get(env_name) or (PLACEHOLDER_KEY if base_url else None)


def host(base_url: str | None) -> str:
    """Where requests go (part of cache keys: a local server and api.openai.com are different models)."""
    return urlparse(base_url).netloc if base_url else "api.openai.com"


def make_client(
    base_url: str | None, key: str | None, timeout_s: float, organization: str | None = None
) -> openai.OpenAI:
    for noisy in ("httpx", "httpx2"):  # one INFO line per request would drown the run log
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # max_retries=0: fts retries itself (bounded, with jitter, counted in its own usage records).
    return openai.OpenAI(base_url=base_url, api_key=key, organization=organization, max_retries=0, timeout=timeout_s)


def retryable(error: openai.APIError) -> bool:
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    status = getattr(error, "status_code", None)
    return status is not None and (status in RETRY_STATUS or status >= 500)


def backoff_delay(attempt: int, error: openai.APIError | None, backoff_s: float, max_backoff_s: float) -> float:
    """Exponential backoff with jitter (spreads retries of concurrent workers); a longer Retry-After wins."""
    wait = min(max_backoff_s, backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
    response = getattr(error, "response", None)
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after and retry_after.replace(".", "", 1).isdigit():
        wait = max(wait, min(float(retry_after), max_backoff_s))
    return wait


def check_reachable(base_url: str, key: str) -> None:
    """A TCP connect (no HTTP request, nothing billed): an unreachable endpoint fails before anything is spent."""
    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=10).close()
    except OSError as e:
        raise ConfigError(
            f"{key}: cannot connect to {url.hostname}:{port} ({e}). Start the server or fix the URL (it should end "
            "in /v1)."
        ) from None


def redact(text: str, secret: str | None) -> str:
    """An error text without the key in it (some servers echo the key they were given)."""
    return text.replace(secret, "<redacted>") if secret and secret != PLACEHOLDER_KEY else text


@dataclass
class Endpoint:
    """One OpenAI-compatible endpoint and its retry policy. `key` is the config prefix named in messages; a request
    that fails for good raises `error` naming `<key>.<model_field>` and what the key `may` do, then `note`."""

    key: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    organization: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    model_field: str = "path"
    may: str = "do this"
    note: str = ""
    error: type[ApiError] = ApiError
    _client: openai.OpenAI | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_config(cls, key: str, cfg: Any, **messages: Any) -> "Endpoint":
        """The endpoint a config node describes (the keys of conf/endpoint/openai.yaml); `messages`: model_field,
        may, note, error."""
        return cls(
            key=key,
            base_url=cfg.base_url,
            api_key_env=cfg.api_key_env,
            organization=cfg.get("organization"),
            timeout_s=cfg.request_timeout_s,
            max_retries=cfg.max_retries,
            backoff_s=cfg.backoff_s,
            max_backoff_s=cfg.max_backoff_s,
            **messages,
        )

    def host(self) -> str:
        return host(self.base_url)

    def preflight(self) -> None:
        """A key is there (or a custom endpoint that may not need one) and the endpoint answers a TCP connect."""
        self.check_key()
        self.check_reachable()

    def check_key(self) -> None:
        if api_key(self.api_key_env, self.base_url) is None:
            raise ConfigError(
                f"{self.key}: no API key. Set {self.api_key_env} in the environment (never in a config file), or set "
                f"{self.key}.base_url to an OpenAI-compatible endpoint."
            )

    def check_reachable(self) -> None:
        if self.base_url:  # a TCP connect: an unreachable endpoint fails before any model loads
            check_reachable(self.base_url, f"{self.key}.base_url")

    def client(self) -> openai.OpenAI:
        with self._lock:
            if self._client is None:
                key = api_key(self.api_key_env, self.base_url)
                self._client = make_client(self.base_url, key, self.timeout_s, self.organization)
            return self._client

    def call(
        self,
        request: Callable[[openai.OpenAI], T],
        what: str,
        stop: threading.Event | None = None,
        meter: Meter | None = None,
    ) -> T:
        """`request(client)`, retried on transient failures; `stop` set by another worker ends the retries; `meter`
        sees every attempt."""
        for attempt in range(self.max_retries + 1):
            ticket = meter.begin() if meter is not None else None
            try:
                reply = request(self.client())
            except openai.APIError as e:
                if meter is not None:
                    meter.end(ticket, None)
                if not retryable(e) or attempt == self.max_retries or (stop is not None and stop.is_set()):
                    raise self.failure(e, attempt + 1, what) from None
                time.sleep(backoff_delay(attempt, e, self.backoff_s, self.max_backoff_s))
                continue
            if meter is not None:
                meter.end(ticket, reply)
            return reply
        raise AssertionError("unreachable")

    def failure(self, error: openai.APIError, attempts: int, what: str) -> ApiError:
        secret = api_key(self.api_key_env, self.base_url)
        text = failure_text(self.key, what, error, attempts, self.api_key_env, secret, self.model_field, self.may)
        return self.error(text + self.note)


def moderate(api: Endpoint, model: str, texts: list[str], meter: Meter | None = None) -> list[dict[str, Any]]:
    """One moderation request for `texts`: per text {flagged, categories (the flagged ones, sorted)}."""
    reply = api.call(lambda c: c.moderations.create(model=model, input=texts), "moderation request", meter=meter)
    verdicts = []
    for result in reply.results:
        categories = result.categories.model_dump(by_alias=True) if result.categories else {}
        verdicts.append({"flagged": bool(result.flagged), "categories": sorted(k for k, v in categories.items() if v)})
    return verdicts


def failure_text(
    key: str,
    what: str,
    error: openai.APIError,
    attempts: int,
    api_key_env: str,
    secret: str | None,
    model_field: str,
    may: str,
) -> str:
    """What a request that failed for good says: the config key, the error (the key redacted) and what to check.
    `model_field` is the config field naming the model (`<key>.<model_field>`); `may` what the key must allow."""
    status = getattr(error, "status_code", None)
    hints = {
        401: f"check the key in {api_key_env}",
        403: f"check that the key in {api_key_env} may {may}",
        404: f"check {key}.{model_field} and {key}.base_url",
    }
    hint = hints.get(
        status,
        f"the endpoint refused the request or is unreachable: fix the cause above, or retry later (raise "
        f"{key}.max_retries / {key}.request_timeout_s for a flaky endpoint)",
    )
    kind = f"{type(error).__name__}{f', HTTP {status}' if status else ''}"
    return f"{key}: {what} failed after {attempts} attempt(s) ({kind}: {redact(str(error), secret)}). {hint}."
