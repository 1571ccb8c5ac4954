"""Every PEFT method of conf/peft/ trains on a tiny local Llama: its own weights move, the base stays frozen, the
saved adapter reloads to the same logits; QLoRA runs through bitsandbytes on CPU; the paper's StepLR decays per
epoch; model x method pairs that cannot work fail in validation, before any model loads."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft import get_peft_model
from transformers import set_seed

from fts.core.config import CONF_DIR, build
from fts.core.errors import ConfigError
from fts.models import load
from fts.train.hf import fine_tune, load_trained, save_merged
from fts.validate import validate
from tests.conftest import compose_run
from tests.test_train import MODEL_CFG, TRAIN, examples

# The tiny model has 2 layers; LLaMA-Adapter's paper setting asks for 30.
TINY = {"llama_adapter": ["peft.config.adapter_layers=2"]}
METHODS = ["lora", "lora_all_linear", "dora", "prefix", "llama_adapter", "ia3", "qlora"]
# The methods whose conf/peft/ file says they merge into the base weights (peft.supports.merge).
MERGEABLE = sorted(p.stem for p in Path(CONF_DIR, "peft").glob("*.yaml") if OmegaConf.load(p).supports.merge)


@pytest.fixture(scope="module")
def qlora_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama widened to 128 (bitsandbytes' CPU 4-bit kernels need dimensions of whole 64-blocks)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama-128")
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.update({"hidden_size": 128, "intermediate_size": 256, "num_key_value_heads": 4, "head_dim": 32})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def peft_node(method: str, tmp_path):
    return compose_run([f"peft={method}", *TINY.get(method, [])], tmp_path).peft


def logits(model, tokenizer):
    batch = tokenizer(["Task number 1", "Task"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_its_own_weights_and_the_adapter_reloads(method, tiny_model_dir, qlora_model_dir, tmp_path):
    peft = peft_node(method, tmp_path)
    path = str(qlora_model_dir if method == "qlora" else tiny_model_dir)
    model, tokenizer = load(path, MODEL_CFG, peft.get("quantization"))
    assert getattr(model, "is_loaded_in_4bit", False) == (method == "qlora")
    logits(model, tokenizer)  # a run evaluates the baseline first (bitsandbytes then once broke QLoRA's gradients)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    train = {**TRAIN, "learning_rate": 5e-2, "num_train_epochs": 2}  # 4 steps move even zero-initialized weights
    trained, history, _ = fine_tune(
        model, tokenizer, examples(), train, peft.config, tmp_path / "ckpt", 0, tmp_path / "model", False
    )

    assert len(history) == 4 and all(math.isfinite(row["loss"]) for row in history)
    trainable = {n: p for n, p in trained.named_parameters() if p.requires_grad}
    assert trainable, "the method added no trainable weights"
    assert not any(id(p) in before for p in trainable.values()), "a base weight became trainable"
    initial = initial_weights(path, peft)
    assert set(initial) == set(trainable)
    still = [n for n, p in trainable.items() if torch.equal(p.detach().float(), initial[n].to(p.dtype).float())]
    assert not still, f"trainable weights of {method} did not change: {still}"
    frozen = [(n, p) for n, p in trained.named_parameters() if not p.requires_grad and id(p) in before]
    assert frozen and all(torch.equal(p, before[id(p)]) for _, p in frozen), "a frozen base weight changed"

    expected = logits(trained, tokenizer)
    assert (tmp_path / "model" / "adapter_config.json").exists() and (tmp_path / "model" / "complete").exists()
    fresh, _ = load(path, MODEL_CFG, peft.get("quantization"))
    reloaded = load_trained(fresh, tmp_path / "model")
    assert torch.allclose(logits(reloaded, tokenizer), expected, atol=1e-5)


def initial_weights(path: str, peft) -> dict[str, torch.Tensor]:
    """The adapter weights before training: TRL seeds (args.seed) right before it wraps the model, as here."""
    model, _ = load(path, MODEL_CFG, peft.get("quantization"))
    set_seed(0)
    wrapped = get_peft_model(model, build(peft.config))
    return {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}


def test_merged_weights_give_the_adapters_logits(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    train = {**TRAIN, "learning_rate": 5e-2}
    lora = peft_node("lora", tmp_path).config
    trained, _, _ = fine_tune(
        model, tokenizer, examples(), train, lora, tmp_path / "ckpt", 0, tmp_path / "model", False
    )
    merged_dir = save_merged(load(str(tiny_model_dir), MODEL_CFG)[0], tokenizer, tmp_path / "model")
    merged, _ = load(str(merged_dir), MODEL_CFG)
    assert not any("lora" in name for name in merged.state_dict())
    assert torch.allclose(logits(merged, tokenizer), logits(trained, tokenizer), atol=1e-5)


def test_step_lr_decays_the_learning_rate_once_per_epoch(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    train = {**TRAIN, "step_lr_gamma": 0.85}  # 4 examples / batch 2 = 2 updates per epoch, 3 epochs
    _, history, _ = fine_tune(model, tokenizer, examples(), train, peft_node("lora", tmp_path).config, tmp_path, 0)
    # Logged with each update (at epoch 0.5, 1, 1.5, ...): the lr that update used. Epoch k runs at lr * 0.85^k.
    lrs = {row["epoch"]: row["learning_rate"] for row in history}
    assert lrs == pytest.approx(
        {0.5: 1e-2, 1: 1e-2, 1.5: 1e-2 * 0.85, 2: 1e-2 * 0.85, 2.5: 1e-2 * 0.85**2, 3: 1e-2 * 0.85**2}
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=qwen2_5_7b_instruct", "peft=llama_adapter"], r"peft=llama_adapter does not support model qwen2"),
        (["model=gemma2_9b_it", "peft=llama_adapter"], r"peft=llama_adapter does not support model gemma2"),
        (["peft=llama_adapter", "peft.config.adapter_layers=40"], r"adapter_layers=40 exceeds the 30 layers"),
        (["peft=prefix", "save_model=merged"], r"save_model=merged: peft=prefix .* cannot be merged"),
        (["train.step_lr_gamma=0.85", "train.lr_scheduler_type=linear"], r"step_lr_gamma replaces the learning"),
    ],
)
def test_unsupported_pairs_fail_in_validation(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        validate(compose_run(overrides, tmp_path))


def test_a_local_model_is_checked_against_its_config_json(tiny_model_dir, tmp_path):
    cfg = compose_run(["model=hf", f"model.path={tiny_model_dir}", "peft=llama_adapter"], tmp_path)
    with pytest.raises(ConfigError, match=r"exceeds the 2 layers of model hf: set peft.config.adapter_layers=2"):
        validate(cfg)


def test_every_method_and_model_with_an_architecture_validates(tmp_path):
    for model in ("smollm2_135m_safe", "llama2_7b", "llama3_8b_instruct", "mistral_7b_instruct"):
        for method in METHODS:
            validate(compose_run([f"model={model}", f"peft={method}"], tmp_path))
    for model in ("qwen2_5_7b_instruct", "gemma2_9b_it"):
        for method in set(METHODS) - {"llama_adapter"}:
            validate(compose_run([f"model={model}", f"peft={method}"], tmp_path))
    for method in MERGEABLE:
        validate(compose_run([f"peft={method}", "save_model=merged"], tmp_path))


def test_a_peft_error_the_validation_cannot_foresee_is_a_config_error(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    lora = OmegaConf.create({"_target_": "peft.LoraConfig", "target_modules": ["c_attn"], "task_type": "CAUSAL_LM"})
    with pytest.raises(ConfigError, match=r"LoraConfig cannot be applied to this model: .*c_attn"):
        fine_tune(model, tokenizer, examples(), TRAIN, lora, tmp_path, 0)
