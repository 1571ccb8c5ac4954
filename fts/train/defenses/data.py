"""The data a defense trains or calibrates on, read through fts's one data stack: a file (or `builtin:` name) in a
format, one split of fts's own files, the first `limit` records."""

from fts.core.records import Example
from fts.data.formats import in_split, load


def load_part(spec: str, fmt: str, split: str | None, limit: int | None, key: str) -> list[Example]:
    """The examples of `spec` (config key `key`, named in errors), of `split` when the file has splits."""
    return in_split(load(fmt, spec, key), split)[:limit]
