"""The continuous-batching decoder of fts.generate.hf: prompts join a running batch as places free up, each step
advances every row by one token, rows that end leave at once; the token prefix all prompts share runs once. Models
whose cache cannot hold rows of different histories side by side (prefix tuning, LLaMA-Adapter, sliding-window
layers) decode in whole batches through `model.generate`."""

import copy

import torch
from peft import PeftModel
from transformers import DynamicCache, DynamicLayer, PreTrainedModel, PreTrainedTokenizerBase

from fts.generate.kv_cache import Batch, SpareLayer

# The LM head on the last position only. An index tensor, not `1`: transformers then gathers a contiguous hidden
# state, where the int gives a strided slice that torch's matmul, for frozen weights (a PEFT model's base),
# multiplies by expanding the head's weight over the batch: a 3.6 GB copy and 2.5x the time of a bf16 prefill at
# batch 64 on the embedded model.
LAST = torch.tensor([-1])


class Decoder:
    """Continuous batching over one model: `decoder(ids, waiting, batch_size)` yields (prompt index, new token ids)
    as each row ends. Prefix tuning and LLaMA-Adapter bring their own key/value prefixes into the model, and
    sliding-window layers drop old cache columns, so those decode in whole batches through `model.generate`."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, temperature):
        self.model, self.max_new_tokens, self.temperature = model, max_new_tokens, temperature
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop = torch.tensor(stop_ids(tokenizer, model.generation_config), device=model.device)

    def __call__(self, ids: list[list[int]], waiting: list[int], batch_size: int):
        if not (can_share_prefix(self.model) and plain_cache(self.model)):
            yield from self.whole_batches(ids, waiting, batch_size)
            return
        prefix = self.shared_prefix([ids[i] for i in waiting])
        queue = list(waiting)
        batch: Batch | None = None
        # Admit new prompts when a quarter of the places are free (a prefill of a few rows costs about as much
        # as a decoding step of the whole batch), or when the batch ran empty.
        refill = max(1, batch_size // 4)
        while queue or batch is not None:
            free = batch_size - (batch.size if batch else 0)
            if queue and (free >= refill or batch is None):
                admitted, queue = queue[:free], queue[free:]
                batch = Batch.join(batch, self.prefill(prefix, admitted, [ids[i] for i in admitted]))
            yield from batch.pop_finished(self.stop, self.max_new_tokens, compact_at=max(1, batch_size // 8))
            if batch.size == 0:
                batch = None
                continue
            self.step(batch)

    def shared_prefix(self, rows: list[list[int]]) -> tuple[list[int], DynamicCache | None]:
        """The token prefix every prompt shares (each keeps at least one token of its own), run once."""
        n = min(common_prefix_length(rows), min(map(len, rows)) - 1) if len(rows) > 1 else 0
        if n <= 0:
            return [], None
        cache = self.new_cache()
        self.model(
            input_ids=torch.tensor([rows[0][:n]], device=self.model.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=LAST,
        )
        return rows[0][:n], cache

    def prefill(self, prefix: tuple[list[int], DynamicCache | None], index: list[int], rows: list[list[int]]):
        """A batch of new rows, `prefix, pads, own tokens` each, prefilled; their first new token chosen."""
        prefix_ids, prefix_cache = prefix
        n, device = len(prefix_ids), self.model.device
        tails = [r[n:] for r in rows]
        width = max(map(len, tails))
        input_ids = torch.tensor([[self.pad_id] * (width - len(t)) + t for t in tails], device=device)
        mask = torch.tensor([[1] * n + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)
        cache = self.new_cache()
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(rows))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, n:]
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=LAST,
        )
        return Batch(index, cache, mask, mask.sum(-1), self.pick(out.logits[:, -1]))

    def new_cache(self) -> DynamicCache:
        cache = DynamicCache(config=self.model.config)
        cache.layers = [SpareLayer() for _ in cache.layers]
        for layer in cache.layers:
            layer.spare = self.max_new_tokens
        return cache

    def step(self, batch: "Batch") -> None:
        """Every row one token further."""
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.index), 1)], dim=-1)
        out = self.model(
            input_ids=batch.last[:, None],
            attention_mask=batch.mask,
            position_ids=batch.lengths[:, None],
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.lengths = batch.lengths + 1
        batch.push(self.pick(out.logits[:, -1]))

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature <= 0:
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits.float() / self.temperature, dim=-1), 1)[:, 0]

    def whole_batches(self, ids: list[list[int]], waiting: list[int], batch_size: int):
        """Static batches through `model.generate` (left padding; the model's own prefixes)."""
        for start in range(0, len(waiting), batch_size):
            index = waiting[start : start + batch_size]
            out = generate_batch(
                self.model, [ids[i] for i in index], self.pad_id, self.max_new_tokens, self.temperature
            )
            for i, row in zip(index, out, strict=True):
                yield i, trimmed(row, self.stop)


def generate_batch(model, rows: list[list[int]], pad_id: int, max_new_tokens: int, temperature: float):
    """The new token ids of one left-padded batch through `model.generate`."""
    inputs = left_padded(rows, pad_id, model.device)
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=None,
        top_k=None,
        pad_token_id=pad_id,
    )
    return out[:, inputs["input_ids"].shape[1] :].tolist()


def trimmed(ids: list[int], stop: torch.Tensor) -> list[int]:
    """The generated tokens up to and including the first stop token (what follows in a batch is padding)."""
    stops = set(stop.tolist())
    return next((ids[: k + 1] for k, t in enumerate(ids) if t in stops), ids)


def stop_ids(tokenizer: PreTrainedTokenizerBase, generation_config) -> list[int]:
    """The token ids that end a response, as `generate` in transformers stops on them: the generation config's eos
    (one id or several: Llama 3's <|eot_id|>) and the tokenizer's."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


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


def plain_cache(model: PreTrainedModel) -> bool:
    """Whether every layer keeps its whole key/value history (no sliding window, as Gemma 2's alternate layers):
    the rows of a continuous batch are aligned on cache columns, which a window that drops old ones would break."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def common_prefix_length(rows: list[list[int]]) -> int:
    n = min(map(len, rows))
    for j in range(n):
        if any(r[j] != rows[0][j] for r in rows):
            return j
    return n
