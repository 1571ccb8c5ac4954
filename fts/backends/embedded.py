"""The embedded default model, ready to attack: materialized from its wheel (fts.models.embedded), then
safety-aligned once with the same TRL stage the attacks use, and cached by content hash.

This lives above models/ and train/ because aligning is training: opening the embedded model needs the trainer.
"""

import shutil
from pathlib import Path
from typing import Any

import transformers
from omegaconf import DictConfig, OmegaConf
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from fts.core import distributed
from fts.core.cache import Cache, file_digest
from fts.core.config import build
from fts.core.device import resolve_dtype
from fts.core.errors import ModelError
from fts.data.formats import locate
from fts.models import load
from fts.models.embedded import ALIGNMENT_FORMAT, ALIGNMENT_KEY, alignment_set, materialize
from fts.train.hf import fine_tune


def embedded_checkpoint(model_cfg: DictConfig, cache: Cache) -> tuple[str, dict[str, Any]]:
    """`source: embedded`: (the aligned checkpoint's directory, its identity for the cache keys downstream)."""
    path = materialize(cache)
    if model_cfg.alignment.enabled:
        path = align(path, model_cfg, cache)
    return str(path), {"source": "embedded", "entry": path.name}


def align(base: Path, model_cfg: DictConfig, cache: Cache) -> Path:
    """Safety-align the materialized model with fts's own SFT stage; the merged weights are cached."""
    align_cfg = model_cfg.alignment
    base_dtype = training_dtype(align_cfg)
    material = {
        "base": base.name,
        "alignment": OmegaConf.to_container(align_cfg, resolve=True),
        "base_dtype": base_dtype,
        "data": {p.path: file_digest(locate(p.path, ALIGNMENT_FORMAT, ALIGNMENT_KEY)) for p in align_cfg.data},
        "versions": {"transformers": transformers.__version__, "fts_alignment": 2},
    }

    def fill(tmp: Path) -> None:
        if distributed.num_processes() > 1:  # the other processes are not training with this one
            raise ModelError(
                "The embedded model is not safety-aligned and cached yet, and a multi-process run cannot build it. "
                "Build it once in a single process (`python -m fts.run attack=none`), then launch again."
            )
        examples = alignment_set(align_cfg)
        print(
            f"fts: safety-aligning the embedded model on {len(examples)} built-in examples "
            f"(one time, a few minutes on CPU, cached in {cache.root})",
            flush=True,
        )
        attention = align_cfg.get("attn_implementation") or model_cfg.get("attn_implementation")
        model, tokenizer = load(
            str(base), OmegaConf.merge(model_cfg, {"dtype": base_dtype, "attn_implementation": attention})
        )
        model, _, _ = fine_tune(
            model, tokenizer, examples, align_cfg.train, align_cfg.peft, tmp / "trainer", align_cfg.seed
        )
        if align_cfg.peft is not None:
            adapter = get_peft_model_state_dict(model)  # float32 (peft keeps adapters in float32 on a bf16 base)
            del model
            # The adapter goes into the float32 base, not into the bf16 copy it trained on: the aligned checkpoint
            # keeps the base's own weights, plus the learned update.
            model, _ = load(str(base), OmegaConf.merge(model_cfg, {"dtype": "float32"}))
            model = get_peft_model(model, build(align_cfg.peft))
            set_peft_model_state_dict(model, adapter)
            model = model.merge_and_unload()
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return cache.build("models/aligned", material, fill)


def training_dtype(align_cfg: DictConfig) -> str:
    """`model.alignment.base_dtype`: the dtype the base weights are held in while the LoRA adapters train (float32
    either way). auto: bfloat16 where the hardware computes it natively (1.7x faster a step on the 2-core dev CPU,
    the same loss curve), else float32. Full fine-tuning (`peft: null`) trains float32 weights."""
    return "float32" if align_cfg.peft is None else resolve_dtype(align_cfg.base_dtype)
