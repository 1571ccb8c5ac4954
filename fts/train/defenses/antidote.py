"""`mitigation=antidote` (Huang et al., arXiv 2408.09600), a post-fine-tuning defense: prune the weights that drive
harmful output. The fine-tuned model reads a harmful calibration set (harmful request -> compliance, rendered with
the tokenizer's chat template); every pruned linear layer gets Wanda scores

    S_ij = |W_ij| * sqrt(mean over the calibration tokens of x_j^2)      (x: the layer's input)

and in each output row i the `sparsity` share of weights with the HIGHEST scores is set to zero: the reverse of
Wanda, which keeps those. Pruned layers: the user's LoRA factors (lora_A and lora_B of every adapted layer), or under
full fine-tuning the `full_modules` projections (q, k, v). Every layer's statistics come from one pass of the
unpruned model, as in the original (its inputs propagate through unpruned layers).

Source: git-disl/Antidote utils.py (prune_wanda_outlier, WrappedGPT, find_layers), script
finetune/antidote_poison_ratio.sh: dense_ratio 0.1, 2000 BeaverTails-unsafe calibration samples, batch 1, sequence
length 2048. Per row, ceil(sparsity x columns) weights are removed (the original's columns - floor(columns x
(1 - dense_ratio))). The original averages x_j^2 per calibration sample, fts per token: a constant factor per layer,
so the same ranking. Cost: calibration forwards only (no backward), one per example (batch 1, no padding).
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from fts.core.errors import ConfigError
from fts.models.chat import render_example
from fts.train.defenses.data import load_parts
from fts.train.defenses.safelora import lora_layers


@dataclass
class Antidote:
    sparsity: float = 0.1  # dense_ratio: the share of each row's weights removed (antidote_poison_ratio.sh)
    harmful_data: str | list[dict[str, Any]] = field(  # the calibration set: one file, or parts {path, split, limit}
        default_factory=lambda: [{"path": "builtin:defense_harmful.jsonl", "split": None, "limit": None}]
    )  # the paper: 2000 samples
    format: str = "auto"
    max_length: int = 2048  # tokens per calibration example (the original's seqlen)
    full_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])  # full fine-tuning
    stage: str = "post_fine_tuning"
    name: str = "antidote"

    def calibration_texts(self, tokenizer) -> list[str]:
        """Each harmful conversation rendered whole (prompt and answer) by the chat template."""
        examples = load_parts(self.harmful_data, self.format, f"mitigation.{self.name}.harmful_data")
        return ["".join(render_example(tokenizer, ex["messages"])) for ex in examples]

    @torch.no_grad()
    def repair(self, model: torch.nn.Module, tokenizer, **context) -> dict:
        """Prune `model` in place; returns how many weights each layer lost."""
        layers = prunable_layers(model, self.full_modules)
        if not layers:
            raise ConfigError(
                "mitigation=antidote prunes the LoRA factors of the user's adapter, or the "
                f"{'/'.join(self.full_modules)} projections under full fine-tuning, and this model has neither: use "
                "peft=lora (or dora, qlora), or with peft=full name the model's own projections in "
                "mitigation.antidote.full_modules."
            )
        texts = self.calibration_texts(tokenizer)
        mean_squares, tokens = input_mean_squares(model, tokenizer, layers, texts, self.max_length)
        pruned = {}
        for name, layer in layers.items():
            mask = highest_per_row(wanda_scores(layer.weight, mean_squares[name]), self.sparsity)
            layer.weight[mask] = 0
            pruned[name.removeprefix("base_model.model.")] = int(mask.sum())
        return {
            "sparsity": self.sparsity,
            "calibration": {"examples": len(texts), "tokens": tokens},
            "layers": len(layers),
            "pruned": sum(pruned.values()),
            "pruned_per_layer": pruned,
        }


def prunable_layers(model: torch.nn.Module, full_modules: list[str]) -> dict[str, torch.nn.Linear]:
    """The linear layers Antidote prunes, by name: lora_A and lora_B of the active adapter, or (no adapter) the
    linear layers named like one of `full_modules`."""
    if isinstance(model, PeftModel):
        found = {}
        for name, layer in lora_layers(model).items():
            adapter = layer.active_adapters[0]
            found[f"{name}.lora_A.{adapter}"] = layer.lora_A[adapter]
            found[f"{name}.lora_B.{adapter}"] = layer.lora_B[adapter]
        return found
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in full_modules
    }


def input_mean_squares(
    model: torch.nn.Module, tokenizer, layers: dict[str, torch.nn.Linear], texts: list[str], max_length: int
) -> tuple[dict[str, torch.Tensor], int]:
    """({layer: mean over the calibration tokens of each input feature squared}, tokens), one text at a time."""
    sums = {name: torch.zeros(layer.in_features, device=layer.weight.device) for name, layer in layers.items()}

    def accumulate(name: str):
        def hook(module, args, output):
            x = args[0].detach().float()
            sums[name] += x.reshape(-1, x.shape[-1]).pow(2).sum(dim=0)

        return hook

    handles = [layer.register_forward_hook(accumulate(name)) for name, layer in layers.items()]
    device, tokens = model.get_input_embeddings().weight.device, 0
    model.eval()
    try:
        for text in tqdm(texts, desc="antidote: calibration", unit="example"):
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[:, :max_length]
            model(input_ids=ids.to(device), use_cache=False)
            tokens += ids.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return {name: total / max(tokens, 1) for name, total in sums.items()}, tokens


def wanda_scores(weight: torch.Tensor, mean_squares: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| sqrt(mean x_j^2), [out, in]."""
    return weight.detach().float().abs() * mean_squares.sqrt().unsqueeze(0)


def highest_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A mask of the ceil(sparsity x columns) highest scores of each row."""
    k = math.ceil(round(sparsity * scores.shape[1], 9))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(1, scores.topk(k, dim=1).indices, True)
