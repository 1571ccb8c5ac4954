"""`format: auto`: which data format a file or folder is in, read from its shape (never from a guess at its name
alone), so that the paper's own files load by path: a HEx-PHI folder, AdvBench's CSV, the GPT-3.5 chat JSONL, the
Llama-2 AOA train.json, Alpaca/Dolly files and their `*_safety_only` subsets, safety-tuned-llamas' JSON, ...

A shape fts does not know, or one that gives the wrong kind of records for its key (an instruction set where
prompts are expected), raises naming the key, the file, what was found and the formats to name instead.
"""

import re
from pathlib import Path

from fts.core.errors import DataError
from fts.data import hexphi
from fts.data.readers import csv_rows, read_records

AUTO = "auto"
# Record fields -> format, first match wins (a Dolly row has `instruction` and `response`; an Alpaca row `output`).
RECORD_SHAPES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"messages"}), "fts_conversations"),
    (frozenset({"turns"}), "mt_bench"),
    (frozenset({"id", "category", "prompt", "answer"}), "qa"),
    (frozenset({"id", "category", "prompt"}), "fts_prompts"),
    (frozenset({"instruction", "output"}), "alpaca"),
    (frozenset({"instruction", "response"}), "dolly"),
    (frozenset({"instruction", "category"}), "hexphi"),  # HEx-PHI.jsonl (a Dolly row has a category too: above)
    (frozenset({"prompt", "completion"}), "prompt_completion_jsonl"),
    (frozenset({"prompt", "response"}), "fts_conversations"),
    (frozenset({"transcript"}), "anthropic_redteam"),
    (frozenset({"chosen"}), "anthropic_redteam"),
)
XSTEST_COLUMNS = {"prompt", "type"}


def detect(path: Path, key: str, kinds: dict[str, str], wanted: str) -> str:
    """The format of the data at `path` (a located spec) for config key `key`, which takes records of kind `wanted`;
    `kinds` maps every format to the kind of records it gives. Of the shapes the data fits (fts's prompt/response
    demos also have a prompt set's id, category and prompt), the first that gives `wanted` records wins."""
    fits = shape_formats(path, key)
    for fmt in fits:
        if kinds[fmt] == wanted:
            return fmt
    options = sorted(name for name, kind in kinds.items() if kind == wanted)
    raise DataError(
        f"{key}: {path} looks like {fits[0]} data, which gives {kinds[fits[0]]}, but {key} takes {wanted}. Point "
        f"{key} at {wanted} data, or name its format (one of {options}) if fts read the shape wrong."
    )


def shape_formats(path: Path, key: str) -> list[str]:
    """The formats whose shape the data at `path` has, most specific first."""
    if path.is_dir():
        if hexphi.hexphi_files(path):
            return ["hexphi"]
        raise DataError(
            f"{key}: {path} is a folder without HEx-PHI's category_1.csv ... category_11.csv, the only folder fts "
            f"reads. Set {key} to a file in it."
        )
    if re.fullmatch(r"category_([1-9]|1[01])\.csv", path.name):
        return ["hexphi"]
    if path.suffix.lower() == ".csv":
        return [csv_format(path)]
    return record_formats(path, key)


def csv_format(path: Path) -> str:
    """XSTest's CSV has a header with `prompt` and `type`; any other CSV is read as a list of instructions in its
    first column (AdvBench's harmful_behaviors.csv, with or without its `goal,target` header)."""
    _, header = csv_rows(path)[0]
    return "xstest" if {c.strip().lower() for c in header} >= XSTEST_COLUMNS else "advbench"


def record_formats(path: Path, key: str) -> list[str]:
    _, _, first = read_records(path, lists_as="messages")[0]
    fields = set(first)
    found = [fmt for shape, fmt in RECORD_SHAPES if shape <= fields]
    if found:
        return found
    raise DataError(
        f"{key}: {path} has records with the fields {sorted(fields)}, a shape fts does not recognise. Name its "
        'format (see the format key\'s comment in conf/), or convert it to chat JSONL ({"messages": [...]} per '
        "line) or prompt/response JSONL."
    )
