"""Device helpers: native bfloat16 detection, handing freed memory back, and a stage's peak memory."""

import ctypes
import ctypes.util
import gc
import os
import threading

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


DTYPE_SETTINGS = ("auto", "float32", "bfloat16")  # what resolve_dtype takes (the alignment base, the coherence scorer)


def resolve_dtype(name: str) -> str:
    """A dtype setting that may say `auto`: bfloat16 where the hardware computes it natively (bf16_fast), else
    float32; any other name as it is."""
    if name == "auto":
        return "bfloat16" if bf16_fast() else "float32"
    return name


class PeakMemory:
    """The peak memory of a stage: on CUDA the allocator's peak (reset when the stage starts), elsewhere the
    process's resident set, sampled every `interval` seconds by a thread (the process-wide high-water mark would
    include whatever ran before). `with PeakMemory() as peak: ...; peak.gib`."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak_bytes = interval, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak_bytes = torch.cuda.max_memory_allocated()

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, resident_bytes())
            if self._stop.wait(self.interval):
                return

    @property
    def gib(self) -> float:
        return round(self.peak_bytes / 1024**3, 3)

    @property
    def device(self) -> str:
        return "cuda (allocated)" if torch.cuda.is_available() else "cpu (resident)"


def resident_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
