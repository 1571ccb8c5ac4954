"""`mitigation=kl_anchor`: a plain regulariser baseline at the fine-tuning stage. Each step adds to the user's SFT
loss the KL divergence from the aligned model's next-token distribution to the fine-tuned one's, on the answer
tokens of a batch of alignment data (harmful request -> refusal, in the attack's format):

    L = CE(user batch) + weight * mean over answer tokens of KL(p_aligned(. | prefix) || p_theta(. | prefix))

Source: the KL baseline of Huang et al.'s Vaccine repository (git-disl/Vaccine trainer.py KLTrainer; script
KL_finetune/sst2.sh: weight 0.1). fts does not copy that code's quirks (softmax over the sequence axis, the teacher
reloaded each step): the KL is per token over the vocabulary, the teacher is the model with its adapter disabled.
Cost: one extra forward of the fine-tuned model and one of the reference, on the guide batch, per step."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fts.core.records import Example
from fts.train.defenses import Objective
from fts.train.defenses.data import GuideData
from fts.train.defenses.reference import Reference, answer_positions, plain_inputs
from fts.train.trainer import Trainer


@dataclass
class KLAnchor(GuideData):
    weight: float = 0.1  # lambda (Vaccine's script KL_finetune/sst2.sh)
    stage: str = "fine_tuning"
    name: str = "kl_anchor"

    def objective(self, guide: list[Example]) -> Objective:
        return Objective(KLAnchorTrainer, {"kl_weight": self.weight}, guide, self.name)


class KLAnchorTrainer(Trainer):
    def __init__(self, *args, kl_weight: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kl_weight = kl_weight
        self.reference = Reference(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return loss
        kl = self.kl_to_reference(model, self.next_guide_batch())
        self._metrics["train"]["kl_anchor"].append(kl.item())
        return loss + self.kl_weight * kl

    def kl_to_reference(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over the guide batch's answer tokens of KL(reference || model)."""
        inputs = plain_inputs(batch)
        answer = answer_positions(batch["labels"])
        student = model(**inputs).logits[:, :-1][answer].float()
        teacher = self.reference(model, **inputs).logits[:, :-1][answer].float()
        return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
