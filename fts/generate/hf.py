"""Batched greedy generation with transformers: left padding, KV cache, prompts sorted by length."""

import logging

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    # Longest first: similar lengths share a batch (little padding) and an out-of-memory shows up at once.
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    tokenizer.padding_side = "left"
    model.eval()
    responses: dict[int, str] = {}
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(model.device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for i, text in zip(idx, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=False):
                responses[i] = text.strip()
            bar.update(len(idx))
    return [{**p, "response": responses[i]} for i, p in enumerate(prompts)]
