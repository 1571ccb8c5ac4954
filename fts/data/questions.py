"""Utility question sets -> records: fts's QA JSONL (questions with reference answers, `QAPrompt`) and MT-Bench's
question.jsonl (two-turn questions, `Question`). Scoring them is `fts.utility`'s."""

from fts.core.errors import DataError
from fts.core.records import QAPrompt, Question
from fts.data.prompts import PROMPT_FIELDS, prompt
from fts.data.readers import read_records, resolve, text_field

DOWNLOAD = {
    "qa": 'Use builtin:utility_eval.jsonl or a JSONL of {"id", "category", "prompt", "answer", "aliases" (optional)}.',
    "mt_bench": "Download data/mt_bench/question.jsonl from FastChat's llm_judge "
    "(https://github.com/lm-sys/FastChat/tree/main/fastchat/llm_judge).",
}


def load_qa(spec: str, key: str = "eval.utility") -> list[QAPrompt]:
    """JSONL of {id, category, prompt, answer, aliases?, case_sensitive?} -> Prompts with `references`."""
    prompts: list[QAPrompt] = []
    for where, _, row in read_records(resolve(spec, key, "qa", DOWNLOAD["qa"]), required=(*PROMPT_FIELDS, "answer")):
        aliases = row.get("aliases") or []
        references = [row["answer"], *aliases] if isinstance(aliases, list) else [None]
        if not all(isinstance(r, str) and r.strip() for r in references):
            raise DataError(f"{where}: 'answer' and every alias must be non-empty strings.")
        record = prompt(*(text_field(row, f, where) for f in PROMPT_FIELDS))
        prompts.append({**record, "references": references, "case_sensitive": bool(row.get("case_sensitive", False))})
    return prompts


def load_mt_bench(spec: str, key: str = "eval.mt_bench.questions") -> list[Question]:
    """MT-Bench question.jsonl: {question_id, category, turns: [two user turns], reference (optional)}."""
    questions: list[Question] = []
    for where, pos, row in read_records(resolve(spec, key, "mt_bench", DOWNLOAD["mt_bench"])):
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise DataError(f"{where}: field 'turns' must be a non-empty list of non-empty strings.")
        reference = row.get("reference")
        if reference is not None and not (isinstance(reference, list) and all(isinstance(r, str) for r in reference)):
            raise DataError(f"{where}: field 'reference' must be a list of strings (one per turn) when present.")
        qid = str(row.get("question_id", pos))
        category = text_field(row, "category", where)
        questions.append({"id": f"mt-bench-{qid}", "category": category, "turns": turns, "reference": reference})
    return questions
