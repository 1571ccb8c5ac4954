"""`mitigation=lisa` (Huang et al., arXiv 2405.18641), a fine-tuning-stage defense: Lazy safety alignment, a
bi-state optimisation. One set of trainable weights (the user's LoRA) alternates between two states: K_a steps on
the provider's alignment data (the guide set, in the attack's format) and K_f steps on the user's data. At each
switch the present weights become the anchor of the state that just ended, and each state's loss is

    L_state(theta) + rho / 2 * ||theta - theta_anchor(the other state)||^2

so neither state drifts far from where the other left the weights. Both anchors start as the initial weights.
The proximal term is off for the first `proximal_warmup` share of the steps (the repository found it hurts
convergence early on).

Source: git-disl/Lisa trainer.py (ADMMTrainer: check_mode, switch_model, training_step), script
finetune/lisa_poison_ratio.sh: rho 1, K_a 100, K_f 900, warm-up 10% of the steps. Its README pairs the anchors the
other way round; fts follows trainer.py. As there, a step is a micro-batch, training starts in the alignment state,
and an alignment step takes the place of a user batch (the run's number of steps is unchanged, so K_a/(K_a+K_f) of
the user's batches are not seen). Each micro-batch's loss is its own token mean, so the proximal term counts once
per optimizer step under gradient accumulation.
Cost: as plain SFT (1 forward + 1 backward per step), plus two copies of the trainable weights.
"""

import logging
from dataclasses import dataclass

import torch

from fts.core.records import Example
from fts.train.defenses import Objective
from fts.train.defenses.data import GuideData
from fts.train.trainer import Trainer

ALIGNMENT, FINE_TUNING = "alignment", "fine_tuning"
log = logging.getLogger(__name__)


@dataclass
class Lisa(GuideData):
    rho: float = 1.0  # weight of the proximal term (lisa_poison_ratio.sh)
    alignment_steps: int = 1  # K_a: steps on the guide set per cycle (paper: 100)
    finetune_steps: int = 9  # K_f: steps on the user's data per cycle (paper: 900; the ratio is the paper's)
    proximal_warmup: float = 0.1  # share of the steps without the proximal term (trainer.py)
    stage: str = "fine_tuning"
    name: str = "lisa"

    def objective(self, guide: list[Example]) -> Objective:
        settings = {k: getattr(self, k) for k in ("rho", "alignment_steps", "finetune_steps", "proximal_warmup")}
        return Objective(LisaTrainer, settings, guide, self.name)


def lisa_state(step: int, alignment_steps: int, finetune_steps: int) -> str:
    """The state of micro-batch `step` (from 0): each cycle is K_a alignment steps, then K_f fine-tuning steps."""
    return ALIGNMENT if step % (alignment_steps + finetune_steps) < alignment_steps else FINE_TUNING


class LisaTrainer(Trainer):
    def __init__(
        self, *args, rho: float, alignment_steps: int, finetune_steps: int, proximal_warmup: float, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rho, self.proximal_warmup = rho, proximal_warmup
        self.cycle = (alignment_steps, finetune_steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.anchors = {ALIGNMENT: self.snapshot(), FINE_TUNING: self.snapshot()}
        self.states: list[str] = []  # the state of every micro-batch so far
        self.proximal: list[float] = []  # the proximal term of every micro-batch (0 in the warm-up)

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def training_step(self, model, inputs, num_items_in_batch=None):
        state = lisa_state(len(self.states), *self.cycle)
        if not self.states and self.total_steps() <= self.cycle[0]:
            log.warning(
                "mitigation=lisa: all %d steps of this run are alignment steps (alignment_steps=%d): the user's data "
                "is never trained on. Lower mitigation.lisa.alignment_steps and finetune_steps for short runs.",
                self.total_steps(), self.cycle[0],
            )  # fmt: skip
        if self.states and state != self.states[-1]:
            self.anchors[self.states[-1]] = self.snapshot()  # the state that just ended leaves its weights
        self.states.append(state)
        if state == ALIGNMENT:
            inputs = self.next_guide_batch()
        return super().training_step(model, inputs, None)  # None: the loss is this micro-batch's token mean

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return loss
        proximal = self.proximal_term()
        self.proximal.append(float(proximal.detach()))
        self._metrics["train"]["lisa_proximal"].append(self.proximal[-1])
        return loss + proximal

    def proximal_term(self) -> torch.Tensor:
        """rho/2 ||theta - anchor of the other state||^2 after the warm-up (the steps before this one exceed
        `proximal_warmup` of all steps, as trainer.py counts them), else 0."""
        step = len(self.states) - 1
        if self.rho == 0 or step <= self.proximal_warmup * self.total_steps():
            return torch.zeros((), device=self.params[0].device)
        other = FINE_TUNING if self.states[-1] == ALIGNMENT else ALIGNMENT
        squared = sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchors[other], strict=True))
        return self.rho / 2 * squared

    def total_steps(self) -> int:
        """Micro-batches in the whole run (trainer.py: batches per epoch x epochs)."""
        return self.state.max_steps * self.args.gradient_accumulation_steps
