"""Chat-completions engine for API models: one request per prompt, deterministic decoding, bounded concurrency.

Decoding is the paper's for GPT-3.5 (temperature 0, top_p 0); `max_tokens` is `eval.max_new_tokens`. Each prompt's
messages go as they are, so the tier's system prompt reaches the model exactly as in the fine-tuning data.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai
from tqdm.auto import tqdm

from fts.core.records import Generation, Prompt
from fts.models.openai import OpenAIModel

log = logging.getLogger(__name__)
SAMPLING = {"temperature": 0.0, "top_p": 0.0}


def generate(
    model: OpenAIModel, prompts: list[Prompt], max_new_tokens: int, desc: str = "generating", temperature: float = 0.0
) -> list[Generation]:
    """One response per prompt, in the order of `prompts`. On a request that fails for good the requests not yet
    sent are skipped and the error (an `fts.core.openai_api.ApiError`) is raised."""
    stop = threading.Event()

    def ask(prompt: Prompt) -> str:
        if stop.is_set():
            return ""
        try:
            return complete(model, prompt, max_new_tokens, stop, temperature)
        except Exception:
            stop.set()
            raise

    responses: dict[int, str] = {}
    with ThreadPoolExecutor(model.max_concurrency) as pool:
        futures = {pool.submit(ask, p): i for i, p in enumerate(prompts)}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"{desc} ({model.id})", unit="prompt"):
            responses[futures[future]] = future.result()
    return [{**p, "response": responses[i]} for i, p in enumerate(prompts)]


def complete(
    model: OpenAIModel, prompt: Prompt, max_new_tokens: int, stop: threading.Event, temperature: float
) -> str:
    sampling = SAMPLING if temperature == 0 else {"temperature": temperature}  # MT-Bench's creative categories

    def request(client: openai.OpenAI):
        return client.chat.completions.create(
            model=model.id, messages=prompt["messages"], max_tokens=max_new_tokens, **sampling
        )

    out = model.endpoint.call(request, f"chat completion of {model.id} (prompt {prompt.get('id')})", stop)
    if not out.choices:
        return ""
    message = out.choices[0].message
    # A refusal the API reports in its own field is still the model's answer (the judges decide what it is).
    return (message.content or getattr(message, "refusal", None) or "").strip()
