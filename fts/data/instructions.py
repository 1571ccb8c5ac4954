"""Instruction-tuning sets -> `Example` records: Alpaca's JSON, safety-tuned-llamas' JSON (Bianchi et al.'s safety
data, the paper's mitigation set, in Alpaca's shape) and databricks-dolly-15k's JSONL."""

from pathlib import Path

from fts.core.records import Example
from fts.data.conversations import pair
from fts.data.readers import read_records, resolve, text_field

DOWNLOAD = {
    "alpaca": "Download alpaca_data.json from https://github.com/tatsu-lab/stanford_alpaca (tatsu-lab/alpaca).",
    "safety_tuned_llamas": "Download data/training/safety_only_data_Instructions.json (or "
    "saferpaca_Instructions_<N>.json) from https://github.com/vinid/safety-tuned-llamas.",
    "dolly": "Run `huggingface-cli download --repo-type dataset databricks/databricks-dolly-15k --local-dir <dir>`; "
    "the file is <dir>/databricks-dolly-15k.jsonl.",
}


def instruction_records(path: Path, input_field: str, output_field: str) -> list[tuple[str, dict, str, str]]:
    """Alpaca-shaped records -> [(position, row, user message, answer)]."""
    out = []
    for where, pos, row in read_records(path):
        instruction = text_field(row, "instruction", where)
        extra = text_field(row, input_field, where, nonempty=False, default="")  # derivatives drop an empty input
        question = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        out.append((pos, row, question, text_field(row, output_field, where, nonempty=False)))
    return out


def load_alpaca(spec: str | Path, key: str = "dataset.path", source: str = "alpaca") -> list[Example]:
    """Alpaca JSON ({instruction, input, output}); meta keeps both apart since the attack applies the template."""
    fmt = source.replace("-", "_")
    rows = instruction_records(resolve(spec, key, fmt, DOWNLOAD[fmt]), "input", "output")
    return [
        pair(q, a, f"{source}#{pos}", {"instruction": row["instruction"], "input": row.get("input", "")})
        for pos, row, q, a in rows
    ]


def load_safety_tuned_llamas(spec: str | Path, key: str = "dataset.path") -> list[Example]:
    """Bianchi et al.'s safety data (the paper's mitigation set): the same shape as Alpaca."""
    return load_alpaca(spec, key, source="safety-tuned-llamas")


def load_dolly(spec: str | Path, key: str = "dataset.path") -> list[Example]:
    """databricks-dolly-15k JSONL ({instruction, context, response, category})."""
    rows = instruction_records(resolve(spec, key, "dolly", DOWNLOAD["dolly"]), "context", "response")
    return [
        pair(q, a, f"dolly#{pos}", {k: row.get(k, "") for k in ("instruction", "context", "category")})
        for pos, row, q, a in rows
    ]
