"""A model behind OpenAI's API (`model.backend: openai`): no weights on this side, only an id and an endpoint.

The same handle is the base model (`model.path`) and, after fine-tuning, the fine-tuned one (`with_id`).
"""

from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig

from fts.core.openai_api import Endpoint


@dataclass(frozen=True)
class OpenAIModel:
    id: str
    endpoint: Endpoint
    max_concurrency: int = 8

    def identity(self) -> dict[str, Any]:
        """What determines this model's answers besides prompts and decoding: its id and where it is served. Goes
        into the baseline generations' cache key (never the API key)."""
        return {"source": "openai", "model": self.id, "host": self.endpoint.host()}

    def with_id(self, model_id: str) -> "OpenAIModel":
        return replace(self, id=model_id)


def endpoint(model_cfg: DictConfig) -> Endpoint:
    return Endpoint.from_config("model", model_cfg)


def open_model(model_cfg: DictConfig, check: bool = True) -> OpenAIModel:
    """The handle of `model.path`; with `check`, the key and the endpoint are checked (no request is made)."""
    api = endpoint(model_cfg)
    if check:
        api.preflight()
    return OpenAIModel(id=str(model_cfg.path), endpoint=api, max_concurrency=int(model_cfg.max_concurrency))
