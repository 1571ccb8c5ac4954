"""Atomic artifact writes: a stage's file either exists whole or not at all, so a rerun resumes cleanly.

The text goes into a temp file next to the target, is flushed to disk, then renamed over it: a crash, a kill or a
full disk mid-write leaves the previous file (if any) intact and no partial one. A write that fails for lack of
space or permission is a user-fixable problem: it raises an ArtifactError naming the file and the fix.
"""

import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fts.core.errors import ArtifactError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_error(path: Path, error: OSError) -> ArtifactError:
    where = f"{path}: cannot write it"
    if error.errno in DISK_FULL:
        return ArtifactError(
            f"{where}, the disk is full ({error.strerror}). Free space on the disk of {path.parent} (or point "
            "hydra.run.dir / cache.dir at a bigger disk), then rerun the same run dir: it resumes where it stopped; "
            "the files already written are intact."
        )
    return ArtifactError(
        f"{where} ({error.strerror or error}). Check that {path.parent} is writable, or point hydra.run.dir / "
        "cache.dir elsewhere, then rerun the same run dir."
    )


def write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a power loss cannot leave an empty "complete" file
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL artifact that fts itself wrote with `write_jsonl` (a run dir's generations, a cache entry's,
    model/events.jsonl). Such a file is whole (written atomically) and well-formed, so this reads it plainly; user
    data files go through the data layer's reader (`fts.data.readers`: size limit, gzip, positions in errors)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
