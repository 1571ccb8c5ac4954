"""The data a defense trains or calibrates on, read through fts's one data stack: a file (or `builtin:` name) in a
format, one split of fts's own files, the first `limit` records."""

from dataclasses import dataclass

from fts.core.records import Example
from fts.data.formats import in_split, load


def load_part(spec: str, fmt: str, split: str | None, limit: int | None, key: str) -> list[Example]:
    """The examples of `spec` (config key `key`, named in errors), of `split` when the file has splits."""
    return in_split(load(fmt, spec, key), split)[:limit]


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
