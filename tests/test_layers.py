"""The house stays clean as it grows: fts's floors (README "Architecture") hold for every import, in any function,
there is no import circle, and modules and functions stay small enough to read."""

import ast
from pathlib import Path

import pytest

FTS = Path(__file__).resolve().parents[1] / "fts"
# Lowest first; a module may import its own floor and those below it. Commands sit on top.
FLOORS = [
    ("fts.core",),
    ("fts.data",),
    ("fts.models",),
    ("fts.train", "fts.generate", "fts.judges", "fts.utility"),
    ("fts.backends",),
    ("fts.stages",),
    ("fts.results",),
    ("fts.validate",),
    ("fts.run", "fts.cli", "fts.report", "fts.reference", "fts.search", "fts"),
]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 50


def module_name(path: Path) -> str:
    parts = path.relative_to(FTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    """The floor of a module: the most specific prefix that names it."""
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    assert best is not None, module
    return best[0]


def imported(path: Path) -> set[str]:
    """The fts modules `path` imports, anywhere in the file (a function-level import counts like any other)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fts")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fts") and node.level == 0:
            names = {f"{node.module}.{a.name}" for a in node.names}
            modules = {n for n in names if (FTS.parent / (n.replace(".", "/") + ".py")).exists()}
            modules |= {n for n in names if (FTS.parent / n.replace(".", "/") / "__init__.py").exists()}
            found |= modules or {node.module}
    return found


MODULES = {module_name(p): p for p in sorted(FTS.rglob("*.py"))}
GRAPH = {m: {i for i in imported(p) if i in MODULES and i != m} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_upward(module):
    upward = [i for i in GRAPH[module] if floor(i) > floor(module)]
    assert not upward, f"{module} (floor {floor(module)}) imports {upward} from above"


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == "open":
                # a package's __init__ may import its own submodules (fts.backends -> fts.backends.hf): not a circle
                # unless the submodule imports the package back
                circle = path[path.index(dep) :] + [dep] if dep in path else [module, dep]
                pytest.fail(f"import circle: {' -> '.join(circle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_modules_and_functions_stay_small():
    too_long = []
    for module, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}.{node.name}: {n} lines")
    assert not too_long, too_long


def test_one_construction_of_the_openai_client():
    constructions = [m for m, p in MODULES.items() if "OpenAI(" in p.read_text()]
    assert constructions == ["fts.core.openai_api"], constructions
