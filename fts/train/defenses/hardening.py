"""What the alignment-stage defenses share: the provider hardens the aligned model by training it once more, on
its alignment data, with the defense's objective, in a LoRA of the defense's own shape that is then merged in. The
result (the defended model) is cached by the backend under `material()`; every attack cell of a sweep starts from
it. Also the gradient bookkeeping of objectives that take several passes per step."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fts.core.cache import file_digest
from fts.core.records import Example
from fts.data.formats import locate
from fts.train.defenses import Objective
from fts.train.defenses.data import load_part
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
        key = f"mitigation.{self.name}.data"
        return [
            ex
            for part in self.data
            for ex in load_part(part["path"], self.format, part.get("split"), part.get("limit"), key)
        ]

    def settings(self) -> dict[str, Any]:
        """The defense's own hyper-parameters (a dataclass's fields besides the shared ones)."""
        shared = set(Hardening.__dataclass_fields__)
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in shared}

    def material(self) -> dict[str, Any]:
        """What decides the defended model besides the aligned one: settings, data (by content) and recipe."""
        data = {
            p["path"]: file_digest(locate(p["path"], self.format, f"mitigation.{self.name}.data")) for p in self.data
        }
        return {
            "defense": self.name,
            "settings": self.settings(),
            "data": {"parts": self.data, "digests": data, "guide": self.guide_digests()},
            "peft": self.peft,
            "train": self.train,
            "seed": self.seed,
        }

    def guide_digests(self) -> dict[str, str]:
        return {}

    def harden(self, model, tokenizer, work_dir: Path) -> tuple[Any, dict[str, float]]:
        """Train `model` (the aligned model, full precision) with this defense's objective on the alignment data;
        return it with the LoRA merged in, and the passes per step its objective took."""
        trained, _, passes = fine_tune(
            model, tokenizer, self.alignment_examples(), self.train, self.peft, work_dir, self.seed,
            objective=self.objective(),
        )  # fmt: skip
        return trained.merge_and_unload(), passes


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
