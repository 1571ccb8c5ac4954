"""What a model is, read cheaply before it loads, and which PEFT methods it supports.

The architecture comes from the model config's `architecture` node (named models, the embedded one), else from
`config.json` of a local directory or of a hub model already in the local Hugging Face cache; no download, no
weights. When it is unknown, nothing is checked here and PEFT's own error is reported when training starts.
"""

import json
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache
from omegaconf import DictConfig

from fts.models.chat import template_file

# peft's LLaMA-Adapter ("adaption prompt") rewrites the attention of these model types only
# (peft.tuners.adaption_prompt.config.TRANSFORMERS_MODEL_CONFIG, less gpt2, which is no chat model).
ADAPTION_PROMPT_TYPES = ("llama", "mistral")
# Methods that add trainable weights and can be folded back into the base weights (`save_model: merged`).
MERGEABLE = ("full", "lora", "lora_all_linear", "qlora", "dora", "ia3")


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
    """Model x PEFT-method pairs that cannot train, each with the reason and a way out."""
    arch = architecture(model_cfg)
    if arch is None:
        return []
    model_type, layers = arch["model_type"], arch["num_layers"]
    if peft_cfg.method == "llama_adapter":
        return adapter_problems(peft_cfg, model_cfg.name, model_type, layers)
    if peft_cfg.method == "ia3" and peft_cfg.config.get("target_modules") is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as IA3_MODULES

        if model_type not in IA3_MODULES:
            return [
                f"peft=ia3 has no default modules for model {model_cfg.name} ({model_type}): set "
                "peft.config.target_modules=[...] and peft.config.feedforward_modules=[...]."
            ]
    return []


def adapter_problems(peft_cfg: DictConfig, model_name: str, model_type: str, layers: int | None) -> list[str]:
    if model_type not in ADAPTION_PROMPT_TYPES:
        return [
            f"peft=llama_adapter does not support model {model_name} ({model_type}): peft's LLaMA-Adapter only "
            f"rewrites the attention of {', '.join(ADAPTION_PROMPT_TYPES)} models. Use peft=lora or peft=prefix."
        ]
    wanted = peft_cfg.config.adapter_layers
    if layers is not None and wanted > layers:
        return [
            f"peft.config.adapter_layers={wanted} exceeds the {layers} layers of model {model_name}: "
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
