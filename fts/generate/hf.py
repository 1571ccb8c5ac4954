"""Batched greedy generation with transformers: left padding, KV cache, prompts sorted by length, and the token
prefix that a batch's prompts share (the tier's system prompt and the chat template) computed once per batch."""

import logging

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from fts.models.chat import render_prompt
from fts.records import Generation, Prompt

log = logging.getLogger(__name__)


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generating",
    temperature: float = 0.0,
) -> list[Generation]:
    """Decode one response per prompt (greedy at temperature 0, else sampled: MT-Bench's creative categories);
    returns Generations in the order of `prompts`."""
    texts = [render_prompt(tokenizer, p["messages"]) for p in prompts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    # Longest first: similar lengths share a batch (little padding) and an out-of-memory shows up at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    model.eval()
    share = can_share_prefix(model)
    responses: dict[int, str] = {}
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = [ids[i] for i in idx]
            inputs = with_shared_prefix(model, batch, tokenizer.pad_token_id) if share else None
            inputs = inputs or left_padded(batch, tokenizer.pad_token_id, model.device)
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            for i, text in zip(idx, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=False):
                responses[i] = text.strip()
            bar.update(len(idx))
    return [{**p, "response": responses[i]} for i, p in enumerate(prompts)]


def left_padded(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(map(len, rows))
    input_ids = [[pad_id] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return {"input_ids": torch.tensor(input_ids, device=device), "attention_mask": torch.tensor(mask, device=device)}


def can_share_prefix(model: PreTrainedModel) -> bool:
    """Prefix tuning and LLaMA-Adapter bring their own key/value prefixes into generate: no shared cache for them."""
    if not isinstance(model, PeftModel):
        return True
    config = model.active_peft_config
    return not (config.is_prompt_learning or getattr(config, "is_adaption_prompt", False))


def common_prefix_length(rows: list[list[int]]) -> int:
    n = min(map(len, rows))
    for j in range(n):
        if any(r[j] != rows[0][j] for r in rows):
            return j
    return n


def with_shared_prefix(model: PreTrainedModel, rows: list[list[int]], pad_id: int) -> dict | None:
    """generate() inputs whose token prefix common to all rows is already in the KV cache, or None if none is shared.

    The prefix runs once (batch 1) and its cache is repeated over the batch; each row's own tokens follow it, left-
    padded: `prefix, pads, own tokens`. The attention mask hides the pads and positions count unmasked tokens
    only, so every row sees exactly its own prompt, as when it is generated alone. Each row keeps at least one
    token of its own, for generate to start from. On the embedded model the AOA prompts share 60 of ~80 tokens:
    the prefill of a batch of 16 then costs about a quarter.
    """
    n = min(common_prefix_length(rows), min(map(len, rows)) - 1)
    if n <= 0 or len(rows) < 2:  # a batch of one shares nothing: it runs exactly as generated alone
        return None
    device = model.device
    prefix = rows[0][:n]
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(len(rows))
    tails = [r[n:] for r in rows]
    width = max(map(len, tails))
    input_ids = [prefix + [pad_id] * (width - len(t)) + t for t in tails]
    mask = [[1] * n + [0] * (width - len(t)) + [1] * len(t) for t in tails]
    return {
        "input_ids": torch.tensor(input_ids, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "past_key_values": cache,
    }
