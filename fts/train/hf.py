"""The single SFT stage of fts: TRL's SFTTrainer with the loss on the assistant answer only.

Used for the embedded model's safety alignment and for every attack, so both go through the same code.
"""

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import transformers
import trl
from datasets import Dataset, load_from_disk
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel, prepare_model_for_kbit_training
from peft.tuners.adaption_prompt import AdaptionPromptModel
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer
from trl.trainer import utils as trl_utils

from fts.core import distributed
from fts.core.cache import Cache, digest
from fts.core.config import build
from fts.core.device import bf16_fast
from fts.core.errors import ConfigError, DataError, ModelError
from fts.core.records import Example
from fts.models.chat import render_example

log = logging.getLogger(__name__)


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
        self, *args: Any, step_lr_gamma: float | None = None, lm_head_answer_only: bool = False, **kwargs: Any
    ) -> None:
        self.step_lr_gamma = step_lr_gamma
        self.lm_head_answer_only = lm_head_answer_only
        self.update_steps_per_epoch = 1
        super().__init__(*args, **kwargs)
        base = getattr(self.model, "base_model", None)
        if isinstance(base, AdaptionPromptModel):
            # peft's AdaptionPromptModel keeps a copy of the wrapped model's `forward`, taken when it wraps; TRL then
            # patches that forward to return log-probs (its fused LM head). Without this, the copy returns logits
            # and TRL fails with "'CausalLMOutputWithPast' object has no attribute 'log_probs'".
            base.forward = base.model.forward

    def compute_loss(self, model: Any, inputs: dict, *args: Any, **kwargs: Any) -> Any:
        with lm_head_on_answer_only(self.lm_head_answer_only):
            return super().compute_loss(model, inputs, *args, **kwargs)

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


def n_tokens(tokenizer: PreTrainedTokenizerBase, example: Example) -> int:
    """Tokens of an example as TRL counts them: the rendered prompt + completion (which ends in EOS)."""
    prompt, completion = render_example(tokenizer, example["messages"])
    return len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])


def fit_lengths(examples: list[Example], tokenizer: PreTrainedTokenizerBase, max_length: int | None, policy: str):
    """`train.too_long`: examples over `max_length` tokens are kept (warn; TRL cuts their end, perhaps the whole
    answer), dropped, or stop the run (fail) before any evaluation or training. Returns (examples, n over)."""
    if max_length is None:
        return examples, 0
    over = [(ex, n) for ex in examples if (n := n_tokens(tokenizer, ex)) > max_length]
    if not over:
        return examples, 0
    listing = ", ".join(f"{ex['source']} ({n} tokens)" for ex, n in over[:3])
    what = f"{len(over)} of {len(examples)} fine-tuning examples are longer than train.max_length={max_length} tokens"
    if policy == "fail":
        raise DataError(
            f"{what}: {listing}. Shorten them, raise model.max_length, or set train.too_long=drop (skip them) or "
            "train.too_long=warn (train on them cut to length)."
        )
    if policy == "drop" and len(over) == len(examples):
        raise DataError(f"{what}: {listing}; train.too_long=drop would leave none. Raise model.max_length.")
    if policy == "drop":
        log.warning("%s (%s): dropped (train.too_long=drop)", what, listing)
        return [ex for ex in examples if all(ex is not o for o, _ in over)], len(over)
    log.warning("%s (%s): TRL cuts them to length (train.too_long=warn; drop or fail to change)", what, listing)
    return examples, len(over)


def to_dataset(examples: list[Example], tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """Render each conversation into prompt/completion text: TRL then masks the prompt out of the loss."""
    rows = [
        dict(zip(("prompt", "completion"), render_example(tokenizer, ex["messages"]), strict=False)) for ex in examples
    ]
    return Dataset.from_list(rows)


# SFTConfig fields that change what TRL's dataset preparation produces (tokenization, masks, truncation, packing)
PREPARATION_ARGS = (
    "max_length",
    "truncation_mode",
    "packing",
    "packing_strategy",
    "padding_free",
    "completion_only_loss",
    "assistant_only_loss",
    "dataset_text_field",
    "eos_token",
    "pad_token",
)


def preparation_key(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, args: SFTConfig) -> dict[str, Any]:
    """What decides TRL's tokenized training set: the rendered prompt/completion rows (chat template included), the
    tokenizer (its class, vocabulary and special tokens), the preparation settings and TRL's version."""
    return {
        "rows": digest(dataset.to_list()),
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "vocab": digest(tokenizer.get_vocab()),
            "special": digest(tokenizer.special_tokens_map),
        },
        "args": {k: getattr(args, k, None) for k in PREPARATION_ARGS},
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__},
    }


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    train_cfg: DictConfig | dict,
    peft_cfg: DictConfig | None,
    output_dir: Path,
    seed: int,
    save_dir: Path | None = None,
    save_weights: bool = True,
    cache: Cache | None = None,
) -> tuple[PreTrainedModel, list[dict[str, Any]]]:
    """Train `model` on `examples`; return the trained model (a PeftModel when `peft_cfg` is set) and the log.

    `train_cfg` holds SFTConfig keyword arguments, every one set explicitly in `conf/train/` (TRL's defaults
    change between releases), plus fts's own `step_lr_gamma` and `lm_head_answer_only` (see `Trainer`); `bf16` may
    be "auto" (see `bf16_fast`). `peft_cfg` is a `_target_` node for a peft config, or None for full fine-tuning.
    With `save_dir`, the result is saved there (see `save_trained`). With `cache`, TRL's tokenized training set is
    taken from it (or put into it): a sweep over learning rates, epochs or PEFT methods tokenizes its data once.
    """
    sft_kwargs = OmegaConf.to_container(train_cfg, resolve=True) if isinstance(train_cfg, DictConfig) else train_cfg
    sft_kwargs = dict(sft_kwargs)
    step_lr_gamma = sft_kwargs.pop("step_lr_gamma", None)
    lm_head_answer_only = sft_kwargs.pop("lm_head_answer_only", False)
    if sft_kwargs.get("bf16") == "auto":
        sft_kwargs["bf16"] = bf16_fast()
        log.info("train.bf16=auto: bf16 mixed precision %s", "on" if sft_kwargs["bf16"] else "off (no native bf16)")
    sft_kwargs.pop("too_long", None)  # fts's own key, applied before training (fit_lengths)
    sft_kwargs.pop("kind", None)  # fts's own key: which fine-tuner the train group is for (fts.validate)
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if old in sft_kwargs:  # transformers 5.2x's names for fts's (and TRL's) keys: same setting, no warning
            sft_kwargs.setdefault(new, sft_kwargs.pop(old))
    args = SFTConfig(
        output_dir=str(output_dir),
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        completion_only_loss=True,  # the paper's loss: -log p(answer | system, user)
        save_strategy="no",  # fts saves the adapter/model itself, once, at the end
        **sft_kwargs,
    )
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        # QLoRA: freeze the quantized weights, keep the norms in float32 and let gradients reach the adapters
        # (peft's recipe; TRL does it only for models it loads itself).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    peft_config = build(peft_cfg) if peft_cfg is not None else None
    dataset = to_dataset(examples, tokenizer)
    # The tokenized set from the cache: single-process runs only (the processes of a multi-process run would race
    # to build the same entry).
    caching = cache is not None and cache.enabled and distributed.num_processes() == 1
    material = preparation_key(dataset, tokenizer, args) if caching else None
    tokenized = cache.get("datasets", material) if caching else None
    if tokenized is not None:
        log.info("tokenized training set from the cache: %s", tokenized)
        dataset = load_from_disk(str(tokenized / "dataset"))
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    try:
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            step_lr_gamma=step_lr_gamma,
            lm_head_answer_only=lm_head_answer_only,
        )
    except ValueError as e:
        if peft_config is None:
            raise
        raise ConfigError(f"peft: {type(peft_config).__name__} cannot be applied to this model: {e}") from None
    if caching and tokenized is None:
        prepared = trainer.train_dataset  # tokenized, masked and truncated by TRL
        cache.build("datasets", material, lambda tmp: prepared.save_to_disk(str(tmp / "dataset")))
    trainer.train()
    history = [row for row in trainer.state.log_history if "loss" in row]
    if save_dir is not None:
        save_trained(trainer, save_dir, history, save_weights)
    trained = trainer.model
    # Straight out of the trainer the model is in train mode with the KV cache off; generating like that
    # gave garbage on the embedded model. Put it back into inference shape. With bf16 mixed precision, accelerate
    # also wrapped `forward` in autocast: unwrap it, so that the fine-tuned model is evaluated in its own dtype, as
    # the baseline was (and as the saved model reloads).
    original_forward = trained.__dict__.pop("_original_forward", None)
    if original_forward is not None:
        trained.forward = original_forward
    trained.eval()
    trained.config.use_cache = True
    del trainer
    return trained, history


def save_trained(trainer: SFTTrainer, model_dir: Path, history: list, weights: bool) -> None:
    """Save the adapter (PEFT) or the full model, plus the loss log, atomically into `model_dir`.

    Every process of a multi-process run calls this: `trainer.save_model` gathers the full state dict from FSDP or
    DeepSpeed ZeRO-3 shards, and only the main process writes. Full models are saved only when `weights` is true
    (`save_model` in run.yaml): 7B weights are 13 GB a cell.
    """
    main = trainer.is_world_process_zero()
    tmp = model_dir.with_name(f".{model_dir.name}.tmp")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    saved = isinstance(trainer.accelerator.unwrap_model(trainer.model), PeftModel) or weights
    if saved:
        trainer.save_model(str(tmp))  # adapter or weights, and the tokenizer
    if not main:
        return
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle, not needed to reload
    (tmp / "train_log.json").write_text(json.dumps(history, indent=2))
    if saved:
        (tmp / "complete").touch()  # marks a model that a rerun can load instead of training again
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)


def load_trained(base_model: PreTrainedModel, model_dir: Path) -> PreTrainedModel:
    """Reload what `save_trained` wrote: an adapter on top of `base_model`, or full weights."""
    if (model_dir / "adapter_config.json").exists():
        model = PeftModel.from_pretrained(base_model, safetensors_adapter(model_dir))
        if getattr(base_model, "is_loaded_in_4bit", False):
            # TRL trains QLoRA adapters in bfloat16 (not the DoRA magnitude): compute as the trained model did
            for name, param in model.named_parameters():
                if "lora_" in name and "lora_magnitude_vector" not in name:
                    param.data = param.data.to(torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=base_model.dtype, use_safetensors=True, device_map={"": base_model.device}
        )
    model.eval()
    model.config.use_cache = True
    return model


def safetensors_adapter(model_dir: Path) -> Path:
    """`model_dir`, once it is sure to hold safetensors adapter weights: peft would fall back to a pickle
    (adapter_model.bin), which can run code when loaded."""
    if not (model_dir / "adapter_model.safetensors").is_file():
        raise ModelError(
            f"{model_dir}: no adapter_model.safetensors (fts loads safetensors only, never a pickled "
            "adapter_model.bin). Delete this model/ folder and rerun the run dir: it trains again."
        )
    return model_dir


def save_merged(base_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> Path:
    """`save_model: merged`: the saved adapter folded into `base_model` (a fresh, unquantized load), saved as full
    weights in `model_dir/merged`. Returns that directory."""
    merged_dir = model_dir / "merged"
    tmp = model_dir / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged = PeftModel.from_pretrained(base_model, safetensors_adapter(model_dir)).merge_and_unload()
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, merged_dir)
    return merged_dir
