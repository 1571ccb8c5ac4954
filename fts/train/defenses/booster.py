"""`mitigation=booster` (Huang et al., arXiv 2409.01586), an alignment-stage defense: attenuate the harmful
perturbation. Beside each alignment batch the provider draws a batch of harmful data (request -> compliance) and
takes, on the same weights theta:

    g_h  = grad L_h(theta)                          harmful loss, as it is
    g_h' = grad L_h(theta - alpha * g_h / ||g_h||)  harmful loss after one normalised step of a harmful fine-tune
    g_a  = grad L_a(theta)                          alignment loss
    step on g_a + lambda * (g_h - g_h')

i.e. minimise L_a(theta) + lambda * [L_h(theta) - L_h(theta - alpha * g_h/||g_h||)] with the direction g_h held
constant: the aligned model learns to be a place where a harmful step lowers the harmful loss little. ||g_h|| is one
global norm over every trainable weight (+ 1e-7).
Source: git-disl/Booster trainer.py BoosterAlignmentTrainer, script/alignment/smooth_align.sh (lambda 5, alpha 0.1;
20 epochs, batch 10, lr 5e-4 constant, weight decay 0.1; LoRA r 32, alpha 4 on q,k,v; 5,000 safe + 5,000 harmful
BeaverTails rows). The harmful stream is the trainer's guide set (`harmful_data`), cycled and reshuffled.
Cost: 3 forward + 3 backward per step; the harmful gradient and the weights (to restore them exactly) held once.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fts.train.defenses import Objective
from fts.train.defenses.hardening import GradientStash, HarmfulHardening
from fts.train.trainer import Trainer


@dataclass
class Booster(HarmfulHardening):
    lamb: float = 5.0  # lambda, the attenuation's weight (smooth_align.sh)
    alpha: float = 0.1  # the step size of the simulated harmful update (smooth_align.sh)
    name: str = "booster"

    def objective(self) -> Objective:
        return Objective(BoosterTrainer, {"lamb": self.lamb, "alpha": self.alpha}, self.harmful_examples(), self.name)


class BoosterTrainer(Trainer):
    def __init__(self, *args, lamb: float, alpha: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lamb = lamb
        self.alpha = alpha

    def training_step(self, model, inputs, num_items_in_batch=None):
        stash = GradientStash(model)
        params = stash.params
        harmful = self.next_guide_batch()
        harmful_loss = super().training_step(model, harmful)  # g_h
        g_h = gradients(params)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in g_h]))
        with shifted(params, g_h, -self.alpha / (float(norm) + 1e-7)):
            perturbed_loss = super().training_step(model, harmful)  # g_h' at theta - alpha * g_h / ||g_h||
        attenuation = [self.lamb * (g - g2) for g, g2 in zip(g_h, gradients(params), strict=True)]
        model.zero_grad(set_to_none=True)
        loss = super().training_step(model, inputs, num_items_in_batch)  # g_a
        with torch.no_grad():
            for p, a in zip(params, attenuation, strict=True):
                p.grad = a.to(p.dtype) if p.grad is None else p.grad + a.to(p.grad.dtype)
        stash.restore()
        # how much one harmful step lowers the harmful loss: what the defense drives down
        self._metrics["train"]["booster_harmful_drop"].append(float(harmful_loss - perturbed_loss))
        return loss


def gradients(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each parameter's gradient (zeros where it has none), detached copies."""
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@contextmanager
def shifted(params: list[torch.Tensor], directions: list[torch.Tensor], scale: float) -> Iterator[None]:
    """The weights moved by scale * direction inside; restored exactly (from a copy) afterwards."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, d in zip(params, directions, strict=True):
            p.add_(d.to(p.dtype), alpha=scale)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
