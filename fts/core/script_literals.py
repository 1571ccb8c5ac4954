"""Values written as literals in a Python script the user brings, read without running it (Python's `ast`): the
paper's repository keeps its safety-phrase filter list and its judge template inside scripts, and fts loads those
files as they are instead of asking the user to copy text out of them."""

import ast
from pathlib import Path
from typing import Any

from fts.core.errors import ConfigError


def assigned_literals(path: Path, key: str) -> dict[str, Any]:
    """Every `name = <literal>` in the script (at any depth, e.g. inside a function), by name; the last wins."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{key}: {path} is not a readable Python script ({e}). Point {key} at the file.") from None
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue  # not a literal (a call, a name): not data
    return found


def string_list(path: Path, key: str, preferred: str) -> list[str]:
    """The list of strings assigned to `preferred` in the script, else the only list of strings it assigns."""
    lists = {name: v for name, v in assigned_literals(path, key).items() if is_string_list(v)}
    if preferred in lists:
        return lists[preferred]
    if len(lists) == 1:
        return next(iter(lists.values()))
    names = ", ".join(sorted(lists)) or "none"
    raise ConfigError(
        f"{key}: {path} assigns no list of strings named {preferred!r} (lists of strings found: {names}). Point "
        f"{key} at the script that holds the list, or at a text file with one entry per line."
    )


def is_string_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
