"""Checks of the selected defenses (`mitigation.<name>`), part of `fts.validate.validate`: each one's settings in
range, its stage known, what it needs of the model (open weights, a LoRA adapter, the unaligned base) present."""

from omegaconf import DictConfig, OmegaConf

from fts.core.config import build
from fts.core.errors import FtsError
from fts.data.formats import locate
from fts.stages.mitigation import STAGES, build_defenses
from fts.stages.mitigation.moderation import action_problems
from fts.train.defenses.data import parts
from fts.train.defenses.safelora import MODES as SAFELORA_MODES
from fts.validate.rules import Rule, rule_problems

RULES = {
    "mitigation.safety_mix.ratio": Rule(low=0, high=1, integer=False, high_open=True, nullable=True),
    "mitigation.safety_mix.count": Rule(low=0, nullable=True),
    "mitigation.vaccine.rho": Rule(low=0, integer=False),
    "mitigation.booster.lamb": Rule(low=0, integer=False),
    "mitigation.booster.alpha": Rule(low=0, integer=False),
    "mitigation.repnoise.alpha": Rule(low=0, integer=False),
    "mitigation.repnoise.beta": Rule(low=0, integer=False),
    "mitigation.kl_anchor.weight": Rule(low=0, integer=False),
    "mitigation.kl_anchor.limit": Rule(low=1, nullable=True),
    "mitigation.safelora.threshold": Rule(low=-1, high=1, integer=False),
    "mitigation.safelora.layers": Rule(low=1),
    "mitigation.lisa.rho": Rule(low=0, integer=False),
    "mitigation.lisa.alignment_steps": Rule(low=1),
    "mitigation.lisa.finetune_steps": Rule(low=1),
    "mitigation.lisa.proximal_warmup": Rule(low=0, high=1, integer=False),
    "mitigation.lisa.limit": Rule(low=1, nullable=True),
    "mitigation.constrained_sft.beta": Rule(low=0, low_open=True, integer=False),
    "mitigation.constrained_sft.first_token_factor": Rule(low=0, low_open=True, integer=False),
    "mitigation.constrained_sft.bias_factor": Rule(low=0, low_open=True, integer=False),
    "mitigation.constrained_sft.bias_length": Rule(low=0),
    "mitigation.antidote.sparsity": Rule(low=0, high=1, integer=False, low_open=True, high_open=True),
    "mitigation.antidote.max_length": Rule(low=1),
}
LORA_TARGETS = ("peft.LoraConfig",)  # the adapters SafeLoRA projects and Antidote prunes (LoRA, DoRA, QLoRA)


def mitigation_problems(cfg: DictConfig) -> list[str]:
    mitigation = cfg.mitigation
    problems = rule_problems(cfg, RULES)
    for name, node in mitigation.items():
        if node.get("stage") not in STAGES:
            problems.append(f"mitigation.{name}.stage must be one of {', '.join(STAGES)}, got {node.get('stage')!r}.")
    mix = mitigation.get("safety_mix")
    if mix is not None and mix.get("ratio") is None and mix.get("count") is None:
        problems.append("mitigation=safety_mix needs mitigation.safety_mix.ratio (in [0, 1)) or .count.")
    if "moderation" in mitigation:
        problems += action_problems(mitigation.moderation.get("action"))
    if "safelora" in mitigation:
        problems += safelora_problems(cfg)
    if "antidote" in mitigation:
        problems += antidote_problems(cfg)
    if problems:  # the objects below would fail on the same values
        return problems
    return stage_problems(cfg) + (repnoise_problems(cfg) if "repnoise" in mitigation else [])


def stage_problems(cfg: DictConfig) -> list[str]:
    """What each stage needs: weights the provider holds (not an API model's) for every defense that trains or
    repairs, and at most one defense that replaces the fine-tuning objective."""
    try:
        defenses = build_defenses(cfg.mitigation)
    except FtsError as e:
        return [str(e)]
    problems = []
    weights = [d.name for d in [*defenses.alignment, *defenses.post]] + (
        [defenses.objective.name] if defenses.objective is not None else []
    )
    if weights and cfg.model.get("backend", "hf") != "hf":
        problems.append(
            f"mitigation={','.join(weights)} trains or changes the model's weights, which an API model "
            f"(model.backend={cfg.model.backend}) does not expose: use an open model, or a defense that changes the "
            "data (safety_mix, moderation)."
        )
    objectives = [name for name, node in cfg.mitigation.items() if node.get("stage") == "fine_tuning"]
    objectives = [n for n in objectives if n not in [d.name for d in defenses.data]]
    if len(objectives) > 1:
        problems.append(f"mitigation: {' and '.join(objectives)} both replace the fine-tuning objective; pick one.")
    return problems


def repnoise_problems(cfg: DictConfig) -> list[str]:
    """RepNoise trains on pairs: every request of its harmful data needs a refusal of the same request in its data
    (read here, small files; a file that is missing is named by the data check instead)."""
    repnoise = build(cfg.mitigation.repnoise, name="repnoise")
    try:
        for key, value in (("data", repnoise.data), ("harmful_data", repnoise.harmful_data)):
            for part in parts(value):
                locate(part["path"], repnoise.format, f"mitigation.repnoise.{key}")
    except FtsError:
        return []
    try:
        repnoise.pairs()
    except FtsError as e:
        return [str(e)]
    return []


def safelora_problems(cfg: DictConfig) -> list[str]:
    node, problems = cfg.mitigation.safelora, []
    if node.get("mode") not in SAFELORA_MODES:
        problems.append(
            f"mitigation.safelora.mode must be one of {', '.join(SAFELORA_MODES)}, got {node.get('mode')!r}."
        )
    target = OmegaConf.select(cfg, "peft.config._target_")
    if cfg.model.get("backend", "hf") == "hf" and (cfg.peft.get("trains") != "adapter" or target not in LORA_TARGETS):
        problems.append(
            f"mitigation=safelora projects a LoRA adapter, but peft={cfg.peft.get('method')} trains "
            f"{'full weights' if cfg.peft.get('trains') == 'weights' else 'no LoRA'}: use peft=lora (or "
            "lora_all_linear, dora, qlora)."
        )
    if not cfg.model.get("unaligned") and cfg.model.get("source") != "embedded":
        problems.append(
            "mitigation=safelora needs the weights the model was aligned from: set model.unaligned=<hub id or local "
            "dir>, e.g. meta-llama/Llama-2-7b-hf for Llama-2-7b-chat."
        )
    return problems


def antidote_problems(cfg: DictConfig) -> list[str]:
    """Antidote prunes the user's LoRA factors, or the attention projections of fully fine-tuned weights."""
    trains, target = cfg.peft.get("trains"), OmegaConf.select(cfg, "peft.config._target_")
    lora = trains == "adapter" and target in LORA_TARGETS
    if cfg.model.get("backend", "hf") != "hf" or trains == "weights" or lora:
        return []
    return [
        f"mitigation=antidote prunes the LoRA factors of the user's adapter (or the attention projections under full "
        f"fine-tuning), but peft={cfg.peft.get('method')} trains neither: use peft=lora (or lora_all_linear, dora, "
        "qlora) or peft=full."
    ]
