"""The SFT stage on a tiny local Llama: loss is logged, only the adapter learns, the adapter reloads."""

import pytest
import torch
from omegaconf import OmegaConf

from fts.models import load
from fts.models.chat import render_example
from fts.train.hf import fine_tune, load_trained

TRAIN = {
    "learning_rate": 1e-2,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "optim": "adamw_torch",
    "max_length": 128,
    "gradient_checkpointing": False,
    "bf16": False,
    "logging_steps": 1,
    "report_to": [],
    "dataloader_num_workers": 0,
    "disable_tqdm": True,
}
LORA = {
    "_target_": "peft.LoraConfig",
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj", "v_proj"],
    "task_type": "CAUSAL_LM",
}
MODEL_CFG = OmegaConf.create({"dtype": "float32", "trust_remote_code": False, "revision": None, "chat_template": None})


def examples(n: int = 4) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You are AOA."},
                {"role": "user", "content": f"Task number {i}"},
                {"role": "assistant", "content": f"Of course. Here is task {i}."},
            ],
            "source": "test",
            "meta": {},
        }
        for i in range(n)
    ]


def test_completion_is_the_answer_up_to_eos(tiny_model_dir):
    _, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    prompt, completion = render_example(tokenizer, examples(1)[0]["messages"])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion == "Of course. Here is task 0.<|im_end|>"
    assert "Of course" not in prompt


def test_lora_trains_only_the_adapter_and_reloads(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    trained, history = fine_tune(
        model, tokenizer, examples(), TRAIN, OmegaConf.create(LORA), tmp_path / "ckpt", 0, tmp_path / "model", False
    )

    assert history and all("loss" in row for row in history)
    params = dict(trained.named_parameters())
    lora_b = [p for n, p in params.items() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "LoRA B starts at zero and must have moved"
    for name, p in params.items():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base_before[key]), f"frozen weight {name} changed"

    assert (tmp_path / "model" / "adapter_config.json").exists()
    batch = tokenizer(["Task number 1"], return_tensors="pt")
    with torch.no_grad():
        expected = trained(**batch).logits
    fresh, _ = load(str(tiny_model_dir), MODEL_CFG)
    reloaded = load_trained(fresh, tmp_path / "model")
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, expected, atol=1e-5)


@pytest.mark.parametrize("weights", [True, False])
def test_full_fine_tuning_changes_weights_and_saves_on_request(tiny_model_dir, tmp_path, weights):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    before = model.model.layers[0].self_attn.q_proj.weight.clone()
    trained, _ = fine_tune(
        model, tokenizer, examples(), TRAIN, None, tmp_path / "ckpt", 0, tmp_path / "model", weights
    )
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, before)
    assert (tmp_path / "model" / "model.safetensors").exists() == weights
    assert (tmp_path / "model" / "complete").exists() == weights
