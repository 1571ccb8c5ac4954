"""The embedded default model, ready to attack: materialized from its wheel (fts.models.embedded), then
safety-aligned once with the same TRL stage the attacks use, and cached by content hash.

This lives above models/ and train/ because aligning is training: opening the embedded model needs the trainer.
"""

import shutil
from pathlib import Path
from typing import Any

import transformers
from omegaconf import DictConfig, OmegaConf

from fts.core import distributed
from fts.core.cache import Cache, file_digest
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
    material = {
        "base": base.name,
        "alignment": OmegaConf.to_container(align_cfg, resolve=True),
        "data": {p.path: file_digest(locate(p.path, ALIGNMENT_FORMAT, ALIGNMENT_KEY)) for p in align_cfg.data},
        "versions": {"transformers": transformers.__version__, "fts_alignment": 1},
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
        model, tokenizer = load(str(base), model_cfg)
        model, _, _ = fine_tune(
            model, tokenizer, examples, align_cfg.train, align_cfg.peft, tmp / "trainer", align_cfg.seed
        )
        model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return cache.build("models/aligned", material, fill)
