"""Fault injection: a full disk mid-write, a judge endpoint that fails mid-run. Each stops the run with one
paragraph naming the file or key and the fix, loses nothing already written, and a rerun of the run dir resumes."""

import errno
import json
import os

import pytest

import fts.backends.hf
import fts.core.artifacts
import fts.run
from fts.core.artifacts import write_json
from fts.core.errors import ArtifactError, FtsError
from fts.judges.api import JudgeError
from fts.run import run
from tests.conftest import compose_run
from tests.openai_server import FakeOpenAI

NO_SPACE = "No space left on device"


class FullDisk:
    """Wraps a temp file: the first write stores half the text, then the disk is full."""

    def __init__(self, file) -> None:
        self.file = file

    def write(self, text: str) -> int:
        self.file.write(text[: len(text) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, NO_SPACE)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def fill_disk_on(monkeypatch, name_part: str) -> None:
    """Writes through fts.core.artifacts to a file whose name contains `name_part` hit a full disk mid-write."""
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        file = real(fd, *args, **kwargs)
        return FullDisk(file) if name_part in os.readlink(f"/proc/self/fd/{fd}") else file

    monkeypatch.setattr(fts.core.artifacts.os, "fdopen", fdopen)


def test_a_full_disk_mid_write_keeps_the_previous_file_and_says_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"asr": 0.5})
    before = path.read_bytes()
    fill_disk_on(monkeypatch, "metrics.json")
    with pytest.raises(ArtifactError) as err:
        write_json(path, {"asr": 0.9, "padding": "x" * 10_000})
    assert str(err.value).startswith(f"{path}: cannot write it, the disk is full ({NO_SPACE}). Free space")
    assert "rerun the same run dir: it resumes" in str(err.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "no partial temp file is left behind"


def test_an_unwritable_run_dir_is_named_with_the_fix(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("a file where the run dir should be")
    with pytest.raises(ArtifactError, match=r"run/train\.jsonl: cannot write it .*Check that .*run is writable"):
        write_json(blocker / "train.jsonl", {})


def test_a_run_that_fills_the_disk_stops_cleanly_and_resumes(tiny_run_overrides, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patched:
        fill_disk_on(patched, ".finetuned.jsonl.")
        with pytest.raises(ArtifactError, match=r"generations/finetuned\.jsonl: cannot write it, the disk is full"):
            run(compose_run(tiny_run_overrides, out))
    assert (out / "model" / "complete").exists() and (out / "generations" / "baseline.jsonl").exists()
    assert not list((out / "generations").glob(".*.tmp")) and not (out / "generations" / "finetuned.jsonl").exists()
    monkeypatch.setattr(fts.backends.hf, "fine_tune", lambda *a, **k: pytest.fail("the saved model is reloaded"))
    result = run(compose_run(tiny_run_overrides, out))
    assert json.loads((out / "metrics.json").read_text()) == result and (out / "done").exists()


def test_a_full_disk_outside_fts_artifacts_is_a_user_error_too(monkeypatch, tmp_path):
    def full(cfg):
        raise OSError(errno.ENOSPC, NO_SPACE, str(tmp_path / "model" / "model.safetensors"))

    monkeypatch.setattr(fts.run, "run", full)
    cfg = compose_run([], tmp_path)
    with pytest.raises(FtsError, match=r"model/model\.safetensors: cannot write it, the disk is full"):
        fts.run.run_explaining_full_disk(cfg)


def test_a_judge_endpoint_failing_mid_run_stops_it_and_the_rerun_resumes(tiny_run_overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    server = FakeOpenAI(failure=lambda n: 503 if n > 6 else None).start()
    overrides = [
        *tiny_run_overrides,
        "judge=[keyword,gpt4]",
        f"judge.gpt4.base_url={server.base_url}",
        "judge.gpt4.max_retries=1",
        "judge.gpt4.backoff_s=0.01",
        "judge.gpt4.max_concurrency=1",
    ]
    out = tmp_path / "run"
    try:
        with pytest.raises(JudgeError) as err:
            run(compose_run(overrides, out))
        assert "judge.gpt4: request failed after 2 attempt(s) (InternalServerError, HTTP 503" in str(err.value)
        assert "Verdicts so far are cached; a rerun resumes." in str(err.value)
        assert not (out / "generations" / "baseline.jsonl").exists()
        server.failure = lambda n: None
        sent_before = server.count()
        result = run(compose_run(overrides, out))
        assert result["baseline"]["gpt4"]["unscored"] == 0
        resent = server.count() - sent_before
        assert resent == result["judge_usage"]["gpt4"]["requests"]
        assert result["judge_usage"]["gpt4"]["cached"] >= 6, "the verdicts given before the failure were kept"
    finally:
        server.stop()


def test_an_unreadable_verdict_cache_is_set_aside_not_used(tmp_path, caplog):
    import logging

    from fts.judges.api import ApiJudge
    from fts.judges.verdict_cache import FILENAME

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / FILENAME).write_bytes(b"this is not a database" * 100)
    server = FakeOpenAI().start()
    try:
        judge = ApiJudge(model="judge", base_url=server.base_url, cache_dir=str(tmp_path / "cache"), name="rubric")
        with caplog.at_level(logging.WARNING, logger="fts.judges.verdict_cache"):
            (verdict,) = judge.judge([{"prompt": "p", "response": "r"}])
        assert verdict["score"] == 1
        assert f"the verdict cache {tmp_path / 'cache' / FILENAME} is unreadable" in caplog.text
        assert len(list((tmp_path / "cache").glob(f"{FILENAME}.corrupt-*"))) == 1
        again = ApiJudge(model="judge", base_url=server.base_url, cache_dir=str(tmp_path / "cache"), name="rubric")
        again.judge([{"prompt": "p", "response": "r"}])
        assert server.count() == 1, "the new cache works: the verdict is not requested twice"
    finally:
        server.stop()
