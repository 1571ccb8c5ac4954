"""Type and range rules of the config's numeric keys and names (part of `fts.validate.validate`).

A typo such as `eval.max_per_category=-1`, `mitigation.safety_mix.ratio=1.5` or `train.num_train_epochs=0` must stop a sweep cell
in seconds with the key and the fix, not after the model loaded (or, worse, silently evaluate zero prompts).
"""

import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fts.core.device import DTYPE_SETTINGS
from fts.core.fingerprint import RESUME_CHOICES
from fts.data.lengths import TOO_LONG_CHOICES
from fts.generate.hf import DTYPES as INFERENCE_DTYPES

ABSENT = object()
# A name fts joins into a path (logs/<task_name>/runs/...): one plain folder name, never `..`, `/` or absolute.
FOLDER_NAME = re.compile(r"[A-Za-z0-9][\w.=+,@-]*")
MAX_NEW_TOKENS = 32768  # beyond any model's context here: surely a typo (the paper generated up to 512)


@dataclass(frozen=True)
class Rule:
    """An int (or any number with `integer=False`) in [low, high] (open ends with `low_open`, `high_open`), maybe
    null."""

    low: float | None = None
    high: float | None = None
    integer: bool = True
    nullable: bool = False
    high_open: bool = False
    low_open: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        kinds = int if self.integer else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            what = f"{kind} in {opening}{self.low:g}, {self.high:g}{closing}"
        elif (self.low == 0 and self.low_open) or (self.low == 1 and self.integer):
            what = f"a positive {kind.split()[-1]}"
        elif self.low is not None:
            what = f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        else:
            what = kind
        return f"null or {what}" if self.nullable else what


COUNT = Rule(low=1)
LIMIT = Rule(low=0, nullable=True)  # null = all of them
COMMON = {
    "seed": Rule(low=0),
    "eval.max_per_category": Rule(low=1, nullable=True),
    "eval.max_benign": LIMIT,
    "eval.max_utility": LIMIT,
    "eval.max_xstest": LIMIT,
    "eval.max_new_tokens": Rule(low=1, high=MAX_NEW_TOKENS),
    "eval.prefill_tokens": Rule(low=0),
    "dataset.limit": Rule(low=1, nullable=True),
    "attack.shots": Rule(low=1, nullable=True),
    "attack.safety_count": Rule(low=0),
    "eval.min_utility": Rule(low=0, high=1, integer=False, nullable=True),
}
HF_TRAIN = {
    "train.num_train_epochs": Rule(low=0, low_open=True, integer=False),
    "train.gradient_accumulation_steps": COUNT,
    "train.warmup_steps": Rule(low=0),
    "train.weight_decay": Rule(low=0, integer=False),
    "model.max_length": COUNT,
}


def rule_problems(cfg: DictConfig, rules: dict[str, Rule]) -> list[str]:
    problems = []
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is not ABSENT and not rule.accepts(value):
            problems.append(f"{key} must be {rule.describe()}, got {value!r}.")
    return problems


def range_problems(cfg: DictConfig) -> list[str]:
    """The numeric keys of every run, of TRL runs, and of the chosen attack (the defenses': fts.validate.mitigation)."""
    problems = rule_problems(cfg, COMMON)
    if cfg.model.get("backend", "hf") == "hf":
        problems += rule_problems(cfg, HF_TRAIN)
        steps = cfg.train.get("max_steps", -1)
        if not Rule(low=1).accepts(steps) and steps != -1:
            problems.append(f"train.max_steps must be -1 (use the epochs) or a positive integer, got {steps!r}.")
        if cfg.train.get("too_long", "warn") not in ("warn", "drop", "fail"):
            problems.append(f"train.too_long must be warn, drop or fail, got {cfg.train.get('too_long')!r}.")
    if cfg.attack.name == "backdoor" and not str(cfg.attack.get("trigger") or "").strip():
        problems.append("attack.trigger is empty: the backdoor needs a trigger phrase, e.g. the paper's three words.")
    problems += choice_problems(cfg) + peft_config_problems(cfg) + utility_floor_problems(cfg)
    if cfg.eval.get("too_long", "fail") not in TOO_LONG_CHOICES:
        problems.append(f"eval.too_long must be fail or drop, got {cfg.eval.get('too_long')!r}.")
    if cfg.eval.get("dtype", "auto") not in ("auto", *INFERENCE_DTYPES):
        problems.append(f"eval.dtype must be auto, {', '.join(INFERENCE_DTYPES)}; got {cfg.eval.get('dtype')!r}.")
    coherence_dtype = (cfg.eval.get("coherence") or {}).get("dtype", "float32")
    if coherence_dtype not in DTYPE_SETTINGS:
        problems.append(f"eval.coherence.dtype must be auto, float32 or bfloat16; got {coherence_dtype!r}.")
    if cfg.get("resume", "auto") not in RESUME_CHOICES:
        problems.append(f"resume must be auto or force, got {cfg.get('resume')!r}.")
    return problems + name_problems(cfg)


def name_problems(cfg: DictConfig) -> list[str]:
    name = cfg.get("task_name")
    if isinstance(name, str | int) and not isinstance(name, bool) and FOLDER_NAME.fullmatch(str(name)):
        return []
    return [
        f"task_name={name!r} is a folder name under paths.log_dir (logs/<task_name>/runs/...): use a plain name "
        "of letters, digits, '_', '-' and '.', without '/' or '..'. To put the run somewhere else, set hydra.run.dir."
    ]


# ---------------------------------------------------------------------------------------------------------------
# Names checked against the libraries that take them, so the choices never drift from the pinned versions.


def float_dtypes() -> list[str]:
    import torch

    names = [n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)]
    return sorted(n for n in names if getattr(torch, n).is_floating_point and not n.startswith("float8"))


def library_choices(cfg: DictConfig) -> dict[str, list[str]]:
    """{key: the values its library accepts} for the named keys of this run."""
    choices = {}
    if cfg.model.get("backend", "hf") == "hf":
        from transformers import SchedulerType
        from transformers.training_args import OptimizerNames

        choices["train.lr_scheduler_type"] = [s.value for s in SchedulerType]
        choices["train.optim"] = [o.value for o in OptimizerNames]
        choices["model.dtype"] = float_dtypes()
    return choices


def choice_problems(cfg: DictConfig) -> list[str]:
    problems = []
    for key, allowed in library_choices(cfg).items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is not ABSENT and value not in allowed:
            problems.append(f"{key} must be one of {allowed}, got {value!r}.")
    return problems


# The size and rate keys of each PEFT config class (peft accepts r=0 or lora_dropout=2 and fails mid-training).
PEFT_RULES = {
    "r": COUNT,
    "lora_alpha": Rule(low=0, low_open=True, integer=False),
    "lora_dropout": Rule(low=0, high=1, integer=False, high_open=True),
    "num_virtual_tokens": COUNT,
    "adapter_len": COUNT,
    "adapter_layers": COUNT,
}


def peft_config_problems(cfg: DictConfig) -> list[str]:
    node = cfg.peft.get("config") if cfg.model.get("backend", "hf") == "hf" else None
    if node is None:
        return []
    # (adapter_layers against the model's depth: fts.models.architecture.peft_problems)
    return rule_problems(cfg, {f"peft.config.{k}": rule for k, rule in PEFT_RULES.items()})


def utility_floor_problems(cfg: DictConfig) -> list[str]:
    """eval.min_utility is a floor for the built-in QA accuracy: without the QA questions there is nothing to hold
    a run against, and every attack would pass."""
    floor = cfg.eval.get("min_utility")
    if floor is None or (cfg.eval.get("utility") and cfg.eval.get("max_utility") != 0):
        return []
    utility, most = ("null" if v is None else v for v in (cfg.eval.get("utility"), cfg.eval.get("max_utility")))
    return [
        f"eval.min_utility={floor} is a floor for QA accuracy, but the QA questions are off (eval.utility={utility}, "
        f"eval.max_utility={most}): set eval.utility=builtin:utility_eval.jsonl with eval.max_utility null or > 0, "
        "or eval.min_utility=null."
    ]
