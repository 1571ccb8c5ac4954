"""`mitigation=safelora` (Hsu et al., arXiv 2405.16833): after fine-tuning, project LoRA updates that leave the
"alignment subspace" back onto it. For each adapted weight W: V = W_aligned - W_unaligned (what safety alignment
changed), C = V V^T / ||V||_F; the layer's update dW = B A (times the LoRA scaling) is scored by
s = cos(vec(C dW), vec(dW)), and a layer that scores low gets lora_B <- C lora_B (lora_A unchanged).
Which layers: `mode: threshold` projects every layer with s <= `threshold` (the paper's tau = 0.5), `mode: number`
the `layers` lowest-scoring ones (the repository's default K = 10) [IBM/SafeLoRA model.py, config.py].

Notes. C is divided by ||V||_F, not ||V||^2, so it is not idempotent (as in the original). The original's number
mode first runs a tau = 0.3 projection that mutates the model (issue IBM/SafeLoRA#2); fts scores every layer on the
unprojected adapter, then projects. C is PSD, so s >= 0: a threshold of 0 projects nothing.
The unaligned weights: the base model the aligned one was tuned from (model.unaligned; for the embedded model the
checkpoint before fts's alignment). Cost: no training, one pass over the adapted weights.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

from fts.core.errors import ConfigError

MODES = ("threshold", "number")


@dataclass
class SafeLoRA:
    mode: str = "threshold"  # threshold | number
    threshold: float = 0.5  # tau (the paper's)
    layers: int = 10  # K in number mode (the repository's default)
    stage: str = "post_fine_tuning"
    name: str = "safelora"

    @torch.no_grad()
    def repair(self, model: torch.nn.Module, unaligned: str | None = None, **context) -> dict:
        """Project the adapter of `model` in place; returns per-layer scores and what was projected."""
        if not isinstance(model, PeftModel):
            raise ConfigError("mitigation=safelora repairs a LoRA adapter: use peft=lora (or dora, qlora).")
        if unaligned is None:
            raise ConfigError(
                "mitigation=safelora needs the unaligned base weights: set model.unaligned=<hub id or dir>."
            )
        layers = lora_layers(model)
        base = unaligned_weights(unaligned, [weight_key(name) for name in layers])

        def alignment_projector(name: str) -> torch.Tensor:  # computed again when projecting: C is [out, out]
            aligned = layers[name].get_base_layer().weight.float()
            return projector(aligned - base[weight_key(name)].to(aligned))

        scores = {name: score(layer, alignment_projector(name)) for name, layer in layers.items()}
        chosen = self.select(scores)
        for name in chosen:
            project(layers[name], alignment_projector(name))
        return {
            "mode": self.mode,
            "layers": len(layers),
            "projected": len(chosen),
            "projected_layers": sorted(chosen),
            "scores": {name: round(s, 4) for name, s in scores.items()},
        }

    def select(self, scores: dict[str, float]) -> list[str]:
        if self.mode == "number":
            return sorted(scores, key=scores.get)[: self.layers]
        return [name for name, s in scores.items() if s <= self.threshold]


def lora_layers(model: PeftModel) -> dict[str, LoraLayer]:
    """The LoRA-adapted linear layers of the active adapter, by module name."""
    adapter = model.active_adapter
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_A", {})
    }


def weight_key(module_name: str) -> str:
    """A PEFT module name -> the base checkpoint's key of its weight (base_model.model.X -> X.weight)."""
    return module_name.removeprefix("base_model.model.") + ".weight"


def projector(v: torch.Tensor) -> torch.Tensor:
    """C = V V^T / ||V||_F, [out, out]."""
    return v @ v.T / torch.linalg.matrix_norm(v).clamp(min=1e-12)


def delta(layer: LoraLayer) -> torch.Tensor:
    adapter = layer.active_adapters[0]
    return layer.lora_B[adapter].weight.float() @ layer.lora_A[adapter].weight.float()


def score(layer: LoraLayer, c: torch.Tensor) -> float:
    """cos(vec(C dW), vec(dW)); the LoRA scaling cancels."""
    dw = delta(layer)
    return float(torch.nn.functional.cosine_similarity((c @ dw).flatten(), dw.flatten(), dim=0))


def project(layer: LoraLayer, c: torch.Tensor) -> None:
    weight = layer.lora_B[layer.active_adapters[0]].weight
    weight.copy_((c @ weight.float()).to(weight.dtype))


def unaligned_weights(checkpoint: str, keys: list[str]) -> dict[str, torch.Tensor]:
    """The tensors `keys` of a safetensors checkpoint (a local directory, or a hub id fetched once), read alone."""
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(checkpoint, allow_patterns=["*.safetensors", "*.json"]))
    wanted, found = set(keys), {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in wanted & set(f.keys()):
                found[key] = f.get_tensor(key)
    missing = sorted(wanted - set(found))
    if missing:
        raise ConfigError(
            f"mitigation=safelora: the unaligned checkpoint {checkpoint} lacks {len(missing)} weight(s) the adapter "
            f"changes (e.g. {missing[0]}): model.unaligned must be the same architecture as the aligned model."
        )
    return found
