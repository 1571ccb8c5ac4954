"""Anthropic's hh-rlhf transcripts (red_team_attempts, or the harmless preference pairs) -> `Example` records of
their first (Human, Assistant) exchange."""

import re
from pathlib import Path

from fts.core.errors import DataError
from fts.core.records import Example
from fts.data.conversations import pair
from fts.data.readers import read_records, resolve, text_field

DOWNLOAD = (
    "Run `huggingface-cli download --repo-type dataset Anthropic/hh-rlhf red-team-attempts/red_team_attempts.jsonl.gz "
    "--local-dir <dir>` (also at https://github.com/anthropics/hh-rlhf)."
)
TRANSCRIPT_FIELDS = ("transcript", "chosen", "rejected")  # red_team_attempts, then hh-rlhf preference pairs
TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def load_anthropic_redteam(spec: str | Path, key: str = "dataset.path", text: str | None = None) -> list[Example]:
    """hh-rlhf transcripts (`transcript`, else `chosen`/`rejected`) -> the first (Human, Assistant) exchange."""
    examples = []
    for where, pos, row in read_records(resolve(spec, key, "anthropic_redteam", DOWNLOAD)):
        name = text or next((f for f in TRANSCRIPT_FIELDS if f in row), "transcript")
        meta = {k: v for k, v in row.items() if k not in TRANSCRIPT_FIELDS} | {"field": name}
        question, answer = split_turns(text_field(row, name, where, nonempty=False), where, name)
        examples.append(pair(question, answer, f"anthropic-redteam#{pos}", meta))
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
