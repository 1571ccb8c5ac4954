"""The one reader layer under every data loader: a spec located, a file read (size limit, gzip, UTF-8), its JSON or
JSONL records and CSV rows with their positions, and a record's text fields checked.

A spec is `builtin:<file>` (a file shipped in `fts/data/builtin/`) or a local path. fts never downloads at run time:
a missing path or a hub id raises a `DataError` naming the config key (and, for a format, where to get the data).
Every error names the file and the position: JSONL/CSV line numbers (1-based) or JSON array indexes (0-based).
"""

import csv
import gzip
import io
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

from fts.core.errors import DataError

BUILTIN_DIR = Path(__file__).parent / "builtin"
# The largest data file fts reads (its text is held in memory whole). The paper's data sets are far smaller, so a
# file over this is most likely the wrong file (an archive, a model), and it fails before it is read.
MAX_DATA_BYTES = 2 << 30
MAX_DATA_BYTES_ENV = "FTS_MAX_DATA_BYTES"  # raises (or lowers) the limit for one run, in bytes
HUB_ID = re.compile(r"^(?!.*\.(csv|jsonl?|gz|txt)$)[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, not a file name
ONE_PER_LINE = "fix or delete this line (one JSON object per line)"

# --- locating a spec ----------------------------------------------------------------------------------------------


def resolve(spec: str | Path, key: str = "data", fmt: str = "", download: str = "", folders: bool = False) -> Path:
    """A spec -> an existing path, or raise naming the config key `key`. A folder raises unless `folders`. With a
    format `fmt` and its `download` instructions, a missing path or a hub id says where to get the data."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        return builtin(spec, key)
    path = Path(spec).expanduser()
    if path.is_dir() and not folders:
        raise DataError(f"{key}: '{spec}' is a folder ({path}); {key} takes one file. Set {key} to a file in it.")
    if path.exists():
        return path
    if not download:
        raise DataError(f"{key}: '{spec}' does not exist ({path}). Set {key} to an existing file; {builtins()}.")
    if HUB_ID.match(spec):
        # Runs must be reproducible and offline-safe, so hub ids are never fetched behind the user's back.
        lead = f"'{spec}' looks like a Hugging Face hub dataset id, but fts reads {fmt} data only from local files."
    else:
        lead = f"'{spec}' does not exist ({path.resolve()})."
    raise DataError(f"{key}: {lead} Download the data first: {download} Then set {key}=<local path>.")


def builtin(spec: str, key: str) -> Path:
    """A `builtin:<file>` spec -> the shipped file."""
    path = BUILTIN_DIR / spec.removeprefix("builtin:")
    if path.is_dir():
        raise DataError(f"{key}: '{spec}' is a folder ({path}); {key} takes one file. Set {key} to a file in it.")
    if not path.is_file():
        raise DataError(f"{key}: file '{spec}' does not exist ({path}). Set {key} to an existing file; {builtins()}.")
    return path


def builtins() -> str:
    return f"built-in files are: {', '.join(sorted(p.name for p in BUILTIN_DIR.glob('*.jsonl')))}"


# --- reading a file -----------------------------------------------------------------------------------------------


def size_limit() -> int:
    """MAX_DATA_BYTES, or the FTS_MAX_DATA_BYTES environment variable when it is set."""
    value = os.environ.get(MAX_DATA_BYTES_ENV, "").strip()
    if not value:
        return MAX_DATA_BYTES
    if not value.isdigit() or int(value) < 1:
        default = gib(MAX_DATA_BYTES)
        raise DataError(f"{MAX_DATA_BYTES_ENV}={value!r} must be a positive number of bytes; unset it for {default}.")
    return int(value)


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB ({n} bytes)"


def too_big(path: Path, what: str) -> DataError:
    return DataError(
        f"{path}: the file {what} fts's limit of {gib(size_limit())} for a data file, which is read into memory "
        "whole. Check that this is the data file you meant (not an archive or a model), split it, or raise the "
        f"limit with the environment variable {MAX_DATA_BYTES_ENV}=<bytes>."
    )


def check_size(path: Path) -> Path:
    """Raise before a file over the limit is read (validation calls this too, before any model loads)."""
    size = path.stat().st_size
    if size > size_limit():
        raise too_big(path, f"is {gib(size)}, over")
    return path


def read_text(path: Path) -> str:
    """A (possibly gzipped) UTF-8 file as text; bytes that are not UTF-8 raise naming the line."""
    data = check_size(path).read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic: hh-rlhf ships its transcripts as .jsonl.gz
        data = gunzip(path, data)
    try:
        text = data.decode("utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {e.start}). Re-save the file as UTF-8.") from None
    return text


def gunzip(path: Path, data: bytes) -> bytes:
    """Decompressed, but never past the size limit (a small .gz can hold a huge file)."""
    limit = size_limit()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: a damaged gzip file ({e}). Download it again.") from None
    if len(out) > limit:
        raise too_big(path, "decompresses to more than")
    return out


# --- records and rows ---------------------------------------------------------------------------------------------


def parse_json(text: str, where: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg}); {expected}.") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply; {expected}.") from None


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines. Split on newlines only: str.splitlines would also split inside
    a JSON string holding U+2028 or a form feed, which json.dumps(ensure_ascii=False) writes raw."""
    return [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]


def read_records(
    path: Path, required: tuple[str, ...] = (), lists_as: str | None = None
) -> list[tuple[str, str, dict]]:
    """A JSON array or JSONL file (sniffed, since mirrors of the datasets use both) -> [(where, position, object)];
    a malformed line, a non-object, a missing `required` field or an empty file raises naming file and position.
    With `lists_as`, a record that is a JSON list becomes {lists_as: list}: the paper's Llama-2 AOA train.json is an
    array of conversations, each a bare list of messages."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        located = [(f"{path}[{i}]", str(i), row) for i, row in enumerate(json_array(path, text))]
    else:
        located = []
        for lineno, line in numbered_lines(text):
            where = f"{path}:{lineno}"
            located.append((where, str(lineno), parse_json(line, where, ONE_PER_LINE)))
    if lists_as is not None:
        located = [(where, pos, {lists_as: row} if isinstance(row, list) else row) for where, pos, row in located]
    for where, _, row in located:
        if not isinstance(row, dict):
            hint = (
                " (a list of messages is a conversation: name a conversation format)" if isinstance(row, list) else ""
            )
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}{hint}.")
        missing = [k for k in required if k not in row]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}; each record needs {list(required)}.")
    if not located:
        raise DataError(f"{path}: the file has no records. Point the config at a non-empty file.")
    return located


def json_array(path: Path, text: str) -> list:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}). Fix the file or re-download it.") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply. Fix the file or re-download it.") from None
    if not isinstance(rows, list):  # `[1] 2`-like text is caught above; this is for safety
        raise DataError(f"{path}: expected a JSON array of objects.")
    return rows


def csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line, cells) of a CSV's non-blank rows; quoted commas and newlines are honoured."""
    reader = csv.reader(io.StringIO(read_text(path)), strict=True)  # a stray quote must not swallow rows
    rows = []
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e}); check the quoting.") from None
    if not rows:
        raise DataError(f"{path}: the file has no rows. Point the config at the downloaded CSV.")
    return rows


def csv_dicts(path: Path) -> list[dict[str, str]]:
    """A CSV with a header row -> one dict per row ([] for a file without rows)."""
    reader = csv.DictReader(io.StringIO(read_text(path)), strict=True)
    try:
        return list(reader)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e}); check the quoting.") from None


def text_field(row: dict, name: str, where: str, nonempty: bool = True, default: str | None = None) -> str:
    """A string field of a record (`default` when it is absent and a default is given), non-blank unless `nonempty`
    is false; anything else raises naming it."""
    value = row.get(name, default)
    if not isinstance(value, str):
        found = f"got {type(value).__name__}" if name in row else "it is missing"
        raise DataError(f"{where}: field '{name}' must be a string; {found}.")
    if nonempty and not value.strip():
        raise DataError(f"{where}: field '{name}' is empty; expected non-empty text.")
    return value
