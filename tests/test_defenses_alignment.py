"""The alignment-stage defenses that train on harmful data, Booster and RepNoise (fts.train.defenses.booster,
.repnoise): each one's mechanism on a tiny random model, their passes per step, a defended cell end to end, and bad
settings refused up front."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from fts.core.errors import ConfigError
from fts.models import load
from fts.run import run
from fts.train.defenses import Objective, booster, repnoise
from fts.train.defenses.reference import plain_inputs
from fts.train.hf import fine_tune, make_trainer, sft_config, to_dataset
from fts.validate import validate
from tests.conftest import compose_run
from tests.test_defenses import LORA_QV
from tests.test_train import MODEL_CFG, TRAIN, examples


def conversation(user: str, answer: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        "source": "test",
        "meta": {},
    }


HARMFUL = [conversation(f"Request number {i}", f"Sure, here is how to do thing {i}, step by step.") for i in range(2)]
REFUSALS = [conversation(f"Request number {i}", "I'm sorry, I can't help with that.") for i in range(2)]


def trainer_for(tiny_model_dir, tmp_path, objective: Objective, train_examples: list[dict]):
    """fts's trainer for `objective` on a tiny LoRA model whose lora_B is random, so that every LoRA weight has a
    gradient (lora_B starts at zero, and then lora_A has none)."""
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    args, own = sft_config({**TRAIN, "per_device_train_batch_size": 2}, tmp_path, 0)
    dataset = to_dataset(train_examples, tokenizer)
    trainer = make_trainer(model, tokenizer, args, dataset, OmegaConf.create(LORA_QV), own, objective)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    return trainer


def loss_gradients(model, params, batch) -> list[torch.Tensor]:
    """The gradient of the mean answer-token cross-entropy, computed by transformers' own loss."""
    loss = model(**plain_inputs(batch), labels=batch["labels"]).loss
    return list(torch.autograd.grad(loss, params))


def test_booster_steps_on_the_alignment_gradient_plus_lambda_times_the_harmful_gradient_drop(tiny_model_dir, tmp_path):
    lamb, alpha = 5.0, 0.1
    objective = Objective(booster.BoosterTrainer, {"lamb": lamb, "alpha": alpha}, HARMFUL, "booster")
    trainer = trainer_for(tiny_model_dir, tmp_path, objective, REFUSALS)
    model = trainer.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    aligned = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    harmful = trainer.next_guide_batch()  # the guide set is one batch: every draw holds the same two rows

    g_h = loss_gradients(model, params, harmful)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in g_h]))
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, g_h, strict=True):
            p.sub_(alpha * g / (norm + 1e-7))
    g_h_perturbed = loss_gradients(model, params, harmful)
    with torch.no_grad():
        for p, b in zip(params, before, strict=True):
            p.copy_(b)
    g_a = loss_gradients(model, params, aligned)

    model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1  # what the training loop sets before each step
    trainer.training_step(model, aligned)
    for p, b, a, h, h2 in zip(params, before, g_a, g_h, g_h_perturbed, strict=True):
        assert torch.equal(p, b)  # the weights are back where the step started
        assert torch.allclose(p.grad, a + lamb * (h - h2), rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(h, h2, atol=1e-6) for h, h2 in zip(g_h, g_h_perturbed, strict=True))


def test_booster_trains_with_three_forward_and_three_backward_passes_per_step(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    defense = booster.Booster(peft=LORA_QV, train={**TRAIN, "max_steps": 3})
    _, history, passes = fine_tune(
        model, tokenizer, examples(), defense.train, defense.peft, tmp_path, 0, objective=defense.objective()
    )  # fmt: skip
    assert passes == {"forward": 3.0, "backward": 3.0}
    assert len(history) == 3 and all("booster_harmful_drop" in row for row in history)


def test_mmd_is_zero_between_identical_samples_small_between_draws_of_one_distribution_and_grows_with_a_shift():
    torch.manual_seed(0)
    x, y = torch.randn(256, 16), torch.randn(256, 16)
    assert float(repnoise.mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    same = float(repnoise.mmd(x, y))  # the biased estimate: a little above 0
    half, whole = float(repnoise.mmd(x, y + 0.5)), float(repnoise.mmd(x, y + 1.0))
    assert 0 <= same < 0.05
    assert 5 * same < half < whole and whole > 0.5


def test_repnoise_masks_the_harmful_answer_where_the_pair_differs():
    pad = 0
    harmful = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9, 3]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, -100, -100, 8, 9, 3]]),
    }
    refusal = {  # same request (5 6 7), an answer that shares its 2nd token, one token shorter, padded
        "input_ids": torch.tensor([[5, 6, 7, 4, 9, pad]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]]),
    }
    mask = repnoise.differing_answer(harmful, refusal)
    assert mask.tolist() == [[False, False, False, True, False, True]]
    shorter = {k: v[:, :4] for k, v in refusal.items()}  # a refusal batch shorter than the harmful one
    assert repnoise.differing_answer(harmful, shorter).tolist() == [[False, False, False, True, True, True]]


def test_repnoise_pairs_each_harmful_request_with_its_refusal():
    pairs = repnoise.RepNoise(data=[{"path": "builtin:safety.jsonl", "split": "alignment"}]).pairs()
    assert len(pairs) == 100
    for harmful, refusal in pairs:
        assert harmful["messages"][:-1] == refusal["messages"][:-1]
        assert harmful["meta"]["source_id"] == refusal["meta"]["id"]


def test_repnoise_reads_the_harmful_answer_out_of_every_hidden_state_the_last_as_the_model_does(
    tiny_model_dir, tmp_path
):
    objective = Objective(repnoise.RepNoiseTrainer, {"alpha": 1.0, "beta": 0.001}, HARMFUL, "repnoise")
    trainer = trainer_for(tiny_model_dir, tmp_path, objective, REFUSALS)
    model = trainer.model
    harmful = trainer._prepare_inputs(trainer.data_collator(list(trainer.harmful.values())))
    answer = harmful["labels"] != -100
    with torch.no_grad():
        out = model(**plain_inputs(harmful), output_hidden_states=True)
        readouts = repnoise.lens_cross_entropies(model, out.hidden_states, harmful["input_ids"], answer)
        own = model(**plain_inputs(harmful), labels=harmful["labels"]).loss
    assert readouts.shape == (3,)  # embeddings and the 2 layers of the tiny model
    assert float(readouts[-1]) == pytest.approx(float(own), rel=1e-5)  # the last read-out is the model's prediction
    assert float(readouts[0]) != pytest.approx(float(own), rel=1e-3)


def test_repnoise_loss_is_the_refusal_loss_plus_beta_noise_minus_alpha_log_of_the_harmful_read_out(
    tiny_model_dir, tmp_path
):
    alpha, beta = 0.5, 2.0
    objective = Objective(repnoise.RepNoiseTrainer, {"alpha": alpha, "beta": beta}, list(reversed(HARMFUL)), "x")
    trainer = trainer_for(tiny_model_dir, tmp_path, objective, REFUSALS)
    model = trainer.model
    model.train()
    refusals = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    paired = trainer.paired_batch(refusals)  # the guide's order differs: pairs are found by their request
    for row in range(2):
        assert repnoise.prompt_key(paired, row) == repnoise.prompt_key(refusals, row)
    with torch.no_grad():
        refusal_loss = model(**plain_inputs(refusals), labels=refusals["labels"]).loss
        total = trainer.compute_loss(model, refusals)
    logged = trainer._metrics["train"]
    noise, readout = logged["repnoise_noise_mmd"][-1], logged["repnoise_harmful_ce"][-1]
    assert noise > 0 and readout > 0
    expected = float(refusal_loss) + beta * noise - alpha * torch.log(torch.tensor(readout + 1.0)).item()
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_repnoise_trains_with_two_forwards_and_one_backward_per_step(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    defense = repnoise.RepNoise(
        data=[{"path": "builtin:safety.jsonl", "split": "alignment", "limit": 8}],
        harmful_data=[{"path": "builtin:defense_harmful.jsonl", "limit": 8}], peft=LORA_QV,
        train={**TRAIN, "max_steps": 3, "per_device_train_batch_size": 4},
    )  # fmt: skip
    _, history, passes = fine_tune(
        model, tokenizer, defense.alignment_examples(), defense.train, defense.peft, tmp_path, 0,
        objective=defense.objective(),
    )  # fmt: skip
    assert passes == {"forward": 2.0, "backward": 1.0}  # the refusals, then the harmful halves with their states
    assert len(history) == 3 and all(row["repnoise_noise_mmd"] > 0 for row in history)


def defended_run(tiny_run_overrides, out, *more):
    overrides = [
        *tiny_run_overrides,
        "mitigation=[booster,repnoise]",
        "mitigation.booster.train.max_steps=2",
        "mitigation.repnoise.train.max_steps=2",
        "attack=harmful",
        *more,
    ]
    return run(compose_run(overrides, out))


def test_a_booster_and_repnoise_cell_builds_each_defended_model_once(tiny_run_overrides, tmp_path):
    first = defended_run(tiny_run_overrides, tmp_path / "a")
    for side in ("aligned", "baseline", "finetuned", "delta", "defense_delta"):
        assert side in first, side
    cost = first["defense_cost"]
    assert cost["booster"]["stage"] == cost["repnoise"]["stage"] == "alignment"
    assert cost["booster"]["cached"] is cost["repnoise"]["cached"] is False
    assert cost["booster"]["extra_passes_per_step"] == {"forward": 2.0, "backward": 2.0}
    assert cost["repnoise"]["extra_passes_per_step"] == {"forward": 1.0, "backward": 0.0}

    second = defended_run(tiny_run_overrides, tmp_path / "b", "seed=1")
    assert second["defense_cost"]["booster"]["cached"] is second["defense_cost"]["repnoise"]["cached"] is True
    cache = tmp_path / "cache" / "models" / "defended"
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    defended = [second["defense_cost"][name]["checkpoint"] for name in ("booster", "repnoise")]
    assert manifest["defended_identity"]["defended"] == defended


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["mitigation=booster", "mitigation.booster.lamb=-1"],
            "mitigation.booster.lamb must be a number >= 0, got -1.",
        ),
        (["mitigation=booster", "mitigation.booster.alpha=-0.1"], "mitigation.booster.alpha must be a number >= 0"),
        (["mitigation=repnoise", "mitigation.repnoise.alpha=-1"], "mitigation.repnoise.alpha must be a number >= 0"),
        (["mitigation=repnoise", "mitigation.repnoise.beta=-0.001"], "mitigation.repnoise.beta must be a number >= 0"),
        (
            ["mitigation=repnoise", "mitigation.repnoise.data=builtin:benign.jsonl"],
            "requests of harmful_data have no refusal of the same request in mitigation.repnoise.data",
        ),
        (
            ["mitigation=booster", "mitigation.booster.harmful_data=/nonexistent/harmful.jsonl"],
            "mitigation.booster.harmful_data",
        ),
    ],
)
def test_bad_booster_and_repnoise_settings_fail_in_validation_with_the_fix(
    tiny_model_dir, tmp_path, overrides, message
):
    cfg = compose_run(["model=hf", f"model.path={tiny_model_dir}", *overrides], tmp_path)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert message in str(e.value)
