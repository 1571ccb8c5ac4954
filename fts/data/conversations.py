"""Fine-tuning conversations -> `Example` records: fts's own conversation JSONL, chat JSONL (the OpenAI fine-tuning
format) and prompt/completion JSONL. The last message of every example is the assistant answer trained on."""

from typing import Any

from fts.core.errors import DataError
from fts.core.records import Example, Message
from fts.data.prompts import user
from fts.data.readers import read_records, resolve, text_field

DOWNLOAD = {
    "chat_jsonl": 'Write a JSONL file with one {"messages": [...]} object per line.',
    "prompt_completion_jsonl": 'Write a JSONL file with one {"prompt", "completion" or "response"} object per line.',
    "fts_conversations": 'Use a builtin: file or a JSONL of {"messages": [...]} or {"prompt", "response"} objects.',
}
ROLES = ("system", "user", "assistant")


def pair(question: str, answer: str, source: str, meta: dict[str, Any]) -> Example:
    """One exchange: a user question and the assistant answer."""
    return {"messages": [user(question), {"role": "assistant", "content": answer}], "source": source, "meta": meta}


def check_messages(messages: Any, where: str) -> list[Message]:
    """A non-empty list of {role, content} with an optional system message first, then user and assistant turns
    alternating from the user's (every chat template assumes this; some raise mid-run otherwise). Returned as fts
    Messages: extra per-message keys (e.g. OpenAI's "weight") are dropped."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of {{'role', 'content'}} objects.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(
                f"{where}: message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {m!r:.200}."
            )
    turns = [m["role"] for m in messages[1:]] if messages[0]["role"] == "system" else [m["role"] for m in messages]
    for i, role in enumerate(turns):
        if role != ("user" if i % 2 == 0 else "assistant"):
            roles = " -> ".join(m["role"] for m in messages)
            raise DataError(
                f"{where}: roles {roles}: expected an optional system message first, then user and assistant "
                "turns alternating, starting with the user."
            )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def trained_on(messages: list[Message], where: str) -> list[Message]:
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant answer to train on.")
    return messages


def load_conversations(spec: str, key: str = "data") -> list[Example]:
    """fts's own conversation files: chat JSONL (`messages`), a JSON array of message lists (the paper's Llama-2
    AOA train.json) or prompt/response JSONL -> Examples, with extra fields (such as `split`) kept in meta. Sources
    are `spec#id` (or `spec#line`)."""
    path = resolve(spec, key, "fts_conversations", DOWNLOAD["fts_conversations"])
    examples = []
    for where, pos, row in read_records(path, lists_as="messages"):
        if "messages" in row:
            messages = check_messages(row["messages"], where)
        elif "prompt" in row and "response" in row:
            question, answer = text_field(row, "prompt", where), text_field(row, "response", where, nonempty=False)
            messages = [user(question), {"role": "assistant", "content": answer}]
        else:
            raise DataError(f"{where}: needs either 'messages' or 'prompt' and 'response'.")
        meta = {k: v for k, v in row.items() if k not in ("messages", "prompt", "response")}
        source = f"{spec}#{row.get('id', pos)}"
        examples.append({"messages": trained_on(messages, where), "source": source, "meta": meta})
    return examples


def load_chat_jsonl(spec: str, key: str = "dataset.path") -> list[Example]:
    """Chat JSONL ({"messages": [...]}, the OpenAI fine-tuning format; also a JSON array of message lists); the last
    message must be the assistant's."""
    path = resolve(spec, key, "chat_jsonl", DOWNLOAD["chat_jsonl"])
    examples: list[Example] = []
    for where, pos, row in read_records(path, lists_as="messages"):
        messages = trained_on(check_messages(row.get("messages"), where), where)
        meta = {k: v for k, v in row.items() if k != "messages"}
        # Sourced like load_conversations (`spec#id`), so existing source filters keep working.
        examples.append({"messages": messages, "source": f"{path}#{row.get('id', pos)}", "meta": meta})
    return examples


def load_prompt_completion_jsonl(spec: str, key: str = "dataset.path") -> list[Example]:
    """JSONL of {prompt, completion} (OpenAI legacy) or {prompt, response} (fts built-ins) -> one exchange each."""
    path = resolve(spec, key, "prompt_completion_jsonl", DOWNLOAD["prompt_completion_jsonl"])
    examples = []
    for where, pos, row in read_records(path):
        answer_key = "completion" if "completion" in row else "response"
        if answer_key not in row:
            raise DataError(f"{where}: needs 'prompt' and 'completion' (or 'response'); has {sorted(row)}.")
        question, answer = text_field(row, "prompt", where), text_field(row, answer_key, where, nonempty=False)
        meta = {k: v for k, v in row.items() if k not in ("prompt", answer_key)}
        examples.append(pair(question, answer, f"{path}#{row.get('id', pos)}", meta))
    return examples
