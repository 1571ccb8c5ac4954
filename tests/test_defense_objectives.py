"""The fine-tuning-stage defenses that replace the user's objective, on a tiny random model: Lisa's bi-state
schedule and proximal term, token-wise constrained SFT's loss, and their bad settings refused up front."""

import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from fts.core.errors import ConfigError
from fts.models import load
from fts.run import run
from fts.train.defenses import Objective, constrained_sft, lisa
from fts.train.defenses.reference import frozen_copy
from fts.train.hf import fine_tune
from fts.validate import validate
from tests.conftest import compose_run
from tests.test_defenses import LORA_QV
from tests.test_train import MODEL_CFG, TRAIN, examples


def guide_examples(n: int = 6) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"Guide request {i}"}, {"role": "assistant", "content": "No."}],
         "source": "guide", "meta": {}}
        for i in range(n)
    ]  # fmt: skip


class RecordingLisa(lisa.LisaTrainer):
    """Records, for every micro-batch, its state, the trainable weights it starts from, whether it was a guide batch,
    and the proximal term the trainer added."""

    seen: list[dict] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        theta = [p.detach().clone() for p in self.params]
        text = self.processing_class.decode(inputs["input_ids"][0])
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        RecordingLisa.seen.append(
            {"state": self.states[-1], "theta": theta, "guide": "Guide request" in text, "proximal": self.proximal[-1]}
        )
        return loss


def test_lisa_alternates_as_configured_with_the_proximal_term_after_the_warmup(tiny_model_dir, tmp_path):
    RecordingLisa.seen = []
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    settings = {"rho": 3.0, "alignment_steps": 2, "finetune_steps": 3, "proximal_warmup": 0.25}
    objective = Objective(RecordingLisa, settings, guide_examples(), "lisa")
    _, history, passes = fine_tune(
        model, tokenizer, examples(8), {**TRAIN, "max_steps": 8}, LORA_QV, tmp_path, 0, objective=objective
    )
    seen = RecordingLisa.seen
    a, f = "alignment", "fine_tuning"
    assert [s["state"] for s in seen] == [a, a, f, f, f, a, a, f]
    assert [s["guide"] for s in seen] == [s["state"] == a for s in seen]  # alignment steps train on the guide set
    assert passes == {"forward": 1.0, "backward": 1.0}

    # anchors, followed independently: the weights at the start of the step where the other state took over
    anchors = {a: seen[0]["theta"], f: seen[0]["theta"]}
    for step, record in enumerate(seen):
        if step > 0 and record["state"] != seen[step - 1]["state"]:
            anchors[seen[step - 1]["state"]] = record["theta"]
        if step <= 0.25 * 8:  # steps 0, 1, 2: the warm-up
            assert record["proximal"] == 0.0, step
            continue
        other = anchors[f if record["state"] == a else a]
        expected = 3.0 / 2 * sum(float(((t - o) ** 2).sum()) for t, o in zip(record["theta"], other, strict=True))
        assert record["proximal"] == pytest.approx(expected, rel=1e-4, abs=1e-12), step
        # a state's first step starts where the other state's anchor was just taken: the term is 0 there only
        assert (expected == 0) == (record["state"] != seen[step - 1]["state"]), step
    assert any(row.get("lisa_proximal", 0) > 0 for row in history)


def test_lisa_schedule_cycles_alignment_first():
    states = [lisa.lisa_state(step, 1, 9) for step in range(21)]
    assert [i for i, s in enumerate(states) if s == "alignment"] == [0, 10, 20]


class RecordingConstrained(constrained_sft.ConstrainedSFTTrainer):
    """Records each step's loss and per-token losses with a hand computation of both from plain logits."""

    seen: list[dict] = []

    def answer_token_losses(self, model, inputs):
        losses, mask, gap = super().answer_token_losses(model, inputs)
        RecordingConstrained.seen.append({"trainer_tokens": losses[mask].tolist()})
        return losses, mask, gap

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            self.passes.detach()  # the hand computation's forwards are not the trainer's
            RecordingConstrained.seen[-1].update({"loss": float(loss.detach()), **by_hand(model, inputs, self.betas)})
            self.passes.attach(self.model)
        return loss


@torch.no_grad()
def by_hand(model, inputs, betas: dict) -> dict:
    """The objective computed token by token from the full logits of the model and of its adapter-free self."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    policy = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    with model.disable_adapter():
        reference = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    losses, at_reference = [], []
    for row in range(ids.shape[0]):
        answer = [i for i in range(1, ids.shape[1]) if inputs["labels"][row, i] != -100]
        for t, i in enumerate(answer, start=1):
            beta = betas["beta"] * (5 if t == 1 else 20 if t <= 5 else 1)
            token = ids[row, i]
            diff = reference[row, i - 1, token] - policy[row, i - 1, token]
            losses.append(2 / beta * math.log1p(math.exp(beta * float(diff))))
            at_reference.append(2 / beta * math.log(2))
    return {"hand": sum(losses) / len(losses), "tokens": losses, "at_reference": at_reference}


def constrained_run(model, tokenizer, out, peft_cfg, steps: int = 1):
    RecordingConstrained.seen = []
    defense = constrained_sft.ConstrainedSFT()
    objective = defense.objective(defense.guide())
    objective.trainer = RecordingConstrained
    return fine_tune(
        model, tokenizer, examples(4), {**TRAIN, "max_steps": steps}, peft_cfg, out, 0, objective=objective
    )


def test_constrained_sft_loss_is_the_papers_at_the_reference_and_away_from_it(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    _, _, passes = constrained_run(model, tokenizer, tmp_path / "fresh", LORA_QV, steps=2)
    assert passes == {"forward": 2.0, "backward": 1.0}  # the model and its reference, one backward
    first = RecordingConstrained.seen[0]  # a fresh LoRA (B = 0): theta = ref, each token costs (2 / beta_t) ln 2
    assert first["trainer_tokens"] == pytest.approx(first["at_reference"], rel=1e-5)
    assert first["tokens"] == pytest.approx(first["at_reference"], rel=1e-5)
    assert first["loss"] == pytest.approx(sum(first["at_reference"]) / len(first["at_reference"]), rel=1e-5)

    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that already moved the model away from its reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(5 * torch.randn_like(p))
    constrained_run(model, tokenizer, tmp_path / "moved", None)
    moved = RecordingConstrained.seen[0]
    assert moved["trainer_tokens"] == pytest.approx(moved["tokens"], rel=1e-4)
    assert moved["loss"] == pytest.approx(moved["hand"], rel=1e-4)
    # the adapter moved the loss off its value at the reference by far more than the comparisons' tolerance (1e-4)
    assert abs(moved["hand"] - sum(moved["at_reference"]) / len(moved["at_reference"])) > 0.03


def test_constrained_sft_betas_follow_the_answer_position():
    labels = torch.tensor([[-100, -100, 7, 7, 7, 7, 7, 7, 7, -100]])
    betas = constrained_sft.token_betas(labels, beta=0.1, first_token_factor=5, bias_factor=20, bias_length=5)
    # position i predicts labels[:, i + 1]: answer tokens t = 1..7 sit at positions 1..7
    assert betas[0, 1:8].tolist() == pytest.approx([0.5, 2, 2, 2, 2, 0.1, 0.1])


def test_the_reference_of_full_fine_tuning_keeps_the_weights_it_started_from(tiny_model_dir, tmp_path):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)  # as TRL's trainer does: a forward that closes over the model it patched
    frozen = frozen_copy(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    before = frozen(input_ids=ids).logits.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    assert torch.equal(frozen(input_ids=ids).logits, before)
    labels = torch.tensor([[-100, 2, 3, 4]])
    assert frozen(input_ids=ids, labels=labels, fused_lm_head=True).log_probs.shape == (1, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mitigation=lisa", "mitigation.lisa.rho=-1"], "mitigation.lisa.rho must be a number >= 0, got -1."),
        (["mitigation=lisa", "mitigation.lisa.alignment_steps=0"], "mitigation.lisa.alignment_steps must be a positive"),
        (["mitigation=lisa", "mitigation.lisa.proximal_warmup=1.5"], "mitigation.lisa.proximal_warmup must be a number in [0, 1]"),
        (["mitigation=constrained_sft", "mitigation.constrained_sft.beta=0"], "mitigation.constrained_sft.beta must be a positive number"),
        (["mitigation=[lisa,constrained_sft]"], "mitigation: lisa and constrained_sft both replace the loss."),
    ],
)  # fmt: skip
def test_bad_objective_settings_fail_in_validation_with_the_fix(tiny_model_dir, tmp_path, overrides, message):
    cfg = compose_run(["model=hf", f"model.path={tiny_model_dir}", *overrides], tmp_path)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert message in str(e.value)


def test_a_constrained_sft_cell_under_full_fine_tuning_counts_the_frozen_references_forward(
    tiny_run_overrides, tmp_path
):
    overrides = [*tiny_run_overrides, "attack=harmful", "peft=full", "mitigation=constrained_sft"]
    result = run(compose_run(overrides, tmp_path / "cell"))
    cost = result["defense_cost"]["constrained_sft"]
    assert cost["stage"] == "fine_tuning" and cost["passes_per_step"] == {"forward": 2.0, "backward": 1.0}
    log = json.loads((tmp_path / "cell" / "model" / "train_log.json").read_text())
    assert abs(log[0]["logp_minus_reference"]) < 1e-5  # the first step starts at the reference
    assert abs(log[-1]["logp_minus_reference"]) > 1e-3, log  # the reference stayed where it was
