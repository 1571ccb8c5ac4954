"""Values written as literals in a Python script the user brings, read without running it (Python's `ast`): the
paper's repository keeps its safety-phrase filter list and its judge template inside scripts, and fts loads those
files as they are instead of asking the user to copy text out of them. The one reader of such scripts: the
phrase filter (fts.stages.attacks.benign) and the judge-template command (fts.judges.template) use it."""

import ast
from pathlib import Path
from typing import Any

from fts.core.errors import ConfigError


class ScriptError(Exception):
    """A script fts cannot take a value from; the message says why (callers add the config key or exit code)."""


def assignments(source: str, filename: str) -> list[tuple[str, ast.expr]]:
    """(name, value node) of every `name = ...` / `name: T = ...` in the script, at any depth (inside a function
    too), in source order."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as e:
        raise ScriptError(f"{filename}:{e.lineno}: not valid Python ({e.msg})") from None
    found = []
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        found += [(t.id, node.value) for t in targets if isinstance(t, ast.Name) and node.value is not None]
    return sorted(found, key=lambda item: (item[1].lineno, item[1].col_offset))


def literal(node: ast.expr) -> Any:
    """The value of a literal node (a string, a list of strings, ...), or None for anything else (a call, a name)."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def string_list(path: Path, key: str, preferred: str) -> list[str]:
    """The list of strings assigned to `preferred` in the script at `path` (config key `key`), else the only list of
    strings it assigns."""
    try:
        found = assignments(path.read_text(encoding="utf-8"), str(path))
    except (ScriptError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key}: {path} is not a readable Python script ({e}). Point {key} at the file.") from None
    lists = {name: value for name, node in found if is_string_list(value := literal(node))}
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
