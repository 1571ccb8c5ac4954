"""The prefilling attack's data (Qi et al. 2025, "Safety Alignment Should Be Made More Than Just a Few Tokens Deep"):
a harmful answer per harmful evaluation prompt, whose first `eval.prefill_tokens` tokens start the model's response.

`eval.prefill` is a JSON/JSONL file of records, each matched to a harmful prompt by `id` or, failing that, by its
`prompt` text (whitespace aside):

    {"id": "malware-001", "prompt": "...", "response": "Sure, here is ..."}      # id or prompt (or both)
    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "Sure, ..."}]}

`builtin:prefill.jsonl` holds one non-operational, compliance-shaped opening per built-in harmful prompt (README of
fts/data/builtin). `attach` puts each harmful prompt's answer into it (`prefill_answer`) before any model loads; a
harmful prompt without one is an error listing them. The tokens are cut by the evaluated model's tokenizer when it
generates (fts.models.chat.prefilled).
"""

from pathlib import Path
from typing import Any

from fts.core.errors import DataError
from fts.core.records import PrefillAnswer, Prompt
from fts.data.readers import read_records, resolve, text_field

DOWNLOAD = "Use builtin:prefill.jsonl, or write a JSONL of {id or prompt, response} (fts/data/prefill.py)."
KEY = "eval.prefill"


def load_prefill(spec: str | Path, key: str = KEY) -> list[PrefillAnswer]:
    """The answers of a prefill file; a record without an answer, or without an id and a prompt, names its line."""
    path = resolve(spec, key, "prefill", DOWNLOAD)
    answers: list[PrefillAnswer] = []
    seen: dict[str, str] = {}
    for where, _, row in read_records(path, lists_as="messages"):
        answer = from_messages(row, where) if "messages" in row else from_fields(row, where)
        if answer["id"] is not None:
            if answer["id"] in seen:
                raise DataError(f"{where}: id {answer['id']!r} again (first at {seen[answer['id']]}); one per prompt.")
            seen[answer["id"]] = where
        answers.append(answer)
    return answers


def from_fields(row: dict[str, Any], where: str) -> PrefillAnswer:
    ids = {f: text_field(row, f, where) if row.get(f) is not None else None for f in ("id", "prompt")}
    if ids["id"] is None and ids["prompt"] is None:
        raise DataError(f"{where}: a prefill record needs an `id` or a `prompt` (to match an evaluation prompt).")
    return {"id": ids["id"], "prompt": ids["prompt"], "response": text_field(row, "response", where)}


def from_messages(row: dict[str, Any], where: str) -> PrefillAnswer:
    """A conversation record: its (last) user turn is the prompt, its assistant turn after it the answer."""
    messages = row["messages"]
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages] if isinstance(messages, list) else []
    if "user" not in roles or roles[-1] != "assistant":
        raise DataError(f"{where}: `messages` must hold a user turn and end with the assistant's answer.")
    user = len(roles) - 1 - roles[::-1].index("user")
    prompt = text_field(messages[user], "content", where)
    pid = text_field(row, "id", where) if row.get("id") is not None else None
    return {"id": pid, "prompt": prompt, "response": text_field(messages[-1], "content", where)}


def same_text(text: str) -> str:
    return " ".join(text.split())


def attach(prompts: list[Prompt], answers: list[PrefillAnswer], spec: str) -> list[Prompt]:
    """The prompts with `prefill_answer` on every harmful one; a harmful prompt no record matches raises, naming
    them (before any model loads)."""
    by_id = {a["id"]: a["response"] for a in answers if a["id"] is not None}
    by_text = {same_text(a["prompt"]): a["response"] for a in answers if a["prompt"] is not None}
    out, missing = [], []
    for p in prompts:
        harmful = p.get("set") == "harmful"
        answer = (by_id.get(p["id"]) or by_text.get(same_text(p["prompt"]))) if harmful else None
        if harmful and answer is None:
            missing.append(p["id"])
        out.append(p if answer is None else {**p, "prefill_answer": answer})
    if missing:
        listed = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataError(
            f"{KEY}: {spec} has no answer for {len(missing)} harmful evaluation prompt(s): {listed} (records match by "
            f"`id`, else by `prompt` text). Add them to the file, point {KEY} at one for this benchmark, or set "
            "eval.prefill_tokens=0."
        )
    return out


def problems(eval_cfg: Any) -> list[str]:
    """What stops the prefilling attack in this config, found before any model loads (fts.validate)."""
    tokens = eval_cfg.get("prefill_tokens") or 0
    if not isinstance(tokens, int) or tokens <= 0:
        return []  # off (a bad value is named by the range rules)
    found = []
    if eval_cfg.get("prefill") is None:
        found.append(f"eval.prefill_tokens={tokens} needs eval.prefill: builtin:prefill.jsonl or a file of answers.")
    if eval_cfg.get("engine") == "openai":
        found.append(
            f"eval.prefill_tokens={tokens}: an API model (model.backend=openai) cannot be made to continue an answer "
            "fts starts (prefilling needs open weights, eval.engine=hf or vllm); set eval.prefill_tokens=0."
        )
    return found
