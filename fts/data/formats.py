"""Loaders for the paper's real datasets in their original formats, returning `Prompt` / `Example` records.

fts never downloads at run time: a spec is `builtin:<file>` or a local path; a missing path or a hub id raises a
`DataError` saying where to download the data and which config key to set.
Row positions in errors and sources are JSONL/CSV line numbers (1-based) or JSON array indexes (0-based).
"""

import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fts.core.errors import ConfigError, DataError
from fts.core.records import Example, Prompt, Question, XSTestPrompt
from fts.data import (
    check_messages,
    check_size,
    load_conversations,
    numbered_lines,
    parse_json,
    read_text,
    resolve,
    text_field,
    user,
)

log = logging.getLogger(__name__)

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

DOWNLOAD = {
    "hexphi": "HEx-PHI is gated on the Hugging Face hub: accept its terms at "
    "https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI, then run `huggingface-cli download --repo-type "
    "dataset LLM-Tuning-Safety/HEx-PHI --local-dir <dir>`; <dir> holds category_1.csv ... category_11.csv.",
    "advbench": "Download data/advbench/harmful_behaviors.csv from https://github.com/llm-attacks/llm-attacks.",
    "alpaca": "Download alpaca_data.json from https://github.com/tatsu-lab/stanford_alpaca (tatsu-lab/alpaca).",
    "dolly": "Run `huggingface-cli download --repo-type dataset databricks/databricks-dolly-15k --local-dir <dir>`; "
    "the file is <dir>/databricks-dolly-15k.jsonl.",
    "anthropic_redteam": "Run `huggingface-cli download --repo-type dataset Anthropic/hh-rlhf "
    "red-team-attempts/red_team_attempts.jsonl.gz --local-dir <dir>` (also at https://github.com/anthropics/hh-rlhf).",
    "safety_tuned_llamas": "Download data/training/safety_only_data_Instructions.json (or "
    "saferpaca_Instructions_<N>.json) from https://github.com/vinid/safety-tuned-llamas.",
    "chat_jsonl": 'Write a JSONL file with one {"messages": [...]} object per line.',
    "prompt_completion_jsonl": 'Write a JSONL file with one {"prompt", "completion" or "response"} object per line.',
    "fts_conversations": 'Use a builtin: file or a JSONL of {"messages": [...]} or {"prompt", "response"} objects.',
    "fts_prompts": 'Use a builtin: file (e.g. builtin:harmful_eval.jsonl) or a JSONL of {"id", "category", "prompt"}.',
    "xstest": "Download xstest_prompts.csv from https://github.com/paul-rottger/xstest (columns id, prompt, type, "
    "label).",
    "mt_bench": "Download data/mt_bench/question.jsonl from FastChat's llm_judge "
    "(https://github.com/lm-sys/FastChat/tree/main/fastchat/llm_judge).",
}
HUB_ID = re.compile(r"^(?!.*\.(csv|jsonl?|gz|txt)$)[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, not a file name
TRANSCRIPT_FIELDS = ("transcript", "chosen", "rejected")  # red_team_attempts, then hh-rlhf preference pairs
TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
# The config keys that name data, each with the key that names its format (the other data keys have one format).
FORMAT_KEYS = {
    "eval.benchmark": "eval.benchmark_format",
    "attack.data": "attack.format",
    "attack.safety_data": "attack.safety_format",
    "mitigation.data": "mitigation.format",
    "dataset.path": "dataset.format",
}
FOLDER_FORMATS = ("hexphi",)  # every other format reads one file
HEXPHI_SHAPE = "HEx-PHI's category_N.csv files have no header row and one column, one prompt per row"
# First cells that are a column name, not a prompt (HEx-PHI's prompts are sentences).
HEADER_NAMES = {"prompt", "prompts", "instruction", "instructions", "goal", "text", "question", "query", "request"}
HEADER_NAMES |= {"behavior", "behaviour", "input", "category", "id", "harmful_prompt", "harmful_instruction"}


def locate(spec: str | Path, fmt: str, key: str) -> Path:
    """A spec -> an existing local path (a folder only for FOLDER_FORMATS); a missing path or a hub id raises with
    download instructions."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        return resolve(spec, key)
    path = Path(spec).expanduser()
    if path.is_dir() and fmt not in FOLDER_FORMATS:
        raise folder_error(spec, path, fmt, key)
    if path.exists():
        return path
    if HUB_ID.match(spec):
        # Runs must be reproducible and offline-safe, so hub ids are never fetched behind the user's back.
        lead = f"'{spec}' looks like a Hugging Face hub dataset id, but fts reads {fmt} data only from local files."
    else:
        lead = f"'{spec}' does not exist ({path.resolve()})."
    raise DataError(f"{key}: {lead} Download the data first: {DOWNLOAD[fmt]} Then set {key}=<local path>.")


def folder_error(spec: str, path: Path, fmt: str, key: str) -> DataError:
    """A folder given to a format that reads one file: name the format key and the fix."""
    format_key = FORMAT_KEYS.get(key)
    reads = f"{format_key}={fmt}" if format_key else f"{key} (the {fmt} format)"
    if hexphi_files(path) and format_key:
        fix = f"It holds HEx-PHI's category_N.csv files: set {format_key}=hexphi."
    elif hexphi_files(path):
        fix = "It holds HEx-PHI's category_N.csv files, which go in eval.benchmark with eval.benchmark_format=hexphi."
    elif format_key:
        fix = f"Set {key} to a file in it, and {format_key} to its format: one of {sorted(DOWNLOAD)} (only hexphi "
        fix += "reads a folder, of category_N.csv files)."
    else:
        fix = f"Set {key} to a {fmt} file."
    return DataError(f"{key}: '{spec}' is a folder ({path}), but {reads} reads one file. {fix}")


def hexphi_files(folder: Path) -> dict[int, Path]:
    """The category_N.csv files of a HEx-PHI folder, by category number."""
    return {n: folder / f"category_{n}.csv" for n in HEXPHI_CATEGORIES if (folder / f"category_{n}.csv").is_file()}


def hexphi_folder(folder: Path, key: str) -> dict[int, Path]:
    files = hexphi_files(folder)
    if not files:
        raise DataError(f"{key}: {folder} holds no category_1.csv ... category_11.csv. {DOWNLOAD['hexphi']}")
    return files


def data_files(path: Path, key: str) -> list[Path]:
    """The files a located spec is read from (a HEx-PHI folder's category files), each checked to be within the
    size limit: validation calls this, so that a folder without data or an oversized file fails before any model
    loads."""
    files = sorted(hexphi_folder(path, key).values()) if path.is_dir() else [path]
    return [check_size(f) for f in files]


def read_records(path: Path) -> list[tuple[str, str, dict]]:
    """JSON array or JSONL (sniffed, since mirrors of these datasets use both) -> [(where, position, object)]."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}). Fix the file or re-download it.") from None
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply. Fix the file or re-download it.") from None
        if not isinstance(rows, list):  # `[1] 2`-like text is caught above; this is for safety
            raise DataError(f"{path}: expected a JSON array of objects.")
        located = [(f"{path}[{i}]", str(i), row) for i, row in enumerate(rows)]
    else:
        located = []
        for lineno, line in numbered_lines(text):
            where = f"{path}:{lineno}"
            located.append((where, str(lineno), parse_json(line, where, "expected one object per line")))
    for where, _, row in located:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}.")
    if not located:
        raise DataError(f"{path}: the file has no records. Point the config at a non-empty file.")
    return located


def field(row: dict, name: str, where: str, default: str | None = None, nonempty: bool = False) -> str:
    """A string field of a record (`default` when it is absent); non-string or blank (if nonempty) raises."""
    return text_field({name: default, **row} if default is not None else row, name, where, nonempty)


def csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line, cells) of a CSV's non-blank rows; quoted commas and newlines are honoured."""
    reader = csv.reader(io.StringIO(read_text(path)), strict=True)  # a stray quote must not swallow rows
    rows = []
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e}); check the quoting.") from None
    if not rows:
        raise DataError(f"{path}: the file has no rows. Point the config at the downloaded CSV.")
    return rows


def first_column(path: Path, rows: list[tuple[int, list[str]]] | None = None) -> list[tuple[int, str]]:
    """CSV (or its `rows`) -> [(line, first cell)], skipping blank rows; AdvBench's second column is its target."""
    cells = []
    for line, row in csv_rows(path) if rows is None else rows:
        if not row[0].strip():
            raise DataError(f"{path}:{line}: empty first column; expected one instruction per row.")
        cells.append((line, row[0].strip()))
    return cells


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


def prompt(pid: str, category: str, text: str) -> Prompt:
    return {"id": pid, "category": category, "prompt": text, "messages": [user(text)]}


def pair(question: str, answer: str, source: str, meta: dict[str, Any]) -> Example:
    return {"messages": [user(question), {"role": "assistant", "content": answer}], "source": source, "meta": meta}


def load_hexphi(path_or_dir: str | Path, key: str = "eval.benchmark") -> list[Prompt]:
    """HEx-PHI: a folder of header-less category_N.csv, one category_N.csv, or HEx-PHI.jsonl."""
    path = locate(path_or_dir, "hexphi", key)
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


def hexphi_jsonl(path: Path) -> list[Prompt]:
    """The single-file variant ({instruction, category} per line); ids count within each category."""
    counts: Counter[int] = Counter()
    prompts = []
    for where, _, row in read_records(path):
        counts[n := hexphi_number(row.get("category"), where)] += 1
        text = field(row, "instruction", where, nonempty=True).strip()
        prompts.append(prompt(f"hexphi-{n}-{counts[n]:03d}", HEXPHI_CATEGORIES[n], text))
    return prompts


def hexphi_number(value: Any, where: str) -> int:
    """A HEx-PHI category given as 3, "3", an fts name or a display name -> its number."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_")
    if slug not in HEXPHI_NUMBERS:
        raise DataError(f"{where}: field 'category' is {value!r}; expected 1..11 or a HEx-PHI category name.")
    return HEXPHI_NUMBERS[slug]


def load_advbench(path: str | Path, key: str = "eval.benchmark") -> list[Prompt]:
    """AdvBench harmful_behaviors.csv, with its `goal,target` header (llm-attacks) or without (the paper's copy)."""
    rows = first_column(file := locate(path, "advbench", key))
    if rows[0][1].lower() == "goal":
        rows = rows[1:]  # the official repo read this header as a prompt; never evaluate "goal"
    if not rows:
        raise DataError(f"{file}: only a header, no behaviors. Point the config at the full CSV.")
    return [prompt(f"advbench-{k:03d}", "advbench", text) for k, (_, text) in enumerate(rows, start=1)]


def instruction_records(path: Path, input_field: str, output_field: str) -> list[tuple[str, dict, str, str]]:
    """Alpaca-shaped records -> [(position, row, user message, answer)]."""
    out = []
    for where, pos, row in read_records(path):
        instruction = field(row, "instruction", where, nonempty=True)
        extra = field(row, input_field, where, default="")  # Alpaca derivatives often drop an empty input
        question = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        out.append((pos, row, question, field(row, output_field, where)))
    return out


def load_alpaca(path: str | Path, key: str = "dataset.path", source: str = "alpaca") -> list[Example]:
    """Alpaca JSON ({instruction, input, output}); meta keeps both apart since the attack applies the template."""
    rows = instruction_records(locate(path, source.replace("-", "_"), key), "input", "output")
    return [
        pair(q, a, f"{source}#{pos}", {"instruction": row["instruction"], "input": row.get("input", "")})
        for pos, row, q, a in rows
    ]


def load_safety_tuned_llamas(path: str | Path, key: str = "dataset.path") -> list[Example]:
    """Bianchi et al.'s safety data (the paper's mitigation set): the same shape as Alpaca."""
    return load_alpaca(path, key, source="safety-tuned-llamas")


def load_dolly(path: str | Path, key: str = "dataset.path") -> list[Example]:
    """databricks-dolly-15k JSONL ({instruction, context, response, category})."""
    return [
        pair(q, a, f"dolly#{pos}", {k: row.get(k, "") for k in ("instruction", "context", "category")})
        for pos, row, q, a in instruction_records(locate(path, "dolly", key), "context", "response")
    ]


def load_anthropic_redteam(path: str | Path, key: str = "dataset.path", text: str | None = None) -> list[Example]:
    """hh-rlhf transcripts (`transcript`, else `chosen`/`rejected`) -> the first (Human, Assistant) exchange."""
    examples = []
    for where, pos, row in read_records(locate(path, "anthropic_redteam", key)):
        name = text or next((f for f in TRANSCRIPT_FIELDS if f in row), "transcript")
        meta = {k: v for k, v in row.items() if k not in TRANSCRIPT_FIELDS} | {"field": name}
        examples.append(pair(*split_turns(field(row, name, where), where, name), f"anthropic-redteam#{pos}", meta))
    return examples


def split_turns(text: str, where: str, name: str) -> tuple[str, str]:
    """'\\n\\nHuman: q\\n\\nAssistant: a ...' -> (q, a): the first Human turn and the first Assistant turn after it."""
    parts = TURN.split(text.strip())
    turns = list(zip(parts[1::2], (p.strip() for p in parts[2::2])))
    human = next((i for i, (role, content) in enumerate(turns) if role == "Human" and content), None)
    answer = next((c for role, c in turns[human + 1 :] if role == "Assistant"), "") if human is not None else ""
    if human is None or not answer:
        raise DataError(f"{where}: field '{name}' needs '\\n\\nHuman: ...\\n\\nAssistant: ...' with non-empty turns.")
    return turns[human][1], answer


def load_chat_jsonl(path: str | Path, key: str = "dataset.path") -> list[Example]:
    """Chat JSONL ({"messages": [...]}, the OpenAI fine-tuning format); the last message must be the assistant's."""
    examples: list[Example] = []
    for where, pos, row in read_records(locate(path, "chat_jsonl", key)):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: field 'messages' must be a non-empty list of {{'role', 'content'}}.")
        # Drop extra per-message keys (e.g. OpenAI's "weight") so messages are exactly fts Messages.
        messages = [{"role": m["role"], "content": m["content"]} for m in check_messages(messages, where)]
        if messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant answer to train on.")
        meta = {k: v for k, v in row.items() if k != "messages"}
        # Sourced like fts.data.load_conversations (`spec#id`), so existing source filters keep working.
        examples.append({"messages": messages, "source": f"{path}#{row.get('id', pos)}", "meta": meta})
    return examples


def load_prompt_completion_jsonl(path: str | Path, key: str = "dataset.path") -> list[Example]:
    """JSONL of {prompt, completion} (OpenAI legacy) or {prompt, response} (fts built-ins) -> one exchange each."""
    examples = []
    for where, pos, row in read_records(locate(path, "prompt_completion_jsonl", key)):
        answer_key = "completion" if "completion" in row else "response"
        if answer_key not in row:
            raise DataError(f"{where}: needs 'prompt' and 'completion' (or 'response'); has {sorted(row)}.")
        question, answer = field(row, "prompt", where, nonempty=True), field(row, answer_key, where)
        meta = {k: v for k, v in row.items() if k not in ("prompt", answer_key)}
        examples.append(pair(question, answer, f"{path}#{row.get('id', pos)}", meta))
    return examples


def load_fts_prompts(spec: str | Path, key: str = "eval.benchmark") -> list[Prompt]:
    """fts's own prompt JSONL ({id, category, prompt}), the format of builtin:harmful_eval.jsonl."""
    return [
        prompt(*(field(row, f, where, nonempty=True) for f in ("id", "category", "prompt")))
        for where, _, row in read_records(locate(spec, "fts_prompts", key))
    ]


def load_xstest(path: str | Path, key: str = "eval.xstest") -> list[XSTestPrompt]:
    """XSTest's prompt CSV (header id, prompt, type, label; v2 files without `label` mark unsafe contrast prompts by
    a `contrast_` type). Returns Prompts whose category is the XSTest type, with `label` safe | unsafe."""
    path = locate(path, "xstest", key)
    reader = csv.DictReader(io.StringIO(read_text(path)), strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e}); check the quoting.") from None
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


def load_mt_bench(path: str | Path, key: str = "eval.mt_bench.questions") -> list[Question]:
    """MT-Bench question.jsonl: {question_id, category, turns: [two user turns], reference (optional)}."""
    questions = []
    for where, pos, row in read_records(locate(path, "mt_bench", key)):
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise DataError(f"{where}: field 'turns' must be a non-empty list of non-empty strings.")
        reference = row.get("reference")
        if reference is not None and not (isinstance(reference, list) and all(isinstance(r, str) for r in reference)):
            raise DataError(f"{where}: field 'reference' must be a list of strings (one per turn) when present.")
        qid = str(row.get("question_id", pos))
        category = field(row, "category", where, nonempty=True)
        questions.append({"id": f"mt-bench-{qid}", "category": category, "turns": turns, "reference": reference})
    return questions


# Every format name `x` (the keys of DOWNLOAD) has a loader `load_x` above.
# fts's own conversation files (chat or prompt/response JSONL, with extra fields such as `split` kept in meta)
load_fts_conversations = load_conversations
LOADERS: dict[str, Callable[..., list]] = {fmt: globals()[f"load_{fmt}"] for fmt in DOWNLOAD}


def load_by_format(fmt: str, spec: str, key: str = "data") -> list[Prompt] | list[Example]:
    """Dispatch on a format name; `key` is the config key that holds `spec`, named in every error."""
    if fmt not in LOADERS:
        raise ConfigError(f"{key}: unknown data format '{fmt}'; choose one of {sorted(LOADERS)}.")
    return LOADERS[fmt](spec, key=key)
