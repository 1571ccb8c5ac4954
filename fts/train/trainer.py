"""fts's TRL trainer: SFTTrainer plus the paper's per-epoch StepLR, LLaMA-Adapter made to work with TRL's loss, the
LM head scored on the answer tokens only, its forward/backward passes counted, and a second data stream ("guide":
alignment data a defense trains on beside the user's) prepared exactly like the training set."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from datasets import Dataset
from peft.tuners.adaption_prompt import AdaptionPromptModel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from trl import SFTTrainer
from trl.trainer import utils as trl_utils

from fts.train.passes import PassCounter


@contextmanager
def lm_head_on_answer_only(enabled: bool) -> Iterator[None]:
    """Make TRL's fused LM head score only the positions that have a label (the answer), on any device.

    TRL 1.16 computes the log-probs (and entropy, top-1) of the LM head only at labelled positions on Triton devices
    (CUDA, XPU) and at every position elsewhere, so that tile shapes stay fixed for compiling devices (Neuron). On a
    CPU, in eager mode, that wastes the LM head on the prompt and the padding: for the embedded model (49k-token
    vocabulary, 576-wide) the head was half of a training step's time, and an AOA batch has 34% answer tokens. The
    loss and its gradient are the same either way. TRL decides with `trl.trainer.utils._use_triton`; it is swapped
    for the duration of the forward (where the positions are selected). Without that function (another TRL
    release) this does nothing.
    """
    use_triton = getattr(trl_utils, "_use_triton", None)
    if not enabled or use_triton is None:
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = use_triton


class Trainer(SFTTrainer):
    """TRL's SFTTrainer plus the paper's per-epoch StepLR, LLaMA-Adapter made to work with TRL's loss, and the LM head
    on the answer tokens only.

    `step_lr_gamma` (llama-recipes' `StepLR(step_size=1, gamma)`, stepped once per epoch): epoch k (from 0) trains at
    lr * gamma**k. It replaces the `lr_scheduler_type` schedule. `lm_head_answer_only`: see `lm_head_on_answer_only`.
    """

    def __init__(
        self,
        *args: Any,
        step_lr_gamma: float | None = None,
        lm_head_answer_only: bool = False,
        guide: Dataset | None = None,
        **kwargs: Any,
    ) -> None:
        self.step_lr_gamma = step_lr_gamma
        self.lm_head_answer_only = lm_head_answer_only
        self.update_steps_per_epoch = 1
        super().__init__(*args, **kwargs)
        self.passes = PassCounter()
        self.passes.attach(self.model)
        backward = self.accelerator.backward

        def counted_backward(*a: Any, **k: Any) -> Any:
            self.passes.backward()
            return backward(*a, **k)

        self.accelerator.backward = counted_backward
        self._guide = self.guide_loader(guide) if guide is not None else None
        self._guide_batches: Iterator | None = None
        base = getattr(self.model, "base_model", None)
        if isinstance(base, AdaptionPromptModel):
            # peft's AdaptionPromptModel keeps a copy of the wrapped model's `forward`, taken when it wraps; TRL then
            # patches that forward to return log-probs (its fused LM head). Without this, the copy returns logits
            # and TRL fails with "'CausalLMOutputWithPast' object has no attribute 'log_probs'".
            base.forward = base.model.forward

    def compute_loss(self, model: Any, inputs: dict, *args: Any, **kwargs: Any) -> Any:
        with lm_head_on_answer_only(self.lm_head_answer_only):
            return super().compute_loss(model, inputs, *args, **kwargs)

    def prepared(self, rows: Dataset, name: str) -> Dataset:
        """Prompt/completion rows tokenized and masked as TRL does the training set (`name` labels its progress)."""
        prepared = self._prepare_dataset(rows, self.processing_class, self.args, False, None, name)
        return self._remove_unused_columns(prepared, description=name)

    def guide_loader(self, rows: Dataset) -> DataLoader:
        """The guide set (prompt/completion rows) prepared and batched as TRL does the training set."""
        return DataLoader(
            self.prepared(rows, "guide"),
            batch_size=self.args.per_device_train_batch_size,
            shuffle=True,
            collate_fn=self.data_collator,
            generator=torch.Generator().manual_seed(self.args.seed),
        )

    def next_guide_batch(self) -> dict[str, torch.Tensor]:
        """The next batch of the guide set, on the model's device (the set is cycled, reshuffled each pass)."""
        if self._guide is None:
            raise RuntimeError(f"{type(self).__name__} needs a guide set")
        while True:
            if self._guide_batches is None:
                self._guide_batches = iter(self._guide)
            batch = next(self._guide_batches, None)
            if batch is not None:
                return self._prepare_inputs(batch)
            self._guide_batches = None

    def passes_per_step(self) -> dict[str, float]:
        """Forward and backward passes per micro-batch of training data (plain SFT: 1 and 1)."""
        return self.passes.per_step(self.state.global_step * self.args.gradient_accumulation_steps)

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple:
        values = super().set_initial_training_values(args, dataloader)
        self.update_steps_per_epoch = values[1]  # after sharding across processes and gradient accumulation
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        if self.step_lr_gamma is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        gamma, per_epoch = self.step_lr_gamma, self.update_steps_per_epoch
        self.lr_scheduler = LambdaLR(optimizer or self.optimizer, lambda step: gamma ** (step // per_epoch))
        return self.lr_scheduler
