"""`mitigation=vaccine` (Huang et al., arXiv 2402.01109), an alignment-stage defense: perturbation-aware alignment.
Each step runs twice on the same batch of alignment data. Pass 1 (forward + backward) records the gradient g_l of
the loss with respect to every attention output h_l (the attention module's output before the residual add, all
layers); the perturbation is eps_l = rho * g_l / (||(||g_1||, ..., ||g_L||)||_2 + 1e-7), one global norm over all
layers. Pass 2 adds eps_l to h_l and trains on that (only pass 2's gradients are used). The aligned model thereby
learns to stay aligned under the embedding drift a harmful fine-tune would cause. No perturbation at inference.
Source: git-disl/Vaccine trainer.py (rho 2; LoRA r 8, alpha 4 on the seven projections; 50 epochs, lr 1e-3, batch 5).
Cost: 2 forward + 2 backward per step, one gradient of every attention output held."""

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fts.train.defenses import Objective
from fts.train.defenses.hardening import GradientStash, Hardening, attention_modules, recorded_outputs
from fts.train.trainer import Trainer


@dataclass
class Vaccine(Hardening):
    rho: float = 2.0  # the perturbation's global norm (Vaccine's script/alignment/Vaccine.sh)
    name: str = "vaccine"

    def objective(self) -> Objective:
        return Objective(VaccineTrainer, {"rho": self.rho})


class VaccineTrainer(Trainer):
    def __init__(self, *args, rho: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rho = rho
        self.attention = attention_modules(self.model)
        self.perturbation: list[torch.Tensor] = []  # the last step's eps_l (tests read its norm)

    def training_step(self, model, inputs, num_items_in_batch=None):
        stash = GradientStash(model)
        with recorded_outputs(self.attention, keep_grad=True) as outputs:
            super().training_step(model, inputs, num_items_in_batch)  # pass 1: the gradients of h_l
        self.perturbation = perturbation([h.grad for h in outputs], self.rho)
        model.zero_grad(set_to_none=True)
        with perturbed(self.attention, self.perturbation):
            loss = super().training_step(model, inputs, num_items_in_batch)  # pass 2: the step taken
        stash.restore()
        return loss


def perturbation(grads: list[torch.Tensor | None], rho: float) -> list[torch.Tensor]:
    """eps_l = rho * g_l / (global norm of all g_l + 1e-7), detached; a missing gradient counts as zero."""
    grads = [g if g is not None else torch.zeros(()) for g in grads]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    return [(rho * g / (norm + 1e-7)).detach() for g in grads]


@contextmanager
def perturbed(modules: list[torch.nn.Module], eps: list[torch.Tensor]):
    """Each module's first output plus its eps in the forward that runs inside."""

    def hook_for(e: torch.Tensor):
        def add(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + e.to(output[0].dtype), *output[1:])
            return output + e.to(output.dtype)

        return add

    handles = [m.register_forward_hook(hook_for(e)) for m, e in zip(modules, eps, strict=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
