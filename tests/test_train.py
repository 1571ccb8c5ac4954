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
    trained, history, _ = fine_tune(
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
    trained, _, _ = fine_tune(
        model, tokenizer, examples(), TRAIN, None, tmp_path / "ckpt", 0, tmp_path / "model", weights
    )
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, before)
    assert (tmp_path / "model" / "model.safetensors").exists() == weights
    assert (tmp_path / "model" / "complete").exists() == weights


def test_lm_head_on_the_answer_only_is_the_same_loss(tiny_model_dir, tmp_path, monkeypatch):
    """lm_head_answer_only: TRL's fused LM head scores the answer positions only (as TRL does on CUDA); the loss
    and the updates stay the same, the head does a fraction of the work."""
    from trl.trainer import utils as trl_utils

    scored = []
    fused = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            scored.append(hidden.shape[0])
            return fused.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    losses, positions = {}, {}
    for answer_only in (False, True):
        scored.clear()
        model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
        train = {**TRAIN, "num_train_epochs": 2, "lm_head_answer_only": answer_only}  # 4 updates
        _, history, _ = fine_tune(model, tokenizer, examples(), train, LORA, tmp_path / str(answer_only), 0)
        losses[answer_only], positions[answer_only] = [row["loss"] for row in history], sum(scored)
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert 0 < positions[True] < positions[False] / 2
    assert trl_utils._use_triton(torch.device("cpu")) is False  # TRL's own function is back


def test_bf16_training_leaves_the_model_in_its_own_dtype(tiny_model_dir, tmp_path):
    """bf16 mixed precision wraps forward in autocast for training; the fine-tuned model then computes in float32,
    like the baseline and like the saved model reloaded."""
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    train = {**TRAIN, "bf16": True, "num_train_epochs": 1}
    trained, _, _ = fine_tune(model, tokenizer, examples(), train, LORA, tmp_path / "ckpt", 0, tmp_path / "model")
    batch = tokenizer(["Task number 1"], return_tensors="pt")
    reloaded = load_trained(load(str(tiny_model_dir), MODEL_CFG)[0], tmp_path / "model")
    with torch.no_grad():
        assert torch.allclose(trained(**batch).logits, reloaded(**batch).logits, atol=1e-5)


def test_the_tokenized_training_set_comes_from_the_cache_the_second_time(tiny_model_dir, tmp_path, monkeypatch):
    """The second training on the same data and tokenizer skips TRL's preparation and trains on the same tokens."""
    from trl import SFTTrainer

    from fts.core.cache import Cache

    prepared = []
    prepare = SFTTrainer._prepare_dataset

    def counting(self, dataset, *args, **kwargs):
        prepared.append(len(dataset))
        return prepare(self, dataset, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "_prepare_dataset", counting)
    cache = Cache(tmp_path / "cache")
    histories = []
    for run in range(3):
        data = examples() if run < 2 else examples(5)  # run 2: other data, another entry
        model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
        _, history, _ = fine_tune(model, tokenizer, data, TRAIN, LORA, tmp_path / f"ckpt{run}", 0, cache=cache)
        histories.append([(row["loss"], row["num_tokens"]) for row in history])
    assert prepared == [4, 5]  # the second run took the first one's tokens
    assert histories[1] == histories[0]  # same tokens, same labels, same updates
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2
