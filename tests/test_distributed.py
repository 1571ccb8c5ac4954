"""Two processes (DDP over gloo on CPU) run one cell: both train, the main one writes the one run dir.

On GPUs the launcher is `accelerate launch --config_file experiments/accelerate/<ddp|fsdp|...>.yaml -m fts.run`; on
CPU, accelerate launches several processes only through mpirun, so this test uses torchrun (`torch.distributed.run`),
the launcher accelerate's multi-GPU path runs, with the same environment (RANK, WORLD_SIZE, LOCAL_RANK, ...).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_together_and_write_one_run_dir(tiny_run_overrides, tmp_path):
    out = tmp_path / "run"
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    launch += ["-m", "fts.run", *tiny_run_overrides, f"hydra.run.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FTS_ROOT": str(tmp_path)}  # any other run dir would go here
    proc = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    assert {"baseline", "finetuned", "delta"} <= set(json.loads((out / "metrics.json").read_text()))
    assert (out / "model" / "adapter_model.safetensors").exists() and (out / "model" / "complete").exists()
    # 10 AOA examples, 5 per process and step: 2 processes make 1 update per epoch (1 process would make 2)
    assert len(json.loads((out / "model" / "train_log.json").read_text())) == 2
    assert not (out / "checkpoints").exists() and not (tmp_path / "logs").exists()
