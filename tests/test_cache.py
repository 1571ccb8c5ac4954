"""The content-addressed cache: entries are verified on every hit; a corrupt one is rebuilt, never used."""

import json
import logging
import shutil
from pathlib import Path

import pytest

import fts.core.cache
import fts.stages.evaluation
from fts.core.cache import COMPLETE, FILES, Cache
from fts.run import run
from tests.conftest import compose_run

MATERIAL = {"model": "m", "decoding": {"max_new_tokens": 8}}


class Filler:
    """A fill function that writes `files` and counts its calls."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.calls = files, 0

    def __call__(self, tmp) -> None:
        self.calls += 1
        for name, data in self.files.items():
            (tmp / name).write_bytes(data)


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(autouse=True)
def fresh_verification_memo(monkeypatch):
    monkeypatch.setattr(Cache, "_verified", {})


def test_an_entry_records_its_files_and_a_hit_reuses_it(tmp_path):
    cache, fill = Cache(tmp_path), Filler({"generations.jsonl": b'{"id": "a"}\n'})
    entry = cache.build("generations", MATERIAL, fill)
    recorded = json.loads((entry / FILES).read_text())
    assert set(recorded) == {"generations.jsonl", "material.json"}
    assert recorded["generations.jsonl"]["size"] == 12 and not recorded["generations.jsonl"]["sampled"]
    assert cache.build("generations", MATERIAL, fill) == entry and fill.calls == 1


def test_a_flipped_byte_in_cached_generations_is_detected_and_rebuilt(tmp_path, caplog):
    cache, fill = Cache(tmp_path), Filler({"generations.jsonl": b'{"id": "a", "response": "no"}\n'})
    entry = cache.build("generations", MATERIAL, fill)
    flip_byte(entry / "generations.jsonl", 20)
    with caplog.at_level(logging.WARNING, logger="fts.core.cache"):
        assert cache.get("generations", MATERIAL) is None
    assert f"cache entry generations/{entry.name} is corrupt (generations.jsonl does not match" in caplog.text
    assert cache.build("generations", MATERIAL, fill) == entry and fill.calls == 2
    assert (entry / "generations.jsonl").read_bytes() == fill.files["generations.jsonl"]
    assert cache.get("generations", MATERIAL) == entry


def test_a_truncated_weights_file_is_detected_and_rebuilt(tiny_model_dir, tmp_path, caplog):
    from transformers import AutoModelForCausalLM

    def fill(tmp):
        fill.calls += 1
        shutil.copytree(tiny_model_dir, tmp, dirs_exist_ok=True)

    fill.calls = 0
    cache = Cache(tmp_path)
    entry = cache.build("models/aligned", MATERIAL, fill)
    weights = entry / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    with caplog.at_level(logging.WARNING, logger="fts.core.cache"):
        assert cache.build("models/aligned", MATERIAL, fill) == entry
    assert fill.calls == 2 and weights.stat().st_size == size
    assert f"model.safetensors has {size // 2} bytes, expected {size}" in caplog.text
    AutoModelForCausalLM.from_pretrained(entry, use_safetensors=True)  # whole again


def test_big_files_are_checked_by_size_and_sampled_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(fts.core.cache, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(fts.core.cache, "SAMPLE_BYTES", 64)
    cache, fill = Cache(tmp_path), Filler({"model.safetensors": bytes(range(256)) * 400})
    entry = cache.build("models/aligned", MATERIAL, fill)
    assert json.loads((entry / FILES).read_text())["model.safetensors"]["sampled"] is True
    flip_byte(entry / "model.safetensors", 10)  # inside the first sample
    assert cache.get("models/aligned", MATERIAL) is None
    cache.build("models/aligned", MATERIAL, fill)
    (entry / "model.safetensors").write_bytes(fill.files["model.safetensors"] + b"x")  # grown
    assert cache.get("models/aligned", MATERIAL) is None


def test_a_missing_file_or_an_unreadable_record_is_corrupt(tmp_path):
    cache, fill = Cache(tmp_path), Filler({"a.json": b"{}", "b.json": b"[]"})
    entry = cache.build("generations", MATERIAL, fill)
    (entry / "b.json").unlink()
    assert cache.get("generations", MATERIAL) is None
    entry = cache.build("generations", MATERIAL, fill)
    (entry / FILES).write_text("[not json")
    assert cache.get("generations", MATERIAL) is None


def test_an_entry_of_an_older_fts_is_trusted_once_and_recorded(tmp_path):
    entry = Cache(tmp_path).entry("models/aligned", MATERIAL)
    entry.mkdir(parents=True)
    (entry / "model.safetensors").write_bytes(b"weights")
    (entry / COMPLETE).touch()
    assert Cache(tmp_path).get("models/aligned", MATERIAL) == entry
    assert json.loads((entry / FILES).read_text())["model.safetensors"]["size"] == 7


def test_an_entry_verified_once_is_not_hashed_again_while_unchanged(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    entry = cache.build("generations", MATERIAL, Filler({"g.jsonl": b"{}\n"}))
    hashed = []
    real = fts.core.cache.file_digest
    monkeypatch.setattr(fts.core.cache, "file_digest", lambda p: hashed.append(p) or real(p))
    assert cache.get("generations", MATERIAL) == entry and cache.get("generations", MATERIAL) == entry
    assert len(hashed) == 2  # g.jsonl and material.json, once
    flip_byte(entry / "g.jsonl", 0)
    assert cache.get("generations", MATERIAL) is None


def test_a_run_with_corrupt_cached_baseline_generations_regenerates_them(
    tiny_run_overrides, tmp_path, monkeypatch, caplog
):
    """Acceptance 4: the corrupt entry is rebuilt, and the results equal those of a clean run."""
    overrides = [*tiny_run_overrides, "attack=none"]
    clean = run(compose_run(overrides, tmp_path / "clean"))
    (entry,) = (tmp_path / "cache" / "generations").iterdir()
    generations = entry / "generations.jsonl"
    flip_byte(generations, generations.read_bytes().index(b'"response": "') + 14)
    calls = []
    real = fts.stages.evaluation.generate
    monkeypatch.setattr(fts.stages.evaluation, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    with caplog.at_level(logging.WARNING, logger="fts.core.cache"):
        again = run(compose_run(overrides, tmp_path / "again"))
    assert "is corrupt (generations.jsonl does not match its recorded hash); rebuilding it" in caplog.text
    assert calls == [1], "the baseline was generated again, not read from the corrupt entry"
    assert again == clean
    rows = (tmp_path / "again" / "generations" / "baseline.jsonl").read_text()
    assert rows == (tmp_path / "clean" / "generations" / "baseline.jsonl").read_text()


def build_slowly(root: str, log_path: str, hold_s: float) -> str:
    """A process asking the cache for MATERIAL's entry; its build (if it is the one to build) takes `hold_s` and
    appends a line to `log_path`."""
    import time
    from pathlib import Path

    def fill(tmp) -> None:
        with open(log_path, "a") as f:
            f.write("built\n")
        time.sleep(hold_s)
        (tmp / "out.txt").write_text("x")

    return str(Cache(root).build("generations", MATERIAL, fill) / "out.txt") if Path(root).exists() else ""


def test_two_processes_asking_for_one_entry_build_it_once(tmp_path):
    import multiprocessing

    log_path = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        paths = pool.starmap(build_slowly, [(str(tmp_path), str(log_path), 2.0)] * 2)
    assert log_path.read_text() == "built\n"  # the second waited for the first, then took its entry
    assert paths[0] == paths[1] and Path(paths[0]).read_text() == "x"


def test_a_builder_killed_while_holding_the_lock_does_not_block_the_next(tmp_path):
    import multiprocessing
    import os
    import signal
    import time

    log_path = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    stuck = ctx.Process(target=build_slowly, args=(str(tmp_path), str(log_path), 600.0))
    stuck.start()
    deadline = time.monotonic() + 60
    while not (log_path.exists() and log_path.read_text()):  # it holds the lock and is building
        assert time.monotonic() < deadline, "the first builder never started"
        time.sleep(0.1)
    os.kill(stuck.pid, signal.SIGKILL)
    stuck.join()
    started = time.monotonic()
    path = build_slowly(str(tmp_path), str(log_path), 0.0)
    assert time.monotonic() - started < 30 and Path(path).read_text() == "x"
    assert log_path.read_text() == "built\nbuilt\n"  # the killed build left nothing that looks complete
