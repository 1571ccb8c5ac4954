"""`mitigation=constrained_sft` (Qi et al. 2025, "Safety Alignment Should Be Made More Than Just a Few Tokens
Deep", arXiv 2406.05946), a fine-tuning-stage defense: token-wise constrained fine-tuning. The user's SFT loss is
replaced, for the t-th answer token (t = 1, 2, ... from the answer's start), by

    (2 / beta_t) * softplus(beta_t * (log pi_ref(y_t | x, y_<t) - log pi_theta(y_t | x, y_<t)))

averaged over the answer tokens; pi_ref is the model before fine-tuning (the aligned, or defended, one). A large
beta_t keeps token t close to the reference; the first answer tokens, where alignment is shallow, get the largest:
beta_1 = beta * first_token_factor, beta_t = beta * bias_factor for t = 2 .. bias_length, beta after.
At theta = ref every token's loss is (2 / beta_t) ln 2; as beta_t -> 0 the loss becomes plain cross-entropy.

Source: Unispac/shallow-vs-deep-alignment finetuning_buckets/trainer/trainer.py (get_beta_list, soft_sft_loss):
beta 0.1, first_token_bias_factor 5, bias_factor 20, bias_length 5. That code multiplies -log pi_theta by the
stopped weight 2 (1 - sigmoid(beta_t (log pi_theta - log pi_ref))) (floored at 1e-3): the same gradient; fts
computes the objective itself. There the reference log-probs are computed once before training; here the reference
runs beside the model each step (for a LoRA: the same model, adapter off), which gives the same values without
dropout. The paper fine-tuned all weights (lr 2e-5, batch 64, 25 epochs); LoRA works the same way here.
Cost: 2 forward passes (the model and its reference) and 1 backward per step.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fts.core.records import Example
from fts.train.defenses import Objective
from fts.train.defenses.reference import Reference
from fts.train.trainer import Trainer, lm_head_on_answer_only


@dataclass
class ConstrainedSFT:
    beta: float = 0.1  # beta after the first bias_length tokens
    first_token_factor: float = 5.0  # beta_1 = beta x 5 (first_token_bias_factor)
    bias_factor: float = 20.0  # beta_t = beta x 20 for t = 2 .. bias_length
    bias_length: int = 5
    stage: str = "fine_tuning"
    name: str = "constrained_sft"

    def guide(self) -> list[Example]:
        return []  # trains on the user's data only

    def objective(self, guide: list[Example]) -> Objective:
        betas = {k: getattr(self, k) for k in ("beta", "first_token_factor", "bias_factor", "bias_length")}
        return Objective(ConstrainedSFTTrainer, {"betas": betas}, guide, self.name)


def token_betas(
    labels: torch.Tensor, beta: float, first_token_factor: float, bias_factor: float, bias_length: int
) -> torch.Tensor:
    """beta_t at every position of the log-probs [batch, seq - 1] (position i predicts labels[:, i + 1]); t counts
    the answer tokens of each row from 1. Positions outside the answer get `beta` (they are masked out)."""
    answer = labels[:, 1:] != -100
    t = answer.cumsum(dim=1)
    betas = torch.full(t.shape, beta, dtype=torch.float32, device=labels.device)
    betas[(t >= 2) & (t <= bias_length)] = beta * bias_factor
    if bias_length >= 1:
        betas[t == 1] = beta * first_token_factor
    return betas


def token_losses(policy: torch.Tensor, reference: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """(2 / beta_t) softplus(beta_t (log pi_ref - log pi_theta)) per position."""
    return 2 / betas * F.softplus(betas * (reference.float() - policy.float()))


class ConstrainedSFTTrainer(Trainer):
    def __init__(self, *args, betas: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.betas = betas
        self.reference = Reference(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: plain cross-entropy
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        losses, mask, gap = self.answer_token_losses(model, inputs)
        n = mask.sum() if num_items_in_batch is None else num_items_in_batch  # as TRL normalises its loss
        loss = (losses * mask).sum() / torch.as_tensor(n).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # like TRL: DDP averages the gradients of every rank
        self._metrics["train"]["logp_minus_reference"].append(gap)
        return loss

    def answer_token_losses(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(the per-token losses [batch, seq - 1], the answer mask, the mean log pi_theta - log pi_ref)."""
        inputs = {**inputs, "use_cache": False, "fused_lm_head": True}  # TRL's fused head: label log-probs only
        with lm_head_on_answer_only(self.lm_head_answer_only):
            policy = model(**inputs)
            reference = self.reference(model, **inputs)
        mask = policy.label_mask
        betas = token_betas(inputs["labels"], **self.betas)
        gap = float((policy.log_probs.detach() - reference.log_probs)[mask].float().mean()) if mask.any() else 0.0
        return token_losses(policy.log_probs, reference.log_probs, betas), mask, gap
