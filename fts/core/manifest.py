"""`manifest.json` of a run: versions, git sha, data hashes, seeds, cache keys and stage timings."""

import platform
import subprocess
import time
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fts.core.artifacts import write_json

PACKAGES = ("fts", "torch", "transformers", "trl", "peft", "hydra-core", "datasets", "accelerate")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    try:
        cwd = Path(__file__).parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Manifest:
    def __init__(self, run_dir: Path, cache_events: list[dict] | None = None, **fields: Any) -> None:
        self.path = run_dir / "manifest.json"
        self.data: dict[str, Any] = {"versions": package_versions(), "git_sha": git_sha(), **fields, "timings_s": {}}
        self.cache_events = cache_events  # the run's Cache.events, written with every save
        self.save()

    def record(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        yield
        self.data["timings_s"][name] = round(time.perf_counter() - started, 2)
        self.save()

    def save(self) -> None:
        if self.cache_events is not None:
            self.data["cache"] = list(self.cache_events)
        write_json(self.path, self.data)
