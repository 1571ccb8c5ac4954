"""Forward and backward passes of a training run, counted: what a defense costs per optimizer step beyond plain
SFT (one forward and one backward per micro-batch). Counted where they happen (a forward hook on the model, the
trainer's backward), not declared, so a defense's cost in metrics.json is what its code did."""

from collections import Counter

import torch


class PassCounter:
    """`counter.attach(model)` counts every forward of `model`; the trainer calls `backward()` once per backward."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self._handle = None

    def attach(self, model: torch.nn.Module) -> None:
        self.detach()
        self._handle = model.register_forward_pre_hook(self._forward)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _forward(self, module: torch.nn.Module, args: tuple) -> None:
        self.counts["forward"] += 1

    def backward(self) -> None:
        self.counts["backward"] += 1

    def per_step(self, micro_batches: int) -> dict[str, float]:
        """Passes per micro-batch of user (or alignment) data: 1 forward + 1 backward for plain SFT."""
        n = max(micro_batches, 1)
        return {kind: round(self.counts[kind] / n, 3) for kind in ("forward", "backward")}
