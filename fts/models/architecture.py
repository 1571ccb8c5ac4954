"""What a model is, read cheaply before it loads, and whether the run's PEFT method supports it.

The architecture comes from the model config's `architecture` node (named models, the embedded one), else from
`config.json` of a local directory or of a hub model already in the local Hugging Face cache; no download, no
weights. When it is unknown, nothing is checked here and PEFT's own error is reported when training starts.

What a PEFT method supports is its config's `supports` node (conf/peft/*.yaml): `model_types` (null = any),
`default_modules` (peft's table of default target modules per model type, needed when `target_modules` is null).
"""

import json
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache
from hydra.utils import get_object
from omegaconf import DictConfig

from fts.models.chat import template_file


def architecture(model_cfg: DictConfig) -> dict[str, Any] | None:
    """{"model_type": ..., "num_layers": ...} of the model, or None when it cannot be known without a download."""
    declared = model_cfg.get("architecture")
    if declared:
        return {"model_type": declared.model_type, "num_layers": declared.get("num_layers")}
    if model_cfg.source != "hub":
        return None
    config_file = Path(str(model_cfg.path)).expanduser() / "config.json"
    if not config_file.is_file():
        try:
            cached = try_to_load_from_cache(str(model_cfg.path), "config.json", revision=model_cfg.get("revision"))
        except ValueError:  # not a valid repo id either (model_problems names the path)
            return None
        config_file = Path(cached) if isinstance(cached, str) else None
    if config_file is None:
        return None
    config = json.loads(config_file.read_text())
    return {"model_type": config.get("model_type"), "num_layers": config.get("num_hidden_layers")}


def peft_problems(peft_cfg: DictConfig, model_cfg: DictConfig) -> list[str]:
    """Model x PEFT-method pairs that cannot train (by the method's `supports`), each with the reason and a way out."""
    arch = architecture(model_cfg)
    if arch is None:
        return []
    method, name, model_type = peft_cfg.method, model_cfg.name, arch["model_type"]
    supports, config = peft_cfg.supports, peft_cfg.get("config") or {}
    if supports.model_types is not None and model_type not in supports.model_types:
        return [
            f"peft={method} does not support model {name} ({model_type}): it trains "
            f"{', '.join(supports.model_types) or 'no open'} models only (peft.supports.model_types). "
            "Use peft=lora or peft=prefix."
        ]
    defaults = supports.get("default_modules")
    if defaults and config.get("target_modules") is None and model_type not in get_object(defaults):
        also = " and peft.config.feedforward_modules=[...]" if "feedforward_modules" in config else ""
        return [
            f"peft={method} has no default modules for model {name} ({model_type}): set "
            f"peft.config.target_modules=[...]{also}."
        ]
    wanted, layers = config.get("adapter_layers"), arch["num_layers"]
    if wanted is not None and layers is not None and wanted > layers:
        return [
            f"peft.config.adapter_layers={wanted} exceeds the {layers} layers of model {name}: "
            f"set peft.config.adapter_layers={layers} (or fewer)."
        ]
    return []


def model_problems(model_cfg: DictConfig) -> list[str]:
    """A local model directory must hold a config and safetensors weights; a chat-template file must exist."""
    problems = []
    template = model_cfg.get("chat_template")
    path = template_file(str(template)) if template else None
    if path is not None and not path.is_file():
        problems.append(
            f"model.chat_template: '{template}' is neither a file nor a template in fts/models/templates/."
        )
    if model_cfg.source != "hub" or model_cfg.get("path") is None:
        return problems
    spec = str(model_cfg.path)
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            problems.append(f"model.path: '{spec}' has no config.json: point it at a saved model directory.")
        elif not any(local.glob("*.safetensors")):
            problems.append(
                f"model.path: '{spec}' has no *.safetensors weights; fts loads safetensors only "
                "(re-save the model with save_pretrained)."
            )
    elif spec.startswith(("/", ".", "~")):
        problems.append(f"model.path: local directory '{spec}' does not exist.")
    return problems
