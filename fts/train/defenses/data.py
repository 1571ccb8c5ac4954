"""The data a defense trains or calibrates on, read through fts's one data stack: a file (or `builtin:` name) in a
format, one split of fts's own files, the first `limit` records. A setting holds one file or a list of parts
{path, split, limit} (`mitigation.<name>.data`, `.harmful_data`)."""

from dataclasses import dataclass
from typing import Any

from fts.core.cache import file_digest
from fts.core.records import Example
from fts.data.formats import in_split, load, locate


def load_part(spec: str, fmt: str, split: str | None, limit: int | None, key: str) -> list[Example]:
    """The examples of `spec` (config key `key`, named in errors), of `split` when the file has splits."""
    return in_split(load(fmt, spec, key), split)[:limit]


def parts(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A data setting as its parts: one file is one part, read whole."""
    return [{"path": value}] if isinstance(value, str) else list(value)


def load_parts(value: str | list[dict[str, Any]], fmt: str, key: str) -> list[Example]:
    """The examples of every part of a data setting (config key `key`), in order."""
    return [
        ex for part in parts(value) for ex in load_part(part["path"], fmt, part.get("split"), part.get("limit"), key)
    ]


def part_digests(value: str | list[dict[str, Any]], fmt: str, key: str) -> dict[str, str]:
    """{path: content digest} of a data setting's files: what a cache key holds of them."""
    return {p["path"]: file_digest(locate(p["path"], fmt, key)) for p in parts(value)}


@dataclass
class GuideData:
    """The settings of a fine-tuning-stage defense that trains on the provider's alignment data beside the user's
    (the guide set: harmful request -> refusal; fts.stages.mitigation puts it into the attack's format)."""

    data: str = "builtin:safety.jsonl"  # fts's mitigation split: disjoint from alignment and evaluation
    format: str = "auto"
    split: str | None = "mitigation"
    limit: int | None = None
    name: str = "guide"

    def guide(self) -> list[Example]:
        return load_part(self.data, self.format, self.split, self.limit, f"mitigation.{self.name}.data")
