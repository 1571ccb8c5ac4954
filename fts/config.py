"""Config checks that run before any model loads: every problem at once, each naming the key and the fix."""

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fts.data.formats import LOADERS, locate
from fts.errors import ConfigError, FtsError
from fts.models.architecture import MERGEABLE, model_problems, peft_problems

# What to tell the user when a required (`???`) value is missing.
MISSING_HINTS = {
    "model.path": "set model.path=<hub id or local directory>, e.g. model=hf model.path=meta-llama/Llama-2-7b-chat-hf",
    "dataset.path": "set dataset.path=<local file> (see the comment at the top of the dataset's conf/dataset/ file)",
    "judge.openai_compatible.base_url": "set judge.openai_compatible.base_url=http://<host>:<port>/v1 (e.g. a vLLM server)",
    "judge.llama_guard.model_path": "set judge.llama_guard.model_path=<hub id or local dir of a Llama-Guard model>",
}
PEFT_METHODS = ("full", "lora", "lora_all_linear", "qlora", "dora", "prefix", "llama_adapter", "ia3")


def missing_keys(cfg: DictConfig) -> list[str]:
    problems = []
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # tests compose with the hydra node
    for key in sorted(OmegaConf.missing_keys(job)):
        hint = MISSING_HINTS.get(key, f"set {key}=<value> on the command line or in its conf/ file")
        problems.append(f"{key} is required but has no value: {hint}.")
    return problems


def value_problems(cfg: DictConfig) -> list[str]:
    problems = []
    for key in ("eval.max_new_tokens", "eval.batch_size", "train.per_device_train_batch_size"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or value < 1:
            problems.append(f"{key} must be a positive integer, got {value!r}.")
    lr = cfg.train.learning_rate
    if not isinstance(lr, int | float) or not 0 < lr < 1:
        problems.append(f"train.learning_rate must be a number in (0, 1), got {lr!r}.")
    problems += peft_and_model_problems(cfg)
    template = cfg.attack.get("user_template")  # the benign tier takes its template from the dataset
    if template is not None and "{prompt}" not in str(template):
        problems.append(f"attack.user_template must contain '{{prompt}}', got {template!r}.")
    if cfg.attack.name == "benign" and cfg.dataset.name == "none":
        problems.append(
            "attack=benign fine-tunes on a user dataset: add dataset=builtin_benign (or alpaca, dolly, jsonl)."
        )
    if cfg.eval.get("contamination") not in ("warn", "fail"):
        problems.append(f"eval.contamination must be warn or fail, got {cfg.eval.get('contamination')!r}.")
    if not cfg.judge:
        problems.append("judge: select at least one judge, e.g. judge=keyword.")
    return problems + data_problems(cfg)


def peft_and_model_problems(cfg: DictConfig) -> list[str]:
    """The PEFT method must exist, fit the model's architecture, and be mergeable when merged weights are asked for."""
    method = cfg.peft.method
    if method not in PEFT_METHODS:
        return [f"peft.method must be one of {PEFT_METHODS}, got {method!r}."]
    problems = model_problems(cfg.model) + peft_problems(cfg.peft, cfg.model)
    if method != "full" and cfg.peft.get("config") is None:
        problems.append(f"peft.config: peft={method} needs a peft config node (_target_: peft.<Method>Config).")
    if cfg.save_model not in (True, False, "merged"):
        problems.append(f"save_model must be true, false or merged, got {cfg.save_model!r}.")
    elif cfg.save_model == "merged" and method not in MERGEABLE:
        problems.append(
            f"save_model=merged: peft={method} adds virtual tokens, not weights, so it cannot be merged into the "
            f"model; use save_model=true (the adapter is saved) or one of {MERGEABLE}."
        )
    gamma = cfg.train.get("step_lr_gamma")
    if gamma is not None and not (isinstance(gamma, int | float) and 0 < gamma <= 1):
        problems.append(f"train.step_lr_gamma must be null or a number in (0, 1], got {gamma!r}.")
    elif gamma is not None and (cfg.train.lr_scheduler_type != "constant" or cfg.train.get("warmup_steps")):
        problems.append(
            "train.step_lr_gamma replaces the learning-rate schedule: set train.lr_scheduler_type=constant and "
            "train.warmup_steps=0, or train.step_lr_gamma=null."
        )
    return problems


def data_problems(cfg: DictConfig) -> list[str]:
    """Every data file the run will read must exist (a missing one is named with where to get it)."""
    keys = {"eval.benchmark": "eval.benchmark_format", "eval.benign": None, "attack.data": "attack.format"}
    keys |= {"attack.safety_data": "attack.safety_format", "mitigation.data": "mitigation.format"}
    if cfg.attack.name == "benign" and cfg.dataset.name != "none":
        keys["dataset.path"] = "dataset.format"
    problems = []
    for key, format_key in keys.items():
        spec = OmegaConf.select(cfg, key)
        fmt = OmegaConf.select(cfg, format_key) if format_key else "fts_prompts"
        if spec is None:
            continue
        if fmt not in LOADERS:
            problems.append(f"{format_key}: unknown data format {fmt!r}; choose one of {sorted(LOADERS)}.")
        else:
            try:
                locate(str(spec), str(fmt), key)
            except FtsError as e:
                problems.append(str(e))
    return problems


def validate(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem found (missing values first: others may depend on them)."""
    problems = missing_keys(cfg)
    if not problems:
        problems = value_problems(cfg)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"the run config has {len(problems)} problem(s):\n{listing}")


def build(node: DictConfig | dict, **kwargs: Any) -> Any:
    """Instantiate a `_target_` node (leaf objects only: attacks, judges, PEFT configs).

    The one place fts calls `hydra.utils.instantiate`: plain containers go in (`_convert_="all"`, because PEFT and
    W&B choke on ListConfig), and an FtsError raised by the target comes out as itself, not wrapped in Hydra's
    InstantiationException, so that the user sees the one-paragraph message.
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, FtsError):
            raise e.__cause__ from None
        raise ConfigError(f"cannot build {node.get('_target_')}: {e}") from None
