"""Content-addressed artifact store: what makes reruns and sweeps cheap.

An entry lives in `<root>/<kind>/<key>/`, where key = hash of everything that determines its content (model
identity, data file hashes, templates, decoding config, ...): keys, never paths. An entry is built in a temp dir and
renamed into place, so a crash never leaves a half-built entry that looks complete.

Every entry records the size and hash of each of its files (`files.json`); a hit is verified against it, and an entry
that fails (a flipped byte, a truncated weights file, a missing file) is rebuilt, never used. Cost: files up to
FULL_HASH_BYTES are hashed whole (sha256 ran at ~1.3 GB/s here: 0.4 s for the embedded model's 540 MB of weights);
bigger ones by size plus a hash of SAMPLES chunks spread over the file (truncation and most partial writes show;
a single flipped byte in a multi-GB file may not). An entry verified once is not hashed again in this process while
its files' sizes and mtimes stay the same.

Building an entry holds a file lock beside it (`filelock`, an OS-level lock): processes that ask for the same entry
at once (the cells of a parallel sweep, each wanting the same baseline) wait for the first builder and then take its
entry from the cache. The operating system releases the lock of a process that dies, so a killed builder never
blocks the others; its half-built temp dir is removed by the next builder.
"""

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from fts.core.artifacts import write_text

log = logging.getLogger(__name__)
COMPLETE = ".complete"
FILES = "files.json"  # {relative path: {"size", "sha256", "sampled"}} of the entry's files, written at build time
FULL_HASH_BYTES = 1 << 30
SAMPLES, SAMPLE_BYTES = 32, 1 << 20


def digest(material: Any) -> str:
    """Stable hash of any JSON-serializable value."""
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def sampled_digest(path: Path, size: int) -> str:
    """Hash of SAMPLES chunks spread evenly over a big file, first and last included."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for i in range(SAMPLES):
            f.seek(i * max(size - SAMPLE_BYTES, 0) // (SAMPLES - 1))
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:20]


def fingerprint(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    sampled = size > FULL_HASH_BYTES
    return {"size": size, "sha256": sampled_digest(path, size) if sampled else file_digest(path), "sampled": sampled}


def entry_files(entry: Path) -> list[Path]:
    return sorted(p for p in entry.rglob("*") if p.is_file() and p.name not in (COMPLETE, FILES))


def record_files(entry: Path) -> None:
    files = {str(p.relative_to(entry)): fingerprint(p) for p in entry_files(entry)}
    write_text(entry / FILES, json.dumps(files, indent=1, sort_keys=True))


def entry_problems(entry: Path) -> list[str]:
    """What is wrong with an entry's files, compared with what was recorded when it was built ([] = intact)."""
    if not (entry / FILES).exists():
        # An entry built before fts recorded hashes: trust it once (rebuilding an aligned model costs minutes)
        log.info("cache entry %s has no %s (built by an older fts); recording its hashes now", entry, FILES)
        try:
            record_files(entry)
        except OSError as e:  # a read-only shared cache: use the entry unverified
            log.warning("cannot record the hashes of cache entry %s (%s); using it unverified", entry, e)
        return []
    try:
        recorded = json.loads((entry / FILES).read_text())
        return [problem for name, expected in recorded.items() if (problem := file_problem(entry, name, expected))]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return [f"{FILES} is unreadable"]


def file_problem(entry: Path, name: str, expected: dict[str, Any]) -> str | None:
    path = entry / name
    if not path.resolve().is_relative_to(entry.resolve()):  # a tampered record must not make fts read elsewhere
        return f"{FILES} names {name}, outside the entry"
    if not path.is_file():
        return f"{name} is missing"
    if path.stat().st_size != expected["size"]:
        return f"{name} has {path.stat().st_size} bytes, expected {expected['size']}"
    if fingerprint(path)["sha256"] != expected["sha256"]:
        return f"{name} does not match its recorded hash"
    return None


def stat_signature(entry: Path) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in entry_files(entry))


class Cache:
    _verified: dict[Path, tuple] = {}  # entry -> stat signature when its hashes last matched (this process)

    def __init__(self, root: str | Path, enabled: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.enabled = enabled
        # what each build() did, in order ({kind, entry, result}): manifest.json's `cache`, so that a sweep's run dirs
        # show which cell built a shared entry and which found it
        self.events: list[dict[str, str]] = []

    def entry(self, kind: str, material: Any) -> Path:
        return self.root / kind / digest(material)

    def get(self, kind: str, material: Any) -> Path | None:
        """The complete, intact entry for `material`, or None (missing, disabled, or corrupt: then it is rebuilt)."""
        path = self.entry(kind, material)
        if not self.enabled or not (path / COMPLETE).exists():
            return None
        return path if self.intact(path, kind) else None

    def intact(self, path: Path, kind: str) -> bool:
        signature = stat_signature(path)
        if self._verified.get(path) == signature:
            return True
        problems = entry_problems(path)
        if problems:
            log.warning("cache entry %s/%s is corrupt (%s); rebuilding it", kind, path.name, "; ".join(problems))
            return False
        self._verified[path] = signature
        return True

    def build(self, kind: str, material: Any, fill: Callable[[Path], None]) -> Path:
        """Return the entry for `material`, calling `fill(tmp_dir)` to build it when it is missing; one process
        builds an entry at a time, the others wait and then find it built.

        With the cache disabled the entry is rebuilt (and replaced) every time.
        """
        path = self.entry(kind, material)
        if self.get(kind, material):
            log.info("cache hit: %s/%s", kind, path.name)
            self.events.append({"kind": kind, "entry": path.name, "result": "hit"})
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock(kind, path):
            if self.enabled and self.get(kind, material):  # built by another process while this one waited
                log.info("cache hit: %s/%s (built by another process)", kind, path.name)
                self.events.append({"kind": kind, "entry": path.name, "result": "hit, built by another process"})
                return path
            self.fill_entry(path, material, fill)
        self.events.append({"kind": kind, "entry": path.name, "result": "built"})
        return path

    @contextmanager
    def lock(self, kind: str, path: Path) -> Iterator[None]:
        """Hold the lock of an entry (in <root>/.locks/, apart from the entries); says so when another process
        holds it (its build may take minutes)."""
        lock_path = self.root / ".locks" / kind / f"{path.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process to build cache entry %s", path)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def fill_entry(path: Path, material: Any, fill: Callable[[Path], None]) -> None:
        """Build the entry in a temp dir and rename it into place: a crash never leaves a complete-looking one."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            fill(tmp)
            (tmp / "material.json").write_text(json.dumps(material, indent=2, sort_keys=True, default=str))
            record_files(tmp)
            (tmp / COMPLETE).touch()
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
