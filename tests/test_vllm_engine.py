"""The vLLM engine (`eval.engine=vllm`): what fts hands vLLM for each side, and that the run's responses equal those
of the `hf` engine when the engine honours vLLM's documented semantics.

vLLM needs a CUDA GPU, which this machine and CI lack: these tests put a CPU stand-in of vLLM's offline API first
on sys.path (conftest.standin_vllm: tests/fixtures/vllm_standin, vllm 0.30.0 signatures, strict about arguments).
The configuration checks are tested against this machine as it is, without vllm.
"""

import json
import shutil
from pathlib import Path

import pytest

from fts.core.errors import ConfigError
from fts.generate import vllm as vllm_engine
from fts.run import run
from tests.conftest import compose_run


def test_without_vllm_installed_the_run_stops_before_any_model_loads(tiny_run_overrides, tmp_path):
    with pytest.raises(ConfigError) as e:
        run(compose_run([*tiny_run_overrides, "eval.engine=vllm"], tmp_path / "run"))
    assert "needs the vllm package" in str(e.value) and "pip install -e '.[vllm]'" in str(e.value)
    assert not (tmp_path / "cache").exists()  # nothing was materialized or loaded


def test_vllm_serves_lora_fits_and_full_weights_but_not_prompt_methods(tiny_run_overrides, tmp_path, standin_vllm):
    def problems(*overrides, base=tiny_run_overrides):
        try:
            run(compose_run([*base, "eval.engine=vllm", *overrides], tmp_path / "run"))
        except ConfigError as e:
            return str(e)
        raise AssertionError("no config error")

    assert "not peft=prefix" in problems("peft=prefix")
    assert "set save_model=true" in problems("peft=full", "save_model=false")
    api = problems("model=gpt4o_mini", base=[])
    assert "model.backend='openai' is an API" in api
    with pytest.raises(ConfigError, match="ranks up to 512"):
        vllm_engine.lora_rank_bound(1024)
    assert [vllm_engine.lora_rank_bound(r) for r in (1, 8, 9, 64, 300)] == [1, 8, 16, 64, 320]


def test_each_side_is_served_from_the_weights_on_disk(tiny_model_dir):
    from fts.models import load
    from tests.test_train import MODEL_CFG

    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    model.generation_config.eos_token_id = [7, tokenizer.eos_token_id]  # several (Llama 3: <|eot_id|> too)
    base = vllm_engine.served(model, tokenizer, "/ckpt", "v1", "adapter", None)
    assert base == vllm_engine.Served("/ckpt", None, "v1", (7, tokenizer.eos_token_id))
    lora = vllm_engine.served(model, tokenizer, "/ckpt", "v1", "adapter", Path("/run/model"))
    assert (lora.model, lora.adapter, lora.revision) == ("/ckpt", "/run/model", "v1")
    full = vllm_engine.served(model, tokenizer, "/ckpt", "v1", "weights", Path("/run/model"))
    assert (full.model, full.adapter, full.revision) == ("/run/model", None, None)


def engine_runs(overrides, out: Path) -> dict[str, list[str]]:
    run(compose_run(overrides, out))
    sides = {}
    for path in sorted((out / "generations").glob("*.jsonl")):
        sides[path.stem] = [json.loads(line)["response"] for line in path.read_text().splitlines()]
    return sides


@pytest.mark.parametrize("peft", ["lora", "full"])
def test_vllm_run_gives_the_hf_engines_responses(tiny_run_overrides, tmp_path, standin_vllm, peft):
    # a large step, so that the fine-tuned responses surely differ from the baseline's; the hf engine in float32,
    # the stand-in's precision (its bf16 default on a CPU with native bf16 would round differently)
    common = [*tiny_run_overrides, f"peft={peft}", "train.learning_rate=0.05", "eval.max_new_tokens=6"]
    common.append("eval.dtype=float32")
    with_hf = engine_runs(common, tmp_path / "hf")
    # the same trained weights for both engines (a second training may differ in the last bits): the vLLM run
    # resumes from the hf run's saved model
    shutil.copytree(tmp_path / "hf" / "model", tmp_path / "vllm" / "model")
    with_vllm = engine_runs([*common, "eval.engine=vllm", "cache.enabled=false"], tmp_path / "vllm")
    assert with_hf["baseline"] != with_hf["finetuned"]  # so serving the wrong weights would show
    assert with_vllm == with_hf and set(with_vllm) == {"baseline", "finetuned"}

    engines = standin_vllm.engines
    run_model = str(tmp_path / "vllm" / "model")
    if peft == "lora":  # one engine for both sides: the adapter served on top of the base, not merged
        (engine,) = engines
        assert engine.args["enable_lora"] and engine.args["max_lora_rank"] == 8  # conf/peft/lora.yaml r=8
        assert [adapter for _, adapter in engine.requests] == [None, run_model]
    else:  # full fine-tuning: the saved weights, in a second engine
        assert [e.args["model"] for e in engines] == [engines[0].args["model"], run_model]
        assert "enable_lora" not in engines[1].args
    assert all(e.args["skip_tokenizer_init"] and e.args["gpu_memory_utilization"] == 0.6 for e in engines)
    assert engines[-1].sleeping  # asleep between calls: the GPU is free for training
