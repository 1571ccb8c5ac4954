"""The one place where the chat template is applied for open models (training and generation alike), and where
the prefilling attack's tokens are put after it (`prefilled`, `prompt_ids`, `response_texts`).

Two model-config keys shape it (`conf/model/*.yaml`), both set on the tokenizer by `fts.models.load`:

- `chat_template`: null keeps the tokenizer's own; otherwise Jinja text, or a `.jinja` file (a path, or the name of
  a file in `fts/models/templates/`, e.g. `llama2_chat.jinja`, the paper's Llama-2 format, renderable offline).
- `system_role: false` for models whose template has no system role (Gemma): the system prompt is folded into the
  first user turn as "<system>\\n\\n<user>", so attacks keep their system prompt at train and eval time alike.
"""

from pathlib import Path

from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from fts.core.records import Message, Prompt

TEMPLATES_DIR = Path(__file__).parent / "templates"
SYSTEM_ROLE = "fts_system_role"  # tokenizer attribute: does the model's template take a system message?


def template_file(spec: str) -> Path | None:
    """The file a `chat_template` value names, or None when the value is Jinja text itself."""
    if not spec.endswith(".jinja"):
        return None
    path = Path(spec).expanduser()
    return path if path.is_file() else TEMPLATES_DIR / spec


def template_text(spec: str) -> str:
    path = template_file(spec)
    return spec if path is None else path.read_text()


def configure(tokenizer: PreTrainedTokenizerBase, model_cfg: DictConfig) -> None:
    """Apply the model config's chat template and system-role flag to a freshly loaded tokenizer."""
    if model_cfg.get("chat_template"):
        tokenizer.chat_template = template_text(str(model_cfg.chat_template))
    setattr(tokenizer, SYSTEM_ROLE, bool(model_cfg.get("system_role", True)))


def fold_system(messages: list[Message]) -> list[Message]:
    """Put a leading system message into the first user turn: "<system>\\n\\n<user>"."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if not rest or rest[0]["role"] != "user":
        return [{"role": "user", "content": system}, *rest]
    return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]


def template_messages(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> list[Message]:
    return messages if getattr(tokenizer, SYSTEM_ROLE, True) else fold_system(messages)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str:
    """Render a conversation up to the point where the assistant starts answering."""
    messages = template_messages(tokenizer, messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prefilled(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, tokens: int) -> Prompt:
    """The prompt with the first `tokens` tokens (by this tokenizer) of its prefill answer (`prefill_answer`,
    fts.data.prefill) as `prefill_ids`, which start its response, and their text as `prefill`; a prompt without an
    answer as it is."""
    answer = prompt.get("prefill_answer")
    if answer is None or tokens <= 0:
        return prompt
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:tokens]
    return {**prompt, "prefill_ids": ids, "prefill": tokenizer.decode(ids, skip_special_tokens=True)}


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt]) -> list[list[int]]:
    """The token ids each prompt's response follows: the conversation rendered up to where the assistant answers,
    then the prefill tokens when the prompt has some (the response starts with them)."""
    rendered = [render_prompt(tokenizer, p["messages"]) for p in prompts]
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return [row + list(p.get("prefill_ids", [])) for row, p in zip(ids, prompts, strict=True)]


def response_texts(tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt], new_ids: list[list[int]]) -> list[str]:
    """The responses as recorded: prefill tokens and generated tokens decoded together (so the judges read prefix +
    continuation, joined as the tokenizer joins them)."""
    full = [list(p.get("prefill_ids", [])) + list(ids) for p, ids in zip(prompts, new_ids, strict=True)]
    return [text.strip() for text in tokenizer.batch_decode(full, skip_special_tokens=True)]


def prompt_tokens(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> int:
    """How many tokens the model reads for this conversation before it answers (template included)."""
    return len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])


def render_example(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> tuple[str, str]:
    """Split a conversation into (prompt text, completion text) for completion-only loss.

    The completion is the final assistant turn exactly as the template writes it, up to and including the
    end-of-sequence token; anything the template adds after EOS (e.g. a newline) is dropped so that TRL's
    "append EOS if missing" rule does not add a second one.
    """
    prompt = render_prompt(tokenizer, messages[:-1])
    full = tokenizer.apply_chat_template(template_messages(tokenizer, messages), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently inside the full conversation")
    completion = full[len(prompt) :]
    eos = tokenizer.eos_token
    if eos and eos in completion:
        completion = completion[: completion.rindex(eos) + len(eos)]
    return prompt, completion
