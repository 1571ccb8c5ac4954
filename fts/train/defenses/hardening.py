"""What the alignment-stage defenses share: the provider hardens the aligned model by training it once more, on
its alignment data, with the defense's objective, in a LoRA of the defense's own shape that is then merged in. The
result (the defended model) is cached by the backend under `material()`; every attack cell of a sweep starts from
it. Also the gradient bookkeeping of objectives that take several passes per step."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fts.core.records import Example
from fts.train.defenses import Objective
from fts.train.defenses.data import load_parts, part_digests
from fts.train.hf import fine_tune


@dataclass
class Hardening:
    """The settings every alignment-stage defense has: its alignment data (`data`: parts {path, split, limit},
    read as fts conversations), the LoRA it trains (`peft`, a peft config node) and the SFTConfig keys (`train`)."""

    data: list[dict[str, Any]] = field(default_factory=list)
    format: str = "auto"
    peft: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    stage: str = "alignment"
    name: str = "hardening"

    def objective(self) -> Objective:
        raise NotImplementedError

    def alignment_examples(self) -> list[Example]:
        return load_parts(self.data, self.format, f"mitigation.{self.name}.data")

    def settings(self) -> dict[str, Any]:
        """The defense's own hyper-parameters (a dataclass's fields besides the shared ones)."""
        shared = set(Hardening.__dataclass_fields__)
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in shared}

    def material(self) -> dict[str, Any]:
        """What decides the defended model besides the aligned one: settings, data (by content) and recipe."""
        data = part_digests(self.data, self.format, f"mitigation.{self.name}.data")
        return {
            "defense": self.name,
            "settings": self.settings(),
            "data": {"parts": self.data, "digests": data, "guide": self.guide_digests()},
            "peft": self.peft,
            "train": self.train,
            "seed": self.seed,
        }

    def guide_digests(self) -> dict[str, str]:
        """The digests of the data a defense trains on besides `data` (its harmful data)."""
        return {}

    def harden(self, model, tokenizer, work_dir: Path) -> tuple[Any, dict[str, float]]:
        """Train `model` (the aligned model, full precision) with this defense's objective on the alignment data;
        return it with the LoRA merged in, and the passes per step its objective took."""
        trained, _, passes = fine_tune(
            model, tokenizer, self.alignment_examples(), self.train, self.peft, work_dir, self.seed,
            objective=self.objective(),
        )  # fmt: skip
        return trained.merge_and_unload(), passes


@dataclass
class HarmfulHardening(Hardening):
    """An alignment-stage defense that also trains on harmful data (request -> compliance): `harmful_data`, one
    file or parts {path, split, limit} like `data`, read in the same `format`. The default is fts's built-in
    non-operational stand-in (compliance in shape, no content); the papers used BeaverTails' unsafe rows."""

    harmful_data: str | list[dict[str, Any]] = field(
        default_factory=lambda: [{"path": "builtin:defense_harmful.jsonl", "split": None, "limit": None}]
    )

    def harmful_examples(self) -> list[Example]:
        return load_parts(self.harmful_data, self.format, f"mitigation.{self.name}.harmful_data")

    def guide_digests(self) -> dict[str, str]:
        return part_digests(self.harmful_data, self.format, f"mitigation.{self.name}.harmful_data")


class GradientStash:
    """The gradients accumulated over earlier micro-batches, put aside while an objective runs its own passes on
    this one (which zero the gradients between passes), then added back."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.saved = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None

    def restore(self) -> None:
        for p, saved in zip(self.params, self.saved, strict=True):
            if saved is not None:
                p.grad = saved if p.grad is None else p.grad + saved


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Each decoder layer's attention module (`...self_attn`), in layer order."""
    return [module for name, module in model.named_modules() if name.endswith("self_attn")]


@contextmanager
def recorded_outputs(modules: list[torch.nn.Module], keep_grad: bool = False) -> Iterator[list[torch.Tensor]]:
    """The first output of each module in the forward that runs inside, in call order; with `keep_grad`, each one
    keeps its gradient after the backward (`.grad`)."""
    outputs: list[torch.Tensor] = []

    def keep(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if keep_grad and hidden.requires_grad:
            hidden.retain_grad()
        outputs.append(hidden)

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
