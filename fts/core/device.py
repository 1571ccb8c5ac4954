"""Device helpers: native bfloat16 detection and handing freed memory back to the device."""

import ctypes
import ctypes.util
import gc

import torch

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_memory() -> None:
    """Hand memory that dropped models and batches held back to the device (CUDA keeps freed blocks cached) and, on
    glibc, to the operating system: glibc keeps freed heap pages of a training run mapped, so a CPU run that trained
    and then generated peaked at the sum of both (6.3 GiB for the embedded model's `make run`, 3.5 GiB with this)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def bf16_fast() -> bool:
    """Whether this machine computes bfloat16 natively: a CUDA GPU with bf16, or an x86 CPU with AVX512-BF16 or AMX.

    `train.bf16: auto` turns on TRL's bf16 mixed precision (autocast; weights and optimizer stay float32) there. On
    the 2-core dev CPU (AVX512-BF16) it trained the embedded model's LoRA ~2x faster than float32, with the loss
    curve within seed noise (experiments/bench/training.py); without native bf16 it would be emulated, and slower.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
