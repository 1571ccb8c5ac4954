"""A crash at any stage boundary loses nothing: rerunning the same run dir resumes and ends exactly where an
uninterrupted run ends (same fine-tuning set, same greedy generations, same metrics)."""

import json

import pytest

import fts.backends.hf
import fts.results.cell
import fts.run
import fts.stages.evaluation
import fts.stages.training_set
import fts.train.hf
from fts.run import run
from tests.conftest import compose_run

ARTIFACTS = ("train.jsonl", "generations/baseline.jsonl", "model/complete", "generations/finetuned.jsonl")
ARTIFACTS += ("metrics.json", "done")


def overrides(model_dir, cache_dir) -> list[str]:
    return [
        "model=hf",
        f"model.path={model_dir}",
        f"cache.dir={cache_dir}",
        "eval.max_per_category=1",
        "eval.max_benign=2",
        "eval.max_utility=2",
        "eval.max_new_tokens=8",
        "train.num_train_epochs=1",
    ]


def outputs(out) -> dict[str, str]:
    """What a finished run dir must hold, byte for byte."""
    files = ("train.jsonl", "generations/baseline.jsonl", "generations/finetuned.jsonl", "metrics.json")
    return {name: (out / name).read_text() for name in files}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    run(compose_run(overrides(tiny_model_dir, tmp / "cache"), tmp / "run"))
    return outputs(tmp / "run")


def crash_after(monkeypatch, module, name: str, when=lambda *a, **k: True) -> None:
    """Make `module.name` raise KeyboardInterrupt (a Ctrl-C, a scheduler's kill) right after it returns."""
    real = getattr(module, name)

    def crashing(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(*args, **kwargs):
            raise KeyboardInterrupt(f"simulated crash after {name}")
        return result

    monkeypatch.setattr(module, name, crashing)


def crash_before_metrics(monkeypatch) -> None:
    real = fts.results.cell.write_json

    def crashing(path, obj):
        if path.name == "metrics.json":
            raise KeyboardInterrupt("simulated crash before metrics.json")
        return real(path, obj)

    monkeypatch.setattr(fts.results.cell, "write_json", crashing)


def named(file_name: str):
    return lambda path, rows: path.name == file_name


BOUNDARIES = {
    "after train.jsonl": (lambda mp: crash_after(mp, fts.stages.training_set, "write_jsonl", named("train.jsonl")), 1),
    "after the baseline generations": (
        lambda mp: crash_after(mp, fts.stages.evaluation, "write_jsonl", named("baseline.jsonl")),
        2,
    ),
    "after the model is saved": (lambda mp: crash_after(mp, fts.train.hf, "save_trained"), 3),
    "after the finetuned generations": (
        lambda mp: crash_after(mp, fts.stages.evaluation, "write_jsonl", named("finetuned.jsonl")),
        4,
    ),
    "before metrics.json": (crash_before_metrics, 4),
}


@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_a_crash_at_a_stage_boundary_resumes_to_the_same_result(
    boundary, uninterrupted, tiny_model_dir, tmp_path, monkeypatch
):
    plant, n_written = BOUNDARIES[boundary]
    cfg_overrides, out = overrides(tiny_model_dir, tmp_path / "cache"), tmp_path / "run"
    with monkeypatch.context() as patched:
        plant(patched)
        with pytest.raises(KeyboardInterrupt):
            run(compose_run(cfg_overrides, out))
    written = [name for name in ARTIFACTS if (out / name).exists()]
    assert written == list(ARTIFACTS[:n_written]), f"the crash {boundary} left {written}"

    trained = []
    real_fine_tune = fts.backends.hf.fine_tune
    monkeypatch.setattr(fts.backends.hf, "fine_tune", lambda *a, **k: trained.append(1) or real_fine_tune(*a, **k))
    result = run(compose_run(cfg_overrides, out))
    assert outputs(out) == uninterrupted
    assert json.loads(uninterrupted["metrics.json"]) == result
    assert trained == ([] if n_written >= 3 else [1]), "a saved model is reloaded, not trained again"
    assert (out / "done").exists() and not (out / "checkpoints").exists()


@pytest.mark.slow  # ~30 s: a subprocess run; the in-process crashes above cover every boundary in the fast suite
def test_a_sigkilled_run_resumes_to_the_same_result(uninterrupted, tiny_model_dir, tmp_path):
    """A real kill -9 (no exception handler, no finally) as soon as the trained model is on disk."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    cfg_overrides, out = overrides(tiny_model_dir, tmp_path / "cache"), tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "fts.run", *cfg_overrides, f"hydra.run.dir={out}"]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "model" / "complete").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "done").exists()
    result = run(compose_run(cfg_overrides, out))
    assert outputs(out) == uninterrupted
    assert json.loads(uninterrupted["metrics.json"]) == result
