"""The paper's numbers as data: every printed cell of Qi et al.'s result tables (qi2023.yaml), by id.

    from fts.results import reference
    reference.cell("table2/gpt-3.5-turbo/aoa/10ep/harmfulness_rate")["value"]   # 87.3 (percent, as printed)
    reference.cells_for(table=1, model="llama")                                   # Table 1's Llama-2 row

`python -m fts.reference` lists them. The id scheme and the fields are described at the top of qi2023.yaml.
"""

import difflib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from fts.core.errors import FtsError

PATH = Path(__file__).with_name("qi2023.yaml")
FIELDS = ("id", "table", "model", "tier", "setting", "side", "metric", "value", "source")
SIDES = ("initial", "finetuned")


class ReferenceDataError(FtsError):
    """qi2023.yaml (or a file given to `load`) is malformed: the message names the cell."""


class UnknownCellError(FtsError, KeyError):
    """No cell has this id (a KeyError too, so `except KeyError` works)."""

    def __str__(self) -> str:  # KeyError's str() would quote the whole message
        return str(self.args[0])


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cell_problem(entry: Any, metrics: dict[str, Any]) -> str | None:
    """What is wrong with one entry of `cells:`, or None."""
    if not isinstance(entry, dict):
        return f"is not a mapping: {entry!r}"
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not is_number(entry["value"]):
        return f"value must be a number, got {entry['value']!r}"
    if entry["metric"] not in metrics:
        return f"metric {entry['metric']!r} is not one of the file's metrics: {sorted(metrics)}"
    if entry["side"] not in SIDES:
        return f"side must be one of {SIDES}, got {entry['side']!r}"
    if not isinstance(entry["setting"], dict):
        return f"setting must be a mapping, got {entry['setting']!r}"
    # the id repeats the fields it is made of: a copy-paste slip shows up as a mismatch here
    prefix = f"{entry['table']}/{entry['model']}/{entry['tier']}/"
    if not (str(entry["id"]).startswith(prefix) and str(entry["id"]).endswith("/" + entry["metric"])):
        return f"id does not match its fields (expected {prefix}<column>/{entry['metric']})"
    return None


def validate(data: Any, where: str) -> dict[str, dict[str, Any]]:
    """The cells of a loaded reference file by id; raises ReferenceDataError naming the first bad cell."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) or not data.get("cite"):
        raise ReferenceDataError(f"{where}: expected a mapping with `cite`, `metrics` and a `cells` list.")
    metrics = data.get("metrics") or {}
    by_id: dict[str, dict[str, Any]] = {}
    for n, entry in enumerate(data["cells"], start=1):
        name = entry.get("id", f"#{n}") if isinstance(entry, dict) else f"#{n}"
        problem = cell_problem(entry, metrics)
        if problem is None and entry["id"] in by_id:
            problem = "is a duplicate id (ids must be unique)"
        if problem is not None:
            raise ReferenceDataError(f"{where}: cell {name} {problem}.")
        by_id[entry["id"]] = entry
    return by_id


def load(path: Path | str = PATH) -> dict[str, Any]:
    """{"cite", "metrics", "cells": {id: cell}} of a reference file, validated."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ReferenceDataError(f"cannot read {path}: {e}") from None
    by_id = validate(data, str(path))
    return {"cite": data["cite"], "metrics": data["metrics"], "cells": by_id}


@cache
def data() -> dict[str, Any]:
    """qi2023.yaml, loaded once per process."""
    return load(PATH)


def cells() -> list[dict[str, Any]]:
    """Every cell, in the file's order (copies: editing one does not change the data)."""
    return [dict(c) for c in data()["cells"].values()]


def cell(cell_id: str) -> dict[str, Any]:
    """The cell with this id; an unknown id raises UnknownCellError naming the closest ids."""
    by_id = data()["cells"]
    if cell_id not in by_id:
        close = difflib.get_close_matches(str(cell_id), list(by_id), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `python -m fts.reference` lists them."
        raise UnknownCellError(f"{cell_id!r} is not a cell of the paper's tables{hint}")
    return dict(by_id[cell_id])


def table_name(table: int | str) -> str:
    """2, "2", "table2" -> "table2"; "fig5a" stays."""
    text = str(table).lower()
    return f"table{text}" if text.isdigit() else text


def cells_for(
    table: int | str | None = None, model: str | None = None, tier: str | None = None, metric: str | None = None
) -> list[dict[str, Any]]:
    """The cells matching every filter given: table (2, "table2", "fig5a"), model (part of the name: "gpt-3.5",
    "llama"), tier and metric (exact)."""
    found = []
    for c in cells():
        if table is not None and c["table"] != table_name(table):
            continue
        if model is not None and model.lower() not in c["model"]:
            continue
        if (tier is not None and c["tier"] != tier) or (metric is not None and c["metric"] != metric):
            continue
        found.append(c)
    return found


def cite() -> str:
    """The paper, as one line."""
    c = data()["cite"]
    return f"{c['authors']}. {c['title']} {c['venue']}. arXiv:{c['arxiv']}."


def unit(metric: str) -> str:
    """percent, "1-5" or "1-10"."""
    return data()["metrics"][metric]["unit"]
