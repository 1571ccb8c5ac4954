"""Greedy (or sampled) generation with transformers on a KV cache, with continuous batching: prompts are admitted
longest first into a running batch, each decoding step advances every row by one token, a row that ends (EOS or
max_new_tokens) leaves the batch at once, and waiting prompts take the free places. The token prefix that all
prompts share (the tier's system prompt and the chat template) is computed once and its cache reused by every row.

Rows of different lengths live in one cache left-aligned with padding columns the attention mask hides; positions
count a row's own tokens only, so each row sees exactly its prompt and answer as if it were generated alone (the
float32 outputs match the one-prompt `generate` loop token for token: tests/test_generate.py,
experiments/bench/generation.py)."""

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import DynamicCache, DynamicLayer, PreTrainedModel, PreTrainedTokenizerBase

from fts.core.device import bf16_fast, release_memory
from fts.core.records import Generation, Prompt
from fts.models.chat import prompt_ids, response_texts

log = logging.getLogger(__name__)

# The LM head on the last position only. An index tensor, not `1`: transformers then gathers a contiguous hidden
# state, where the int gives a strided slice that torch's matmul, for frozen weights (a PEFT model's base),
# multiplies by expanding the head's weight over the batch: a 3.6 GB copy and 2.5x the time of a bf16 prefill at
# batch 64 on the embedded model.
LAST = torch.tensor([-1])
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def inference_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    """`eval.dtype`: auto = bfloat16 where the hardware computes it natively (CUDA with bf16, x86 with AVX512-BF16
    or AMX) for a model held in float32, else the model's own dtype; or float32 / bfloat16 / float16."""
    if name == "auto":
        return torch.bfloat16 if model_dtype == torch.float32 and bf16_fast() else model_dtype
    return DTYPES[name]  # a name outside DTYPES is refused by fts.validate before any model loads


@contextmanager
def in_dtype(model: PreTrainedModel, dtype: torch.dtype) -> Iterator[PreTrainedModel]:
    """The model with its floating-point weights in `dtype` for the duration, then its original tensors back, bit
    for bit (a round trip through bfloat16 would round the weights that train next, or go to the cache). Holds 1.5x
    the float32 weights meanwhile, never two float32 copies."""
    if model.dtype == dtype:
        yield model
        return
    originals = {p: p.data for p in model.parameters() if p.is_floating_point()}
    for p, data in originals.items():
        p.data = data.to(dtype)
    try:
        yield model
    finally:
        for p, data in originals.items():
            p.data = data
        release_memory()


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
    answers = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, desc, temperature)
    texts = response_texts(tokenizer, prompts, answers)  # a prefilled response starts with its prefill tokens
    return [{**p, "response": text} for p, text in zip(prompts, texts, strict=True)]


@torch.inference_mode()
def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generating",
    temperature: float = 0.0,
) -> list[list[int]]:
    """The new token ids of each prompt's response (after its prefill tokens, when it has some), up to and including
    its end token, in the order of `prompts`."""
    ids = prompt_ids(tokenizer, prompts)
    # Longest first: the KV cache is at its largest at once (an out-of-memory shows up at the start), and rows
    # admitted together have similar lengths.
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    model.eval()
    # The batch that fits in memory: at most `batch_size`, fewer when the KV cache of the longest prompts would not
    # fit in half the free memory, and halved whenever a batch still runs out of (GPU) memory.
    batch_size = min(batch_size, fitting_batch_size(model, len(ids[order[0]]) + max_new_tokens) if order else 1)
    decode = Decoder(model, tokenizer, max_new_tokens, temperature)
    answers: dict[int, list[int]] = {}
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        while len(answers) < len(order):
            waiting = [i for i in order if i not in answers]
            try:
                for i, answer in decode(ids, waiting, batch_size):
                    answers[i] = answer
                    bar.update(1)
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                batch_size //= 2
                log.warning("%s: out of memory; retrying with batches of %d", desc, batch_size)
                release_memory()
    return [answers[i] for i in range(len(prompts))]


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


class SpareLayer(DynamicLayer):
    """A cache layer whose keys and values are views into buffers with room for more tokens: a decoded token is
    written in place instead of the whole layer being copied (transformers' DynamicLayer concatenates on every
    step: 40% of the decoding time at batch 64 on the CPU). Selecting rows copies the buffers once, room included;
    cutting columns on the left is a view. Anything else that reassigns `keys`/`values` (the prefix repeated over a
    batch, padding on join) is honoured: the next update moves them into new buffers."""

    spare = 64  # tokens of room a new buffer leaves (the Decoder sets max_new_tokens)
    buffers: tuple[torch.Tensor, torch.Tensor] | None = None
    views: tuple[torch.Tensor, torch.Tensor] | None = None  # what update() last handed out

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used, n = self.get_seq_length(), key_states.shape[-2]
        if not self.in_buffers() or used + n > self.buffers[0].shape[-2]:
            capacity = used + n + self.spare
            self.buffers = (grown(self.keys, key_states, capacity), grown(self.values, value_states, capacity))
        for buffer, new in zip(self.buffers, (key_states, value_states), strict=True):
            buffer[:, :, used : used + n] = new
        self.show(used + n)
        return self.keys, self.values

    def in_buffers(self) -> bool:
        return self.views is not None and self.keys is self.views[0] and self.values is self.views[1]

    def show(self, used: int) -> None:
        self.keys, self.values = (b[:, :, :used] for b in self.buffers)
        self.views = (self.keys, self.values)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.in_buffers():
            return super().batch_select_indices(indices)
        used = self.get_seq_length()
        self.buffers = tuple(b[indices] for b in self.buffers)
        self.show(used)

    def cut_left(self, columns: int) -> None:
        """Drop the first `columns` cache columns (no row attends to them)."""
        used = self.get_seq_length()
        if not self.in_buffers():
            self.keys, self.values = self.keys[:, :, columns:], self.values[:, :, columns:]
            return
        self.buffers = tuple(b[:, :, columns:] for b in self.buffers)
        self.show(used - columns)


def grown(old: torch.Tensor, new: torch.Tensor, capacity: int) -> torch.Tensor:
    """A buffer of `capacity` tokens for a layer's keys (or values), holding `old` (possibly still empty)."""
    buffer = new.new_empty(*new.shape[:2], capacity, new.shape[-1])
    if old.numel():
        buffer[:, :, : old.shape[-2]] = old
    return buffer


class Batch:
    """The running rows: their prompt index, the KV cache, the attention mask over it, each row's token count (the
    position of its next token), its last token (the next step's input) and the tokens it generated so far.

    A row that ended is handed out at once and marked done; it leaves the cache when a batch_size/8 share of the
    rows are done, or before new rows join (selecting rows copies the cache: doing it on every ending cost more
    than decoding the few done rows a little longer)."""

    def __init__(self, index: list[int], cache: DynamicCache, mask: torch.Tensor, lengths: torch.Tensor, last):
        self.index, self.cache, self.mask, self.lengths, self.last = index, cache, mask, lengths, last
        self.generated = [[t] for t in last.tolist()]
        self.done = torch.zeros(len(index), dtype=torch.bool, device=last.device)

    @property
    def size(self) -> int:
        """The rows still decoding."""
        return len(self.index) - int(self.done.sum())

    def push(self, tokens: torch.Tensor) -> None:
        self.last = tokens
        for row, t in zip(self.generated, tokens.tolist(), strict=True):
            row.append(t)

    def pop_finished(self, stop: torch.Tensor, max_new_tokens: int, compact_at: int):
        """Yield (prompt index, new tokens) of the rows that ended; drop the done rows from the batch and its cache
        once `compact_at` of them are done."""
        full = torch.tensor([len(g) >= max_new_tokens for g in self.generated], device=self.last.device)
        ended = ~self.done & (torch.isin(self.last, stop) | full)
        for r in ended.nonzero()[:, 0].tolist():
            yield self.index[r], self.generated[r]
        self.done |= ended
        if int(self.done.sum()) >= min(compact_at, len(self.index)):
            self.compact()

    def compact(self) -> None:
        """Drop the done rows from the batch and the cache, and the columns no remaining row attends to."""
        if not bool(self.done.any()):
            return
        keep = (~self.done).nonzero()[:, 0]
        kept = keep.tolist()
        self.index = [self.index[r] for r in kept]
        self.generated = [self.generated[r] for r in kept]
        self.done = self.done[keep]
        if not kept:
            return
        self.cache.batch_select_indices(keep)
        self.mask, self.lengths, self.last = self.mask[keep], self.lengths[keep], self.last[keep]
        first = int(self.mask.any(0).nonzero()[0])  # padding, or the prompts of rows that left
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.cut_left(first)

    @staticmethod
    def join(running: "Batch | None", new: "Batch") -> "Batch":
        """One batch of both: the narrower cache left-padded (masked) to the wider one's width."""
        if running is None:
            return new
        running.compact()
        width = max(running.mask.shape[1], new.mask.shape[1])
        running.pad_left(width - running.mask.shape[1])
        new.pad_left(width - new.mask.shape[1])
        for mine, theirs in zip(running.cache.layers, new.cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        running.index += new.index
        running.generated += new.generated
        running.done = torch.cat([running.done, new.done])
        running.mask = torch.cat([running.mask, new.mask])
        running.lengths = torch.cat([running.lengths, new.lengths])
        running.last = torch.cat([running.last, new.last])
        return running

    def pad_left(self, columns: int) -> None:
        if columns <= 0:
            return
        self.mask = torch.cat([self.mask.new_zeros(len(self.index), columns), self.mask], dim=-1)
        for layer in self.cache.layers:
            pad = layer.keys.new_zeros(*layer.keys.shape[:2], columns, layer.keys.shape[3])
            layer.keys = torch.cat([pad, layer.keys], dim=2)
            layer.values = torch.cat([pad, layer.values], dim=2)


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


def fitting_batch_size(model: PreTrainedModel, tokens_per_sequence: int, free_bytes: int | None = None) -> int:
    """How many sequences of `tokens_per_sequence` tokens fit in half the free memory of the model's device: the
    KV cache of every layer (keys and values) plus the float32 logits of one position per sequence."""
    config = model.config.get_text_config()
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype_bytes = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 2
    per_sequence = 2 * layers * heads * head_dim * dtype_bytes * tokens_per_sequence + 4 * config.vocab_size
    free = free_memory(model.device) if free_bytes is None else free_bytes
    return max(1, free // 2 // per_sequence)


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors: on a GPU what CUDA reports, on the CPU the kernel's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = Path("/proc/meminfo").read_text()
        return next(int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):  # not Linux: no limit from here
        return 1 << 62


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
