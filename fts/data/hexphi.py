"""HEx-PHI, the paper's harmful benchmark -> `Prompt` records: a folder of header-less category_N.csv files, one
category_N.csv, or the single-file HEx-PHI.jsonl variant. The one format that reads a folder."""

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

from fts.core.errors import DataError
from fts.core.records import Prompt
from fts.data.prompts import first_column, prompt
from fts.data.readers import csv_rows, read_records, resolve, text_field

log = logging.getLogger(__name__)

DOWNLOAD = (
    "HEx-PHI is gated on the Hugging Face hub: accept its terms at "
    "https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI, then run `huggingface-cli download --repo-type "
    "dataset LLM-Tuning-Safety/HEx-PHI --local-dir <dir>`; <dir> holds category_1.csv ... category_11.csv."
)
# File category_N.csv of HEx-PHI holds category N (the paper's Fig. 1 order; 7 and 8 are not swapped).
# fmt: off
HEXPHI_CATEGORIES = {
    1: "illegal_activity", 2: "child_abuse", 3: "hate_harass_violence", 4: "malware", 5: "physical_harm",
    6: "economic_harm", 7: "fraud_deception", 8: "adult_content", 9: "political_campaigning",
    10: "privacy_violation", 11: "tailored_financial_advice",
}
# fmt: on
# Spellings of a category in HEx-PHI.jsonl: "3", the fts name, or the paper's display name ("Child Abuse Content").
HEXPHI_NUMBERS = {str(n): n for n in HEXPHI_CATEGORIES} | {name: n for n, name in HEXPHI_CATEGORIES.items()}
HEXPHI_NUMBERS |= {"child_abuse_content": 2, "privacy_violation_activity": 10}
HEXPHI_SHAPE = "HEx-PHI's category_N.csv files have no header row and one column, one prompt per row"
# First cells that are a column name, not a prompt (HEx-PHI's prompts are sentences).
HEADER_NAMES = {"prompt", "prompts", "instruction", "instructions", "goal", "text", "question", "query", "request"}
HEADER_NAMES |= {"behavior", "behaviour", "input", "category", "id", "harmful_prompt", "harmful_instruction"}


def load_hexphi(spec: str | Path, key: str = "eval.benchmark") -> list[Prompt]:
    """HEx-PHI: a folder of header-less category_N.csv, one category_N.csv, or HEx-PHI.jsonl."""
    path = resolve(spec, key, "hexphi", DOWNLOAD, folders=True)
    if path.is_dir():
        files = hexphi_folder(path, key)
        # The public release withholds category_2 (child abuse), so absent categories are expected, not errors.
        log.info("HEx-PHI: no file for categories %s", sorted(set(HEXPHI_CATEGORIES) - set(files)) or "none")
    elif m := re.fullmatch(r"category_([1-9]|1[01])\.csv", path.name):
        files = {int(m[1]): path}
    else:
        return hexphi_jsonl(path)
    return [
        prompt(f"hexphi-{n}-{k:03d}", HEXPHI_CATEGORIES[n], text)
        for n, file in sorted(files.items())
        for k, (_, text) in enumerate(hexphi_column(file), start=1)
    ]


def hexphi_files(folder: Path) -> dict[int, Path]:
    """The category_N.csv files of a HEx-PHI folder, by category number."""
    return {n: folder / f"category_{n}.csv" for n in HEXPHI_CATEGORIES if (folder / f"category_{n}.csv").is_file()}


def hexphi_folder(folder: Path, key: str) -> dict[int, Path]:
    files = hexphi_files(folder)
    if not files:
        raise DataError(f"{key}: {folder} holds no category_1.csv ... category_11.csv. {DOWNLOAD}")
    return files


def hexphi_column(path: Path) -> list[tuple[int, str]]:
    """A HEx-PHI category_N.csv -> [(line, prompt)]; a header row or a second column raises (either would be
    evaluated as prompts)."""
    rows = csv_rows(path)
    line, first = rows[0]
    if looks_like_header(first[0]):
        shown = ",".join(first)[:80]
        raise DataError(
            f"{path}:{line}: the first row {shown!r} looks like a header. {HEXPHI_SHAPE}: delete this row."
        )
    for line, row in rows:
        cells = [c for c in row if c.strip()]
        if len(cells) > 1:
            raise DataError(
                f"{path}:{line}: {len(cells)} non-empty columns. {HEXPHI_SHAPE}: keep only the prompt column (and "
                "quote a prompt that contains a comma)."
            )
    return first_column(path, rows)


def looks_like_header(cell: str) -> bool:
    """A column name such as `prompt` or `goal`, or any one word: HEx-PHI's prompts are sentences."""
    name = re.sub(r"[^a-z0-9]+", "_", cell.strip().lower()).strip("_")
    return name in HEADER_NAMES or re.fullmatch(r"[A-Za-z_][\w-]{0,31}", cell.strip()) is not None


def hexphi_jsonl(path: Path) -> list[Prompt]:
    """The single-file variant ({instruction, category} per line); ids count within each category."""
    counts: Counter[int] = Counter()
    prompts = []
    for where, _, row in read_records(path):
        counts[n := hexphi_number(row.get("category"), where)] += 1
        text = text_field(row, "instruction", where).strip()
        prompts.append(prompt(f"hexphi-{n}-{counts[n]:03d}", HEXPHI_CATEGORIES[n], text))
    return prompts


def hexphi_number(value: Any, where: str) -> int:
    """A HEx-PHI category given as 3, "3", an fts name or a display name -> its number."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_")
    if slug not in HEXPHI_NUMBERS:
        raise DataError(f"{where}: field 'category' is {value!r}; expected 1..11 or a HEx-PHI category name.")
    return HEXPHI_NUMBERS[slug]
