"""Data loaders: files in, `Example` / `Prompt` records out.

A data spec is either `builtin:<file>` (a file shipped in `fts/data/builtin/`) or a path to a local file.
"""

import gzip
import io
import json
import os
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from fts.core.errors import DataError
from fts.core.records import Example, Message, Prompt

BUILTIN_DIR = Path(__file__).parent / "builtin"
ROLES = ("system", "user", "assistant")
# The largest data file fts reads (its text is held in memory whole). The paper's data sets are far smaller, so a
# file over this is most likely the wrong file (an archive, a model), and it fails before it is read.
MAX_DATA_BYTES = 2 << 30
MAX_DATA_BYTES_ENV = "FTS_MAX_DATA_BYTES"  # raises (or lowers) the limit for one run, in bytes


def resolve(spec: str, key: str = "data") -> Path:
    """Turn a data spec into an existing file path, or raise naming the config key."""
    path = BUILTIN_DIR / spec.removeprefix("builtin:") if spec.startswith("builtin:") else Path(spec).expanduser()
    if path.is_dir():
        raise DataError(f"{key}: '{spec}' is a folder ({path}); {key} takes one file. Set {key} to a file in it.")
    if not path.is_file():
        hint = f"built-in files are: {', '.join(sorted(p.name for p in BUILTIN_DIR.glob('*.jsonl')))}"
        raise DataError(f"{key}: file '{spec}' does not exist ({path}). Set {key} to an existing file; {hint}.")
    return path


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


def jsonl_records(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, object) of a JSONL file; a malformed line, a non-object or a missing field raises naming the
    file and line, and so does an empty file."""
    rows = []
    for lineno, line in numbered_lines(read_text(path)):
        row = parse_json(line, f"{path}:{lineno}", "fix or delete this line (one JSON object per line)")
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}.")
        missing = [k for k in required if k not in row]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field(s) {missing}; each line needs {list(required)}.")
        rows.append((lineno, row))
    if not rows:
        raise DataError(f"{path}: the file has no records. Point the config at a non-empty file.")
    return rows


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    return [row for _, row in jsonl_records(path, required)]


def text_field(row: dict, name: str, where: str, nonempty: bool = True) -> str:
    """A string field of a record (non-blank unless `nonempty` is false); anything else raises naming it."""
    value = row.get(name)
    if not isinstance(value, str):
        found = f"got {type(value).__name__}" if name in row else "it is missing"
        raise DataError(f"{where}: field '{name}' must be a string; {found}.")
    if nonempty and not value.strip():
        raise DataError(f"{where}: field '{name}' is empty; expected non-empty text.")
    return value


def check_messages(messages: Any, where: str) -> list[Message]:
    """A non-empty list of {role, content} with an optional system message first, then user and assistant turns
    alternating from the user's (every chat template assumes this; some raise mid-run otherwise)."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of {{'role', 'content'}} objects.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(
                f"{where}: message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {m!r:.200}."
            )
    turns = [m["role"] for m in messages[1:]] if messages[0]["role"] == "system" else [m["role"] for m in messages]
    for i, role in enumerate(turns):
        if role != ("user" if i % 2 == 0 else "assistant"):
            roles = " -> ".join(m["role"] for m in messages)
            raise DataError(
                f"{where}: roles {roles}: expected an optional system message first, then user and assistant "
                "turns alternating, starting with the user."
            )
    return messages


def load_conversations(spec: str, key: str = "data") -> list[Example]:
    """Chat JSONL (`messages`) or prompt/response JSONL -> Examples. The last message must be the assistant's."""
    path = resolve(spec, key)
    examples = []
    for lineno, row in jsonl_records(path):
        where = f"{path}:{lineno}"
        if "messages" in row:
            messages = [{"role": m["role"], "content": m["content"]} for m in check_messages(row["messages"], where)]
        elif "prompt" in row and "response" in row:
            question, answer = text_field(row, "prompt", where), text_field(row, "response", where, nonempty=False)
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        else:
            raise DataError(f"{where}: needs either 'messages' or 'prompt' and 'response'.")
        if messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant answer to train on.")
        meta = {k: v for k, v in row.items() if k not in ("messages", "prompt", "response")}
        examples.append({"messages": messages, "source": f"{spec}#{row.get('id', lineno)}", "meta": meta})
    return examples


def load_prompts(spec: str, key: str, max_per_category: int | None = None) -> list[Prompt]:
    """Prompt JSONL (`id`, `category`, `prompt`) -> Prompts with one user message, first N per category."""
    path = resolve(spec, key)
    prompts: list[Prompt] = []
    for lineno, row in jsonl_records(path, required=("id", "category", "prompt")):
        pid, category, text = (text_field(row, f, f"{path}:{lineno}") for f in ("id", "category", "prompt"))
        prompts.append({"id": pid, "category": category, "prompt": text, "messages": [user(text)]})
    return first_per_category(prompts, max_per_category)


def first_per_category(prompts: list[Prompt], n: int | None) -> list[Prompt]:
    """The first `n` prompts of every category, in file order (all of them when n is None)."""
    taken: dict[str, int] = defaultdict(int)
    kept = []
    for p in prompts:
        if n is None or taken[p["category"]] < n:
            taken[p["category"]] += 1
            kept.append(p)
    return kept


def user(content: str) -> Message:
    return {"role": "user", "content": content}
