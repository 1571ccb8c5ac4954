"""Multi-process runs: `accelerate launch [--config_file ...] -m fts.run hydra.run.dir=<dir> ...`.

Every process builds the same fine-tuning set and trains (DDP, FSDP or DeepSpeed, as the accelerate config says);
only the main process writes the run dir, evaluates and logs. The other processes wait at a barrier while the main
one resolves the model and evaluates the baseline, so the process group is created here, first, with a timeout long
enough for that (`train.ddp_timeout`); the trainer then reuses it. In a single process all of this is a no-op.
"""

import os
from datetime import timedelta

import torch
from accelerate import PartialState
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from fts.core.errors import ConfigError


def num_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(timeout_s: int) -> None:
    """Create the process group with a timeout that covers the main process's evaluation."""
    if num_processes() > 1:
        check_run_dir()
        PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))


def is_main() -> bool:
    return num_processes() == 1 or PartialState().is_main_process


def barrier() -> None:
    if num_processes() > 1:
        PartialState().wait_for_everyone()


def check_run_dir() -> None:
    """Each process composes its own config: Hydra's timestamped run dir would differ between them."""
    if not HydraConfig.initialized():
        return  # run() called from Python (tests): the caller chose the output dir
    hydra = HydraConfig.get()
    key = "hydra.sweep.dir" if hydra.mode == RunMode.MULTIRUN else "hydra.run.dir"
    if not any(o.startswith(f"{key}=") for o in hydra.overrides.hydra):
        raise ConfigError(
            f"{num_processes()} processes need one run dir: add {key}=<dir> to the command line (each process "
            "would otherwise write into its own timestamped dir)."
        )
