"""Shared by the benchmarks: this checkout's fts, its config composed as `python -m fts.run <overrides>` would, and
the run's model opened through fts (the embedded aligned model from `$FTS_CACHE`, or a local HF dir)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # measure this checkout's fts, whatever an editable install points at
    sys.path.insert(0, str(ROOT))

from omegaconf import DictConfig  # noqa: E402

from fts.core.config import compose_run  # noqa: E402, F401 (the benchmarks import it from here)


def model_overrides(model_path: str | None) -> list[str]:
    """`--model-path DIR`: any local HF model (e.g. the tests' tiny random Llama) instead of the embedded one."""
    return ["model=hf", f"model.path={model_path}"] if model_path else []


def open_run_model(cfg: DictConfig):
    """(model, tokenizer, checkpoint) of the run's model, resolved (materialized, aligned, cached) as fts.run does."""
    from fts.backends.hf import open_model
    from fts.core.cache import Cache

    model, tokenizer, _, checkpoint = open_model(cfg.model, Cache(cfg.cache.dir, enabled=cfg.cache.enabled))
    return model, tokenizer, checkpoint


def run_checkpoint(cfg: DictConfig) -> str:
    """The run's model checkpoint (path), resolved as fts.run does, without loading it."""
    from fts.backends.hf import resolve_checkpoint
    from fts.core.cache import Cache

    checkpoint, _ = resolve_checkpoint(cfg.model, Cache(cfg.cache.dir, enabled=cfg.cache.enabled))
    return checkpoint
