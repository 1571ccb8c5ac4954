"""The API judge: one class for every judge that asks a model behind an OpenAI-compatible chat API.

What it asks is its prompt kind (`kind`, fts.judges.kinds): `rubric` (`judge=gpt4`, the paper's GPT-4 judge, and
`judge=openai_compatible`, any server speaking the API, e.g. vLLM serving an open judge model), `refusal`
(`judge=gpt4_refusal`), `strongreject` (`judge=strongreject`) and `mt_bench` (the MT-Bench grader,
`eval.mt_bench.grader`). Everything else is shared: the
client, key checks and retries of `fts.core.openai_api.Endpoint`, the dollar budget and spend ledger
(fts.judges.spend), the verdict cache (fts.judges.verdict_cache).

Every verdict is cached in sqlite (keyed by judge identity + prompt version + request + reply) as it arrives; only
requests missing from the cache are sent, through a bounded thread pool, with exponential backoff on rate limits,
server errors, timeouts and connection errors, and a dollar budget checked before each request.
"""

import logging
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from functools import cached_property
from typing import Any

import openai
from tqdm.auto import tqdm

from fts.core import openai_api
from fts.core.errors import ConfigError
from fts.core.records import Verdict
from fts.judges.kinds import KINDS, PromptKind, PromptSettings, prompt_settings
from fts.judges.spend import Ledger, Spend, estimate_tokens
from fts.judges.verdict_cache import VerdictCache, verdict_key

log = logging.getLogger(__name__)


class JudgeError(openai_api.ApiError):
    """The judge endpoint refused a request or stayed unreachable after every retry."""


def chat_price(prices: dict[str, dict[str, float]], model: str) -> tuple[float, float] | None:
    """USD per 1M (input, output) tokens of `model` in a price table (conf/prices/openai.yaml), or None."""
    price = prices.get(model) or {}
    return (price["input"], price["output"]) if "input" in price and "output" in price else None


def judge_endpoint(key: str, model: str, **settings: Any) -> openai_api.Endpoint:
    """A judge's endpoint: a request that fails for good is a JudgeError naming `<key>.model` (the cache keeps what
    was judged before it)."""
    note = " Verdicts so far are cached; a rerun resumes."
    return openai_api.Endpoint(key, **settings, model_field="model", may=f"use {model}", note=note, error=JudgeError)


class ApiJudge:
    """An API judge of one prompt kind (`kind`: a key of fts.judges.kinds.KINDS); `config_key` is where its
    settings live (default judge.<name>), named in every error message. A rubric judge states `policy`, or sends the
    user's `template_file` instead of fts's rubric, and reads the score after the tag `score_after_tag` says."""

    def __init__(
        self,
        model: str,
        kind: str = "rubric",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        organization: str | None = None,
        policy: str = "meta",
        template_file: str | None = None,
        score_after_tag: str = "last",
        temperature: float = 0.0,
        top_p: float | None = None,
        max_tokens: int = 1024,
        request_timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        max_concurrency: int = 8,
        prices: dict[str, dict[str, float]] | None = None,
        max_usd: float | None = None,
        cache_dir: str | None = None,
        name: str = "gpt4",
        config_key: str | None = None,
    ) -> None:
        # Cheap and lenient on purpose: composing/instantiating configs must stay instant; `preflight` checks.
        self.name, self.model, self.policy = name, model, policy
        self.template_file, self.score_after_tag = template_file, score_after_tag  # read and checked by `prompt`
        self.config_key = config_key or f"judge.{name}"
        if kind not in KINDS:
            raise ConfigError(f"{self.config_key}.kind must be one of {sorted(KINDS)}, got {kind!r}.")
        self.kind_name = kind
        self.kind: PromptKind = KINDS[kind]
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.max_concurrency = max_concurrency
        self.endpoint = judge_endpoint(
            self.config_key,
            model,
            base_url=base_url,
            api_key_env=api_key_env,
            organization=organization,
            timeout_s=request_timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
        )
        self.prices = prices or {}
        self.ledger = Ledger(chat_price(self.prices, model), max_usd, self.config_key)
        self.cache = VerdictCache(cache_dir)
        self._stop = threading.Event()

    # ---- identity and preflight -------------------------------------------------------------------------------

    @cached_property
    def prompt(self) -> PromptSettings:
        """The prompt settings, checked, with the template file's text: read once, on first use (preflight, before
        any model loads; or the first verdict), so that a run never mixes two versions of the file."""
        return prompt_settings(self.kind_name, self.config_key, self.policy, self.template_file, self.score_after_tag)

    def version(self) -> str:
        return self.kind.version(self.prompt)

    def identity(self) -> dict:
        """What determines a verdict besides request and reply: the cache key's judge part."""
        return {
            "model": self.model,
            "host": self.endpoint.host(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "rubric_version": self.version(),
        }

    def check(self) -> None:
        _ = self.prompt  # reading it checks the prompt settings and reads the template file

    def preflight(self, n_verdicts: int) -> None:
        key, prompt = self.config_key, self.prompt
        self.endpoint.check_key()
        if self.ledger.price is None and self.endpoint.base_url is None and self.ledger.max_usd is not None:
            raise ConfigError(
                f"{key}.prices has no input/output price for model {self.model!r}, so the budget cannot be checked. "
                f"Add one, e.g. '+{key}.prices.{self.model}={{input: 2.5, output: 10}}' (USD per 1M tokens), or set "
                f"{key}.max_usd=null."
            )
        self.ledger.check_estimate(n_verdicts, self.kind.prompt_tokens(prompt), self.max_tokens)
        self.endpoint.check_reachable()

    def usage(self) -> dict:
        return self.ledger.usage()

    # ---- judging ----------------------------------------------------------------------------------------------

    def judge(self, items: list[dict[str, Any]]) -> list[Verdict]:
        """One verdict per item, in order. Items are what the kind reads: Generations (`prompt`, `response`) for
        rubric and refusal, {question, answers, turn} for mt_bench."""
        identity = self.identity()
        keys = [verdict_key(identity, *self.kind.cached_as(item)) for item in items]
        known = self.cache.get_many(keys)
        self.ledger.cached += sum(k in known for k in keys)
        pending = {k: item for k, item in zip(keys, items) if k not in known}  # identical rows: one request
        known |= self.ask_all(pending)
        # which prompt judged (the cache key holds it through the version; verdicts cached before it was recorded
        # get it here too)
        described = self.kind.describe(self.prompt) if self.kind.describe else {}
        if self.kind.score_metric is not None:  # what the score means, for fts.results.metrics
            described["score_metric"] = self.kind.score_metric
        return [{**known[k], "judge": self.name, **described} for k in keys]

    def ask_all(self, pending: dict[str, dict[str, Any]]) -> dict[str, Verdict]:
        """Send the requests (bounded concurrency), caching each verdict as it arrives. On a failure the requests
        not yet started are skipped, finished verdicts are kept, then the error is raised."""
        results: dict[str, Verdict] = {}
        if not pending:
            return results
        self._stop.clear()
        error: BaseException | None = None
        with self.cache.open() as writer, ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = {pool.submit(self.ask_or_stop, item): key for key, item in pending.items()}
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"judge {self.name}", unit="verdict"):
                try:
                    results[futures[future]] = verdict = future.result()
                except CancelledError:
                    continue
                except Exception as e:  # noqa: BLE001 - re-raised below, after the finished verdicts are saved
                    error = error or e
                    continue
                writer.put(futures[future], verdict)
        if error is not None:
            raise error
        return results

    def ask_or_stop(self, item: dict[str, Any]) -> Verdict:
        """`ask`; a failure sets the stop flag, so queued requests return at once instead of being sent. (Not
        Future.cancel: as_completed never yields a future cancelled by shutdown(cancel_futures=True): it hangs.)"""
        try:
            return self.ask(item)
        except CancelledError:
            raise
        except Exception:
            self._stop.set()
            raise

    def ask(self, item: dict[str, Any]) -> Verdict:
        answer = self.complete(self.kind.render(item, self.prompt), self.kind.system(self.prompt))
        settings = {field: getattr(self, field) for field in self.kind.records}
        return {
            "judge": self.name,
            **self.kind.parse(answer, self.prompt),
            "judge_model": self.model,
            **settings,
            "rubric_version": self.version(),
        }

    def complete(self, text: str, system: str | None = None) -> str:
        """One chat completion (the request `text`, after the `system` message when there is one) through the
        endpoint (retried with backoff), paid for through the ledger."""
        sampling = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.top_p is not None:
            sampling["top_p"] = self.top_p
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": text})

        def request(client: openai.OpenAI):
            return client.chat.completions.create(model=self.model, messages=messages, **sampling)

        spend = Spend(self.ledger, estimate_tokens((system or "") + text), self.max_tokens, self._stop)
        out = self.endpoint.call(request, "request", meter=spend)
        return (out.choices[0].message.content or "") if out.choices else ""
