"""The single SFT stage of fts: TRL's SFTTrainer with the loss on the assistant answer only.

Used for the embedded model's safety alignment and for every attack, so both go through the same code.
"""

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers
import trl
from datasets import Dataset, load_from_disk
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from fts.core import distributed
from fts.core.cache import Cache, digest
from fts.core.config import build
from fts.core.device import bf16_fast, release_memory
from fts.core.errors import ConfigError, DataError, ModelError
from fts.core.records import Example
from fts.models.chat import render_example
from fts.train.defenses import Objective
from fts.train.trainer import Trainer

log = logging.getLogger(__name__)


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


def sft_config(train_cfg: DictConfig | dict, output_dir: Path, seed: int) -> tuple[SFTConfig, dict[str, Any]]:
    """TRL's SFTConfig from `train_cfg` (every SFTConfig value set explicitly in conf/train/, since TRL's defaults
    change between releases), and fts's own keys apart: `step_lr_gamma`, `lm_head_answer_only` (see
    fts.train.trainer); `bf16` may be "auto" (bf16 where the hardware has it natively)."""
    kwargs = OmegaConf.to_container(train_cfg, resolve=True) if isinstance(train_cfg, DictConfig) else train_cfg
    kwargs = dict(kwargs)
    own = {
        "step_lr_gamma": kwargs.pop("step_lr_gamma", None),
        "lm_head_answer_only": kwargs.pop("lm_head_answer_only", False),
    }
    if kwargs.get("bf16") == "auto":
        kwargs["bf16"] = bf16_fast()
        log.info("train.bf16=auto: bf16 mixed precision %s", "on" if kwargs["bf16"] else "off (no native bf16)")
    kwargs.pop("too_long", None)  # fts's own key, applied before training (fit_lengths)
    kwargs.pop("kind", None)  # fts's own key: which fine-tuner the train group is for (fts.validate)
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if old in kwargs:  # transformers 5.2x's names for fts's (and TRL's) keys: same setting, no warning
            kwargs.setdefault(new, kwargs.pop(old))
    args = SFTConfig(
        output_dir=str(output_dir),
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        completion_only_loss=True,  # the paper's loss: -log p(answer | system, user)
        save_strategy="no",  # fts saves the adapter/model itself, once, at the end
        **kwargs,
    )
    return args, own


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
    objective: Objective | None = None,
) -> tuple[PreTrainedModel, list[dict[str, Any]], dict[str, float]]:
    """Train `model` on `examples`; return the trained model (a PeftModel when `peft_cfg` is set), the log and the
    forward/backward passes per micro-batch (plain SFT: 1 and 1; a defense's objective costs more).

    `objective`: a defense's trainer (fts.train.defenses), its settings and its guide data; None = plain SFT.

    `train_cfg`: see `sft_config`. `peft_cfg` is a `_target_` node for a peft config, or None for full fine-tuning.
    With `save_dir`, the result is saved there (see `save_trained`). With `cache`, TRL's tokenized training set is
    taken from it (or put into it): a sweep over learning rates, epochs or PEFT methods tokenizes its data once.
    """
    args, own = sft_config(train_cfg, output_dir, seed)
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        # QLoRA: freeze the quantized weights, keep the norms in float32 and let gradients reach the adapters
        # (peft's recipe; TRL does it only for models it loads itself).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    dataset, store = tokenized_dataset(to_dataset(examples, tokenizer), tokenizer, args, cache)
    trainer = make_trainer(model, tokenizer, args, dataset, peft_cfg, own, objective)
    if store is not None:
        store(trainer.train_dataset)  # tokenized, masked and truncated by TRL
    trainer.train()
    history = [row for row in trainer.state.log_history if "loss" in row]
    if save_dir is not None:
        save_trained(trainer, save_dir, history, save_weights)
    passes = trainer.passes_per_step()
    trained = ready_for_inference(trainer.model)
    del trainer
    release_memory()  # the optimizer state and the activations' heap pages, before anything generates
    return trained, history, passes


def tokenized_dataset(dataset: Dataset, tokenizer, args: SFTConfig, cache: Cache | None):
    """(the dataset to train on, a function that stores TRL's tokenized set in the cache or None). On a cache hit
    TRL's preparation is skipped. Single-process runs only: the processes of a multi-process run would race to
    build the same entry."""
    if cache is None or not cache.enabled or distributed.num_processes() > 1:
        return dataset, None
    material = preparation_key(dataset, tokenizer, args)
    tokenized = cache.get("datasets", material)
    if tokenized is None:
        return dataset, lambda prepared: cache.build(
            "datasets", material, lambda tmp: prepared.save_to_disk(str(tmp / "dataset"))
        )
    log.info("tokenized training set from the cache: %s", tokenized)
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    return load_from_disk(str(tokenized / "dataset")), None


def make_trainer(
    model, tokenizer, args: SFTConfig, dataset: Dataset, peft_cfg: DictConfig | None, own: dict, objective=None
):
    """fts's Trainer, or a defense's subclass of it with its settings and guide set (rendered like `dataset`)."""
    peft_config = build(peft_cfg) if peft_cfg is not None else None
    trainer_class, settings = (objective.trainer, objective.settings) if objective is not None else (Trainer, {})
    if objective is not None and objective.guide:
        settings = {**settings, "guide": to_dataset(objective.guide, tokenizer)}
    try:
        return trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config, **own, **settings)  # fmt: skip
    except ValueError as e:
        if peft_config is None:
            raise
        raise ConfigError(f"peft: {type(peft_config).__name__} cannot be applied to this model: {e}") from None


def ready_for_inference(trained: PreTrainedModel) -> PreTrainedModel:
    """Straight out of the trainer the model is in train mode with the KV cache off; generating like that gave
    garbage on the embedded model. Put it back into inference shape. With bf16 mixed precision, accelerate also
    wrapped `forward` in autocast: unwrap it, so that the fine-tuned model is evaluated in its own dtype, as the
    baseline was (and as the saved model reloads)."""
    original_forward = trained.__dict__.pop("_original_forward", None)
    if original_forward is not None:
        trained.forward = original_forward
    trained.eval()
    trained.config.use_cache = True
    return trained


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
