"""Greedy (or sampled) generation with transformers on a KV cache, with continuous batching: prompts are admitted
longest first into a running batch, each decoding step advances every row by one token, a row that ends (EOS or
max_new_tokens) leaves the batch at once, and waiting prompts take the free places. The token prefix that all
prompts share (the tier's system prompt and the chat template) is computed once and its cache reused by every row.

Rows of different lengths live in one cache left-aligned with padding columns the attention mask hides; positions
count a row's own tokens only, so each row sees exactly its prompt and answer as if it were generated alone (the
float32 outputs match the one-prompt `generate` loop token for token: tests/test_generate.py,
experiments/bench/generation.py). The decoder is fts.generate.decoding, its running batch and KV cache
fts.generate.kv_cache."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fts.core.device import bf16_fast, release_memory
from fts.core.records import Generation, Prompt
from fts.generate.decoding import Decoder
from fts.models.chat import prompt_ids, response_texts

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Part of the cache key of generations: answers cached by an earlier engine are not served as this one's.
# 2: an answer ends at its end token (revision 1 let a row that ended keep the tokens it was stepped through while it
# waited in the batch for the next compaction: text after the end of the turn, e.g. "\nsystem ...").
REVISION = 2


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
    the float32 weights meanwhile, never two float32 copies.

    A LoRA-family adapter (LoRA, DoRA, IA3) is merged into those temporary weights: unmerged, every adapted layer
    runs its adapter beside the base matmul, which made a bf16 evaluation of the embedded model's fine-tuned side
    2.5x slower than its baseline. Both sides then run plain weights; the originals come back unmerged."""
    if model.dtype == dtype:
        yield model
        return
    originals = {p: p.data for p in model.parameters() if p.is_floating_point()}
    for p, data in originals.items():
        p.data = data.to(dtype)
    merged = merge_for_inference(model)
    try:
        yield model
    finally:
        for p, data in originals.items():
            p.data = data
        for layer in merged:  # the merge went into the temporary weights, which are gone
            layer.merged_adapters = []
        release_memory()


def merge_for_inference(model: PreTrainedModel) -> list:
    """Merge a PEFT model's LoRA-family adapter into its current weights; the layers merged ([] when none was)."""
    config = getattr(model, "active_peft_config", None)
    mergeable = config is not None and not config.is_prompt_learning and not getattr(config, "is_adaption_prompt", 0)
    if not mergeable or getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return []
    model.merge_adapter()
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer) and m.merged]


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
