"""The command line as a new user meets it: the README's sweep from another directory, the app help, exit codes,
an unwritable run dir, Ctrl-C, and a hub that cannot be reached. Each runs `python -m fts.run` in a subprocess."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fts.core.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
# The README's sweep (section "Sweeps, mitigation, W&B and reports"), as written, made tiny by the extra overrides
README_SWEEP = [
    "-m",
    "attack=harmful,aoa",
    "mitigation=safety_mix",
    "mitigation.safety_mix.ratio=0,0.3",
    "train.max_steps=4",
]


def fts(args: list[str], cwd: Path, module: str = "fts.run", **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FTS_ROOT"}  # run dirs under the cwd, as for a new user
    env |= {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def tiny(overrides: list[str]) -> list[str]:
    """The tiny-run overrides, with the smallest evaluation (the sweep has four cells)."""
    return [o for o in overrides if not o.startswith("eval.max_per_category")] + ["eval.max_per_category=1"]


def test_the_readmes_sweep_runs_from_another_directory_and_reports(tiny_run_overrides, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = fts([*README_SWEEP, *tiny(tiny_run_overrides)], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (cwd / "logs" / "run" / "multiruns").iterdir()  # under the cwd, without FTS_ROOT
    assert sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file()) == ["0", "1", "2", "3"]

    report = fts([str(sweep)], tmp_path, module="fts.report")  # from yet another directory
    assert report.returncode == 0, report.stderr[-3000:]
    table = (sweep / "sweep.md").read_text()
    for attack, ratio in (("harmful", "0"), ("harmful", "0.3"), ("aoa", "0"), ("aoa", "0.3")):
        assert any(f"| {attack} " in row and f"| {ratio} " in row for row in table.splitlines()), table

    # The same sweep dir rerun with another ratio: the cells of ratio 0.3 are refused, never relabelled 0.1.
    again = [*README_SWEEP[:-2], "mitigation.safety_mix.ratio=0,0.1", "train.max_steps=4", f"hydra.sweep.dir={sweep}"]
    proc = fts([*again, *tiny(tiny_run_overrides)], cwd)
    assert proc.returncode == 2
    assert "holds the results of another config (mitigation.safety_mix.ratio: 0.3 -> 0.1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    fts([str(sweep)], tmp_path, module="fts.report")
    assert (sweep / "sweep.md").read_text() == table  # every cell still labelled by the config it ran


def test_help_says_what_fts_is_with_groups_and_examples(tmp_path):
    proc = fts(["--help"], tmp_path)
    assert proc.returncode == 0
    assert "how much safety does an aligned language model lose" in proc.stdout
    assert "attack: aoa, aoa_100, backdoor, benign, harmful, none" in proc.stdout
    assert "python -m fts.run -m attack=harmful,aoa mitigation=safety_mix" in proc.stdout


@pytest.mark.parametrize("args", [["attack=nope"], ["attack=[unclosed"]])
def test_a_composition_error_exits_2(args, tmp_path):
    proc = fts([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "python -m fts.run --help" in proc.stderr


def test_an_unwritable_run_dir_is_one_paragraph_before_hydra_writes(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = fts([f"hydra.run.dir={blocker}/run"], tmp_path)  # as root, a file as parent is what cannot be written
    assert proc.returncode == 2
    assert f"fts: error: hydra.run.dir: cannot write into {blocker}/run (Not a directory)" in proc.stderr
    assert "Traceback" not in proc.stderr and "Unable to configure handler" not in proc.stderr
    proc = fts(["-m", "seed=0,1", f"hydra.sweep.dir={blocker}/sweep"], tmp_path)
    assert proc.returncode == 2
    assert "hydra.sweep.dir: cannot write into" in proc.stderr


def test_ctrl_c_says_how_to_resume(tiny_run_overrides, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "fts.run", *tiny_run_overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run_dir / "train.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the job has started: its first stage is written
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert f"fts: interrupted; rerun the same command with hydra.run.dir={run_dir} to resume" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


def test_an_unreachable_hub_fails_in_seconds(monkeypatch):
    import socket

    from huggingface_hub import constants

    from fts.models import check_hub_reachable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"'nobody/no-model' is not in the local Hugging Face cache .* cannot be"):
        check_hub_reachable("nobody/no-model", None)
    assert time.monotonic() - started < 10
