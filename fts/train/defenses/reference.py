"""The model as it was before this training began (the aligned, or defended, model): what the fine-tuning-stage
defenses anchor to. For a PEFT model it is the same model with its adapter switched off (no second copy); for full
fine-tuning a frozen copy taken when training starts."""

import copy
from contextlib import nullcontext

import torch
from peft import PeftModel
from trl.trainer.utils import add_fused_lm_head


class Reference:
    def __init__(self, model: torch.nn.Module) -> None:
        self.frozen = None
        if not isinstance(model, PeftModel):  # full fine-tuning: the weights will move, so keep them as they are now
            self.frozen = frozen_copy(model)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, **inputs: torch.Tensor):
        """The reference's forward on `inputs` (no gradient)."""
        if self.frozen is not None:
            return self.frozen(**inputs)
        with model.disable_adapter() if isinstance(model, PeftModel) else nullcontext():
            return model(**inputs)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` that keeps its present weights. TRL's trainer replaced the model's `forward` with its fused
    LM head, a closure over the ORIGINAL model's forward: copied as it is, the copy's plain forward would run the model
    being trained. The copy gets the class's forward back, and a fused head of its own. The objects behind the
    model's forward pre-hooks (fts's pass counter) are shared, not copied: the copy's forwards are counted too."""
    hooks = model._forward_pre_hooks.values()
    shared = {id(hook.__self__): hook.__self__ for hook in hooks if hasattr(hook, "__self__")}
    frozen = copy.deepcopy(model, memo=shared).eval().requires_grad_(False)
    if "forward" in vars(frozen):
        del frozen.forward
        add_fused_lm_head(frozen)
    return frozen


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """A mask over the logits [batch, seq - 1] that predict an answer token (labels[:, 1:] != -100)."""
    return labels[:, 1:] != -100


def plain_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors a causal LM's forward takes, from a collated training batch (not its labels)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
