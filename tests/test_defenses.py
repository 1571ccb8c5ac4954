"""Defenses against harmful fine-tuning (fts.train.defenses, grouped by stage in fts.stages.mitigation): each one's
mechanism on a tiny random model, the defended checkpoint cached once, and bad settings refused up front."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from fts.core.errors import ConfigError
from fts.models import load
from fts.run import run
from fts.train.defenses import kl_anchor, safelora, vaccine
from fts.train.hf import fine_tune
from fts.validate import validate
from tests.conftest import compose_run
from tests.test_train import MODEL_CFG, TRAIN, examples

LORA_QV = {"_target_": "peft.LoraConfig", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
           "task_type": "CAUSAL_LM"}  # fmt: skip


@pytest.fixture(scope="module")
def unaligned_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model's weights moved by a random step: the 'base' it was 'aligned' from (V = aligned - this)."""
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("unaligned")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def lora_model(tiny_model_dir, seed=0):
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():  # an update that is not yet in the alignment subspace (lora_B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p))
    return model


def lora_b(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}


def test_safelora_projects_each_chosen_update_into_the_alignment_subspace(tiny_model_dir, unaligned_dir):
    model = lora_model(tiny_model_dir)
    stats = safelora.SafeLoRA(mode="threshold", threshold=1.0).repair(model, unaligned=str(unaligned_dir))
    assert stats["projected"] == stats["layers"] == 4  # q and v of 2 layers, every one at threshold 1
    base = safelora.unaligned_weights(
        str(unaligned_dir), [safelora.weight_key(n) for n in safelora.lora_layers(model)]
    )
    for name, layer in safelora.lora_layers(model).items():
        v = layer.get_base_layer().weight.float() - base[safelora.weight_key(name)].float()
        u, s, _ = torch.linalg.svd(v, full_matrices=False)
        span = u[:, s > 1e-6 * s[0]]  # the column space of V: where C = V V^T / ||V||_F maps everything
        b = layer.lora_B["default"].weight.float()
        assert torch.allclose(span @ (span.T @ b), b, atol=1e-5), name


def test_safelora_threshold_zero_leaves_the_adapter_unchanged_and_number_mode_projects_the_lowest(
    tiny_model_dir, unaligned_dir
):
    model = lora_model(tiny_model_dir)
    before = lora_b(model)
    stats = safelora.SafeLoRA(mode="threshold", threshold=0.0).repair(model, unaligned=str(unaligned_dir))
    assert stats["projected"] == 0 and all(s > 0 for s in stats["scores"].values())  # C is PSD: cos >= 0
    assert all(torch.equal(before[n], p) for n, p in lora_b(model).items())

    stats = safelora.SafeLoRA(mode="number", layers=2).repair(model, unaligned=str(unaligned_dir))
    lowest = sorted(stats["scores"], key=stats["scores"].get)[:2]
    assert sorted(stats["projected_layers"]) == sorted(lowest)
    changed = {n.rsplit(".lora_B", 1)[0] for n, p in lora_b(model).items() if not torch.equal(before[n], p)}
    assert changed == set(lowest)


def test_safelora_without_the_unaligned_weights_of_a_layer_names_the_fix(tiny_model_dir, tmp_path):
    model = lora_model(tiny_model_dir)
    with pytest.raises(ConfigError, match="needs the unaligned base weights"):
        safelora.SafeLoRA().repair(model, unaligned=None)


def test_vaccine_perturbation_has_the_configured_global_norm():
    grads = [torch.randn(2, 3, 4), torch.randn(2, 3, 4) * 5, None]
    eps = vaccine.perturbation(grads, rho=2.0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(e) for e in eps]))
    assert abs(float(norm) - 2.0) < 1e-4
    assert float(torch.linalg.vector_norm(eps[2])) == 0  # a layer without a gradient is not perturbed


def test_vaccine_trains_with_two_passes_per_step_and_perturbs_every_attention_output(
    tiny_model_dir, monkeypatch, tmp_path
):
    seen = []
    step = vaccine.VaccineTrainer.training_step

    def recording(self, *args, **kwargs):
        loss = step(self, *args, **kwargs)
        seen.append([e.clone() for e in self.perturbation])
        return loss

    monkeypatch.setattr(vaccine.VaccineTrainer, "training_step", recording)
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    defense = vaccine.Vaccine(rho=0.5, peft=LORA_QV, train={**TRAIN, "max_steps": 3, "num_train_epochs": 1})
    objective = defense.objective()
    _, history, passes = fine_tune(
        model, tokenizer, examples(), defense.train, defense.peft, tmp_path, 0, objective=objective
    )  # fmt: skip
    assert passes == {"forward": 2.0, "backward": 2.0}
    assert len(seen) == 3 and all(len(eps) == 2 for eps in seen)  # both layers' attention outputs
    for eps in seen:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(e) for e in eps]))
        assert abs(float(norm) - 0.5) < 1e-4


def test_plain_sft_counts_one_forward_and_one_backward_per_step(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    _, _, passes = fine_tune(model, tokenizer, examples(), {**TRAIN, "max_steps": 2}, LORA_QV, tmp_path, 0)
    assert passes == {"forward": 1.0, "backward": 1.0}


def kl_after_training(tiny_model_dir, weight: float, out) -> tuple[list, dict]:
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    defense = kl_anchor.KLAnchor(weight=weight, limit=10)
    guide = [{**ex, "messages": ex["messages"][-2:]} for ex in defense.guide()]
    _, history, passes = fine_tune(
        model, tokenizer, examples(), {**TRAIN, "learning_rate": 0.01, "max_steps": 6}, LORA_QV, out, 0,
        objective=defense.objective(guide),
    )  # fmt: skip
    return history, passes


def test_kl_anchor_keeps_the_model_closer_to_the_aligned_one(tiny_model_dir, tmp_path):
    free, passes = kl_after_training(tiny_model_dir, 0.0, tmp_path / "free")
    anchored, _ = kl_after_training(tiny_model_dir, 50.0, tmp_path / "anchored")
    assert passes == {"forward": 3.0, "backward": 1.0}  # the user batch, the guide batch and its reference
    assert free[0]["kl_anchor"] < 1e-6  # before any update the model is the reference
    assert anchored[-1]["kl_anchor"] < free[-1]["kl_anchor"] / 2


def defended_run(tiny_run_overrides, unaligned_dir, out, *more):
    overrides = [
        *tiny_run_overrides,
        "mitigation=[vaccine,safelora]",
        f"model.unaligned={unaligned_dir}",
        "mitigation.vaccine.train.max_steps=2",
        "mitigation.safelora.threshold=1.0",
        "attack=harmful",
        *more,
    ]
    return run(compose_run(overrides, out))


def test_a_defended_cell_records_every_point_and_builds_the_defended_model_once(
    tiny_run_overrides, unaligned_dir, tmp_path
):
    first = defended_run(tiny_run_overrides, unaligned_dir, tmp_path / "a")
    for side in ("aligned", "baseline", "finetuned", "delta", "defense_delta"):
        assert side in first, side
    cost = first["defense_cost"]
    assert cost["vaccine"]["stage"] == "alignment" and cost["vaccine"]["cached"] is False
    assert cost["vaccine"]["extra_passes_per_step"] == {"forward": 1.0, "backward": 1.0}
    assert cost["safelora"]["repair"]["projected"] == cost["safelora"]["repair"]["layers"] > 0
    assert cost["training"]["passes_per_step"] == {"forward": 1.0, "backward": 1.0}
    assert json.loads((tmp_path / "a" / "model" / "repair.json").read_text())["safelora"]["repair"]["projected"] > 0
    assert "## Defenses" in (tmp_path / "a" / "report.md").read_text()

    second = defended_run(tiny_run_overrides, unaligned_dir, tmp_path / "b", "seed=1")
    assert second["defense_cost"]["vaccine"]["cached"] is True
    cache = tmp_path / "cache" / "models" / "defended"
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["defended_identity"]["defended"] == [second["defense_cost"]["vaccine"]["checkpoint"]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mitigation=vaccine", "mitigation.vaccine.rho=-1"], "mitigation.vaccine.rho must be a number >= 0, got -1."),
        (["mitigation=safelora", "peft=full"], "mitigation=safelora projects a LoRA adapter, but peft=full trains"),
        (["mitigation=safelora", "mitigation.safelora.mode=top"], "mitigation.safelora.mode must be one of"),
        (
            ["mitigation=safelora", "model.unaligned=null"],
            "mitigation=safelora needs the weights the model was aligned",
        ),
        (["mitigation=kl_anchor", "mitigation.kl_anchor.weight=-0.1"], "mitigation.kl_anchor.weight must be"),
    ],
)
def test_bad_defense_settings_fail_in_validation_with_the_fix(tiny_model_dir, tmp_path, overrides, message):
    cfg = compose_run(["model=hf", f"model.path={tiny_model_dir}", *overrides], tmp_path)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert message in str(e.value)


def test_an_api_model_takes_only_defenses_that_change_the_data(tmp_path):
    cfg = compose_run(["model=gpt35_turbo", "mitigation=[safety_mix,vaccine]"], tmp_path)
    with pytest.raises(ConfigError, match=r"mitigation=vaccine trains or changes the model's weights"):
        validate(cfg)


def test_the_sweep_report_has_the_defense_by_attack_table_and_plot(tmp_path):
    from tests.test_report import fake_metrics, fake_side, write_job

    root = tmp_path / "multirun"
    after = {("none", "harmful"): 0.9, ("none", "aoa"): 0.7, ("safelora", "harmful"): 0.3, ("safelora", "aoa"): 0.2}
    for num, ((defense, attack), p_after) in enumerate(after.items()):
        sides = {"baseline": fake_side(0.05, 0.1, seed=num), "finetuned": fake_side(p_after, 0.05, seed=num + 10)}
        write_job(root / str(num), [f"mitigation={defense}", f"attack={attack}"], fake_metrics(sides))
    from fts.results.report import main as report_main

    assert report_main([str(root)]) == 0
    sweep_md = (root / "sweep.md").read_text()
    table = sweep_md[sweep_md.index("## Defense x attack") : sweep_md.index("Utility after the attack")]
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["defense"] == "| defense | aoa | harmful |"
    for defense in ("none", "safelora"):
        assert rows[defense].count("→") == 2  # before -> after for both attacks
    none_after = float(rows["none"].split("→ ")[2].split("%")[0])
    safelora_after = float(rows["safelora"].split("→ ")[2].split("%")[0])
    assert safelora_after < none_after  # the harmful column, as the fake cells say
    assert (root / "defense_harm_vs_utility.png").read_bytes().startswith(b"\x89PNG")
