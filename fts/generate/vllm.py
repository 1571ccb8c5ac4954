"""vLLM engine (`eval.engine=vllm`, GPU, optional extra `pip install -e '.[vllm]'`): paged attention and continuous
batching over the whole prompt set at once, and a LoRA adapter served on top of the base weights without merging.

Which weights a side is generated from is a `Served` handle on files: the base checkpoint for the baseline; base +
the run's saved adapter (`run_dir/model`) after a LoRA/QLoRA fine-tune, so one engine serves both sides; the saved
full weights after full fine-tuning (a second engine). Prompts go in as token ids rendered by fts's tokenizer and
template, and responses are decoded by the same tokenizer, so the text the judges see is produced exactly as with
the `hf` engine: only the kernels differ. Between calls the engine sleeps (weights to CPU memory, KV cache freed), so
the fine-tune that follows the baseline gets the GPU; it wakes for the next side.

QLoRA: the adapter trained on the 4-bit base is served on the checkpoint as vLLM loads it (full precision unless
`eval.vllm.quantization=bitsandbytes`), so its responses can differ from the `hf` engine's, which generates with the
4-bit model it trained. vLLM needs a CUDA GPU; no GPU was at hand where this was written, so this module is tested
against a CPU stand-in of vLLM 0.30.0's API (tests/fixtures/vllm_standin), not against vLLM itself.
"""

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from fts.core.device import release_memory
from fts.core.errors import ConfigError
from fts.core.records import Generation, Prompt
from fts.generate.decoding import stop_ids
from fts.models.chat import prompt_ids, response_texts

log = logging.getLogger(__name__)
PIP_HINT = (
    "pip install -e '.[vllm]' (vllm 0.30.0, the release whose torch/transformers pins match fts's), on a CUDA machine"
)
# vLLM allocates LoRA buffers for one of these ranks (vllm.config.lora.MaxLoRARanks)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Served:
    """The weights one side is generated from: `model` (a checkpoint dir or hub id), plus `adapter` (a PEFT LoRA
    dir) served on top of it unmerged, or None; `revision` of a hub `model`; `stop_token_ids` end a response."""

    model: str
    adapter: str | None = None
    revision: str | None = None
    stop_token_ids: tuple[int, ...] = ()


def served(model, tokenizer, checkpoint: str, revision: str | None, trains: str, model_dir: Path | None) -> Served:
    """What vLLM generates from for the side whose model in memory is `model`: the checkpoint (at `revision`) for
    the baseline (`model_dir` None); for a fine-tuned side the run's saved adapter on top of it, or its saved full
    weights (`trains`: what the PEFT method trained, peft.trains: adapter or weights)."""
    stop = tuple(stop_ids(tokenizer, getattr(model, "generation_config", None)))
    if model_dir is None:
        return Served(checkpoint, None, revision, stop)
    if trains == "adapter":
        return Served(checkpoint, str(model_dir), revision, stop)
    return Served(str(model_dir), None, None, stop)


def problems(cfg: DictConfig) -> list[str]:
    """What stops `eval.engine=vllm` for this config, found before any model loads (config.validate calls this)."""
    found = []
    if cfg.model.backend != "hf":
        found.append(f"eval.engine=vllm generates from open weights; model.backend={cfg.model.backend!r} is an API.")
    peft = cfg.peft
    if not peft.get("supports", {}).get("vllm"):
        found.append(
            f"eval.engine=vllm serves LoRA adapters and full fine-tunes, not peft={peft.get('method')} "
            "(peft.supports.vllm is false): use eval.engine=hf, or e.g. peft=lora, qlora or full."
        )
    elif peft.trains == "weights" and cfg.save_model is False:
        found.append("eval.engine=vllm with peft=full generates from the saved weights: set save_model=true.")
    if importlib.util.find_spec("vllm") is None:
        found.append(
            f"eval.engine=vllm needs the vllm package, which is not installed: {PIP_HINT}; or eval.engine=hf."
        )
    return found


def lora_rank_bound(rank: int) -> int:
    """The smallest rank vLLM sizes its LoRA buffers for that holds an adapter of rank `rank`."""
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise ConfigError(f"peft.config.r={rank}: vLLM serves LoRA ranks up to {LORA_RANKS[-1]}; use eval.engine=hf.")
    return fitting[0]


def engine_for(cfg: DictConfig) -> "VllmEngine | None":
    """The run's vLLM engine when `eval.engine=vllm`, sized for the fine-tune's LoRA rank; else None."""
    if cfg.eval.get("engine") != "vllm":
        return None
    rank = cfg.peft.config.r if cfg.peft.trains == "adapter" else None
    return VllmEngine(engine_options(cfg.eval.vllm), rank, cfg.seed)


def engine_options(vllm_cfg: DictConfig) -> dict[str, Any]:
    """`eval.vllm` as `vllm.LLM` keyword arguments; null values are left to vLLM's defaults."""
    return {k: v for k, v in OmegaConf.to_container(vllm_cfg, resolve=True).items() if v is not None}


class VllmEngine:
    """One vLLM `LLM` at a time, built on first use for the weights asked for and rebuilt when they change.

    `options` (eval.vllm) go to `vllm.LLM` as they are (gpu_memory_utilization, max_model_len, dtype,
    tensor_parallel_size, enforce_eager, ...); `lora_rank` is the fine-tune's adapter rank (None: no LoRA).
    """

    def __init__(self, options: dict[str, Any], lora_rank: int | None, seed: int):
        self.options = options
        self.lora_rank = lora_rank
        self.seed = seed
        self.llm = None
        self.weights: tuple[str, str | None] | None = None  # (model, revision) of self.llm
        self.asleep = False

    def engine_args(self, target: Served) -> dict[str, Any]:
        args = {
            "model": target.model,
            "revision": target.revision,
            "skip_tokenizer_init": True,  # prompts are token ids from fts's tokenizer; responses decoded by it too
            "seed": self.seed,
            "enable_sleep_mode": True,
            **self.options,
        }
        if self.lora_rank is not None:
            args |= {"enable_lora": True, "max_loras": 1, "max_lora_rank": lora_rank_bound(self.lora_rank)}
        return args

    def open(self, target: Served):
        weights = (target.model, target.revision)
        if self.llm is not None and self.weights == weights:
            if self.asleep:
                self.llm.wake_up()
                self.asleep = False
            return self.llm
        self.close()
        from vllm import LLM  # the optional extra: imported only when this engine is chosen

        log.info("vllm: loading %s", target.model)
        self.llm, self.weights = LLM(**self.engine_args(target)), weights
        return self.llm

    def close(self) -> None:
        if self.llm is None:
            return
        self.llm = self.weights = None
        self.asleep = False
        release_memory()

    def sleep(self) -> None:
        """Weights to CPU memory, KV cache freed: the GPU is the trainer's until the next `generate`."""
        if self.llm is not None and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def generate(
        self,
        target: Served,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[Prompt],
        max_new_tokens: int,
        desc: str = "generating",
        temperature: float = 0.0,
    ) -> list[Generation]:
        """One response per prompt, in the order of `prompts` (greedy at temperature 0)."""
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        if not prompts:
            return []
        llm = self.open(target)
        ids = prompt_ids(tokenizer, prompts)  # prefill tokens included, as with the hf engine
        sampling = SamplingParams(
            temperature=temperature,
            max_tokens=max_new_tokens,
            stop_token_ids=list(target.stop_token_ids),
            detokenize=False,  # no tokenizer in the engine: fts decodes the token ids below
            seed=self.seed if temperature > 0 else None,
        )
        lora = LoRARequest("finetuned", 1, target.adapter) if target.adapter else None
        log.info(
            "%s: %d prompts through vllm (%s%s)",
            desc,
            len(prompts),
            target.model,
            f" + {target.adapter}" if lora else "",
        )
        try:
            outputs = llm.generate(
                [{"prompt_token_ids": row} for row in ids], sampling, use_tqdm=True, lora_request=lora
            )
        finally:
            self.sleep()
        texts = response_texts(tokenizer, prompts, [list(out.outputs[0].token_ids) for out in outputs])
        return [{**p, "response": text} for p, text in zip(prompts, texts, strict=True)]
