"""Evaluation prompt sets -> `Prompt` records: fts's own prompt JSONL, AdvBench's CSV, XSTest's CSV.

(HEx-PHI, the paper's benchmark, has its own module: `fts.data.hexphi`.)
"""

from collections import defaultdict
from pathlib import Path

from fts.core.errors import DataError
from fts.core.records import Message, Prompt, XSTestPrompt
from fts.data.readers import csv_dicts, csv_rows, read_records, resolve, text_field

# Where to get each format's data (named when a spec is missing or a hub id).
DOWNLOAD = {
    "fts_prompts": 'Use a builtin: file (e.g. builtin:harmful_eval.jsonl) or a JSONL of {"id", "category", "prompt"}.',
    "advbench": "Download data/advbench/harmful_behaviors.csv from https://github.com/llm-attacks/llm-attacks.",
    "xstest": "Download xstest_prompts.csv from https://github.com/paul-rottger/xstest (columns id, prompt, type, "
    "label).",
}
PROMPT_FIELDS = ("id", "category", "prompt")


def user(content: str) -> Message:
    return {"role": "user", "content": content}


def prompt(pid: str, category: str, text: str) -> Prompt:
    """A bare request as the model sees it: one user message."""
    return {"id": pid, "category": category, "prompt": text, "messages": [user(text)]}


def first_per_category(prompts: list[Prompt], n: int | None) -> list[Prompt]:
    """The first `n` prompts of every category, in file order (all of them when n is None)."""
    taken: dict[str, int] = defaultdict(int)
    kept = []
    for p in prompts:
        if n is None or taken[p["category"]] < n:
            taken[p["category"]] += 1
            kept.append(p)
    return kept


def load_prompts(spec: str, key: str = "eval.benchmark", max_per_category: int | None = None) -> list[Prompt]:
    """fts's own prompt JSONL ({id, category, prompt}, the format of builtin:harmful_eval.jsonl) -> Prompts with one
    user message, the first `max_per_category` of every category."""
    path = resolve(spec, key, "fts_prompts", DOWNLOAD["fts_prompts"])
    prompts = [
        prompt(*(text_field(row, f, where) for f in PROMPT_FIELDS))
        for where, _, row in read_records(path, required=PROMPT_FIELDS)
    ]
    return first_per_category(prompts, max_per_category)


def load_advbench(spec: str, key: str = "eval.benchmark") -> list[Prompt]:
    """AdvBench harmful_behaviors.csv, with its `goal,target` header (llm-attacks) or without (the paper's copy)."""
    path = resolve(spec, key, "advbench", DOWNLOAD["advbench"])
    rows = first_column(path, csv_rows(path))
    if rows[0][1].lower() == "goal":
        rows = rows[1:]  # the official repo read this header as a prompt; never evaluate "goal"
    if not rows:
        raise DataError(f"{path}: only a header, no behaviors. Point the config at the full CSV.")
    return [prompt(f"advbench-{k:03d}", "advbench", text) for k, (_, text) in enumerate(rows, start=1)]


def first_column(path: Path, rows: list[tuple[int, list[str]]]) -> list[tuple[int, str]]:
    """CSV rows -> [(line, first cell)]; AdvBench's second column is its target."""
    cells = []
    for line, row in rows:
        if not row[0].strip():
            raise DataError(f"{path}:{line}: empty first column; expected one instruction per row.")
        cells.append((line, row[0].strip()))
    return cells


def load_xstest(spec: str, key: str = "eval.xstest") -> list[XSTestPrompt]:
    """XSTest's prompt CSV (header id, prompt, type, label; v2 files without `label` mark unsafe contrast prompts by
    a `contrast_` type). Returns Prompts whose category is the XSTest type, with `label` safe | unsafe."""
    path = resolve(spec, key, "xstest", DOWNLOAD["xstest"])
    rows = csv_dicts(path)
    if not rows:
        raise DataError(f"{path}: the file has no rows. Point {key} at XSTest's prompt CSV.")
    if not {"prompt", "type"} <= set(rows[0]):
        raise DataError(f"{key}: {path} needs a header with at least the columns prompt and type (XSTest's CSV).")
    prompts = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        text, kind = (row.get("prompt") or "").strip(), (row.get("type") or "").strip()
        if not text or not kind:
            raise DataError(f"{path}:{i}: empty prompt or type; every XSTest row needs both.")
        label = (row.get("label") or ("unsafe" if kind.startswith("contrast_") else "safe")).strip()
        if label not in ("safe", "unsafe"):
            raise DataError(f"{path}:{i}: label must be safe or unsafe, got {label!r}.")
        pid = row.get("id") or row.get("id_v2") or str(i)
        prompts.append({**prompt(f"xstest-{pid}", kind, text), "label": label})
    return prompts
