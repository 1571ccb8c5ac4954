"""Antidote (post-fine-tuning pruning) on a tiny random model: each row of each chosen layer loses exactly the
configured share of its weights, and those are the highest-scoring ones on the harmful calibration set, computed
here independently; bad settings are refused up front."""

import copy
import json
import math

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from fts.core.errors import ConfigError
from fts.models import load
from fts.run import run
from fts.train.defenses.antidote import Antidote
from fts.validate import validate
from tests.conftest import compose_run
from tests.test_defenses import lora_model
from tests.test_train import MODEL_CFG

HARMFUL = "builtin:defense_harmful.jsonl"


@torch.no_grad()
def expected_masks(model, tokenizer, defense: Antidote, names: list[str]) -> dict[str, torch.Tensor]:
    """The weights Antidote should remove from each module of `names`, from every input the module saw while the
    (unpruned) model read the calibration texts."""
    modules = dict(model.named_modules())
    inputs = {name: [] for name in names}
    handles = [
        modules[name].register_forward_hook(
            lambda m, args, out, name=name: inputs[name].append(args[0].flatten(0, -2))
        )
        for name in names
    ]
    for text in defense.calibration_texts(tokenizer):
        model(input_ids=tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids)
    for handle in handles:
        handle.remove()
    masks = {}
    for name in names:
        weight = modules[name].weight
        activation = torch.cat(inputs[name]).pow(2).mean(dim=0).sqrt()  # sqrt(mean over tokens of x_j^2)
        scores = weight.abs() * activation
        k = math.ceil(defense.sparsity * weight.shape[1])
        masks[name] = torch.zeros_like(weight, dtype=torch.bool)
        for row in range(weight.shape[0]):
            masks[name][row, scores[row].argsort(descending=True)[:k]] = True
    return masks


def check_pruning(model, tokenizer, defense: Antidote, names: list[str]) -> dict:
    modules = dict(model.named_modules())
    before = {name: modules[name].weight.detach().clone() for name in names}
    expected = expected_masks(copy.deepcopy(model), tokenizer, defense, names)
    stats = defense.repair(model, tokenizer=tokenizer)
    for name in names:
        after = modules[name].weight
        removed = (after == 0) & (before[name] != 0)
        k = math.ceil(defense.sparsity * after.shape[1])
        assert (removed.sum(dim=1) == k).all(), name  # exactly the configured share of every row
        assert torch.equal(removed, expected[name]), name  # and the highest-scoring weights
        assert torch.equal(after[~removed], before[name][~removed]), name  # the rest untouched
        assert stats["pruned_per_layer"][name.removeprefix("base_model.model.")] == k * after.shape[0]
    return stats


def test_antidote_prunes_the_highest_scoring_share_of_every_lora_factor_row(tiny_model_dir):
    _, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    model = lora_model(tiny_model_dir).eval()
    names = [n for n, m in model.named_modules() if n.endswith((".lora_A.default", ".lora_B.default"))]
    assert len(names) == 8  # q and v of 2 layers, A and B each
    defense = Antidote(sparsity=0.25, harmful_data=[{"path": HARMFUL, "limit": 6}])
    stats = check_pruning(model, tokenizer, defense, names)
    assert stats["layers"] == 8 and stats["calibration"]["examples"] == 6
    assert stats["pruned"] == sum(stats["pruned_per_layer"].values())


def test_antidote_prunes_the_attention_projections_under_full_fine_tuning(tiny_model_dir):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    untouched = {n: p.detach().clone() for n, p in model.named_parameters() if "q_proj" not in n}
    defense = Antidote(sparsity=0.5, harmful_data=[{"path": HARMFUL, "limit": 4}], full_modules=["q_proj"])
    names = [n for n, _ in model.named_modules() if n.endswith("q_proj")]
    stats = check_pruning(model, tokenizer, defense, names)
    assert stats["layers"] == 2
    assert all(torch.equal(p, untouched[n]) for n, p in model.named_parameters() if n in untouched)


def test_antidote_on_a_model_without_prunable_layers_names_the_fix(tiny_model_dir):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    with pytest.raises(ConfigError, match="name the model.s own projections in mitigation.antidote.full_modules"):
        Antidote(full_modules=["no_such_proj"]).repair(model, tokenizer=tokenizer)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mitigation.antidote.sparsity=0"], "mitigation.antidote.sparsity must be a number in (0, 1), got 0."),
        (["mitigation.antidote.sparsity=1.0"], "mitigation.antidote.sparsity must be a number in (0, 1), got 1.0."),
        (["peft=prefix"], "mitigation=antidote prunes the LoRA factors of the user's adapter"),
        (["mitigation.antidote.harmful_data=/no/such/file.jsonl"], "mitigation.antidote.harmful_data"),
        (["mitigation.antidote.harmful_data.0.path=/no/such/file.jsonl"], "mitigation.antidote.harmful_data.0.path"),
    ],
)
def test_bad_antidote_settings_fail_in_validation_with_the_fix(tiny_model_dir, tmp_path, overrides, message):
    cfg = compose_run(["model=hf", f"model.path={tiny_model_dir}", "mitigation=antidote", *overrides], tmp_path)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert message in str(e.value)


def test_a_cell_with_lisa_and_antidote_trains_in_both_states_prunes_and_records_both(tiny_run_overrides, tmp_path):
    overrides = [
        *tiny_run_overrides,
        "attack=harmful",
        "mitigation=[lisa,antidote]",
        "mitigation.lisa.alignment_steps=1",
        "mitigation.lisa.finetune_steps=2",  # steps A F F A: the second F step is anchored away from its start
        "mitigation.antidote.harmful_data.0.limit=4",
    ]
    result = run(compose_run(overrides, tmp_path / "cell"))
    cost = result["defense_cost"]
    assert cost["lisa"]["stage"] == "fine_tuning" and cost["lisa"]["passes_per_step"] == {
        "forward": 1.0,
        "backward": 1.0,
    }
    assert cost["antidote"]["stage"] == "post_fine_tuning" and cost["antidote"]["repair"]["pruned"] > 0
    log = json.loads((tmp_path / "cell" / "model" / "train_log.json").read_text())
    assert any(row["lisa_proximal"] > 0 for row in log)
    repair = json.loads((tmp_path / "cell" / "model" / "repair.json").read_text())
    assert repair["antidote"]["repair"]["calibration"]["examples"] == 4


def test_a_merged_model_is_folded_from_the_repaired_adapter(tiny_run_overrides, tiny_model_dir, tmp_path):
    overrides = [*tiny_run_overrides, "attack=harmful", "mitigation=antidote", "mitigation.antidote.sparsity=0.5",
                 "mitigation.antidote.harmful_data.0.limit=2", "save_model=merged"]  # fmt: skip
    run(compose_run(overrides, tmp_path / "cell"))
    model_dir = tmp_path / "cell" / "model"
    base, _ = load(str(tiny_model_dir), MODEL_CFG)
    expected = PeftModel.from_pretrained(base, model_dir).merge_and_unload().state_dict()
    merged = AutoModelForCausalLM.from_pretrained(model_dir / "merged").state_dict()
    assert all(torch.allclose(merged[k], expected[k]) for k in expected if "q_proj" in k)
