"""Config checks that run before any model loads: every problem at once, each naming the key and the fix."""

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from fts.core.config import build
from fts.core.errors import ConfigError, FtsError
from fts.core.secrets import config_secrets
from fts.data import prefill
from fts.data.formats import FIXED_FORMATS, FORMAT_KEYS, FORMATS, data_files, format_of, locate, registered
from fts.generate import vllm as vllm_engine
from fts.models.architecture import model_problems, peft_problems
from fts.validate.alignment import alignment_problems
from fts.validate.mitigation import mitigation_problems
from fts.validate.rules import range_problems

# What to tell the user when a required (`???`) value is missing.
MISSING_HINTS = {
    "model.path": "set model.path=<hub id or local directory>, e.g. model=hf model.path=meta-llama/Llama-2-7b-chat-hf "
    "(model=openai: the base model id, e.g. model.path=gpt-4o-mini-2024-07-18)",
    "dataset.path": "set dataset.path=<local file> (see the comment at the top of the dataset's conf/dataset/ file)",
    "judge.openai_compatible.base_url": "set judge.openai_compatible.base_url=http://<host>:<port>/v1 (e.g. a vLLM server)",
    "judge.llama_guard.model_path": "set judge.llama_guard.model_path=<hub id or local dir of a Llama-Guard model>",
    "eval.xstest": "set eval.xstest=<path to XSTest's xstest_prompts.csv> (github.com/paul-rottger/xstest)",
    "eval.mt_bench.questions": "set eval.mt_bench.questions=<path to FastChat's data/mt_bench/question.jsonl>",
    "eval.benchmark": "set eval.benchmark=<path>: eval=hexphi takes the folder "
    "of HEx-PHI's category_N.csv files (gated: accept its terms at https://huggingface.co/datasets/LLM-Tuning-Safety/"
    "HEx-PHI, then `huggingface-cli download --repo-type dataset LLM-Tuning-Safety/HEx-PHI --local-dir <dir>`), "
    "eval=advbench harmful_behaviors.csv (github.com/llm-attacks/llm-attacks, or the paper's repository)",
}
USAGE_POLICY_HINT = (
    " The rubric judges' policy defaults to model.usage_policy: add `usage_policy: meta` (open models) or "
    "`usage_policy: openai` (OpenAI's models) to the model's config, or set the judge's policy, e.g. "
    "judge.gpt4.policy=meta."
)
# The train groups by their `kind` (conf/train/*.yaml): the option that selects one, what it holds; and the kind
# each model backend is fine-tuned with.
TRAIN_KINDS = {"trl": ("default", "TRL's knobs"), "openai_api": ("openai", "the OpenAI API's knobs")}
BACKEND_TRAIN = {"hf": "trl", "openai": "openai_api"}
# What a PEFT method of an open model trains (conf/peft/*.yaml `trains`).
TRAINS = ("adapter", "weights")


def missing_keys(cfg: DictConfig) -> list[str]:
    problems = []
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # tests compose with the hydra node
    try:
        missing = sorted(OmegaConf.missing_keys(job))
    except InterpolationResolutionError as e:  # e.g. a model config of the user's own without usage_policy
        reason = e.msg.splitlines()[0]  # the rest repeats the key
        hint = USAGE_POLICY_HINT if "usage_policy" in reason else " Fix the interpolation or set the key."
        return [f"{e.full_key}: {reason}.{hint}"]
    for key in missing:
        hint = MISSING_HINTS.get(key, f"set {key}=<value> on the command line or in its conf/ file")
        problems.append(f"{key} is required but has no value: {hint}.")
    return problems


def value_problems(cfg: DictConfig) -> list[str]:
    backend = cfg.model.get("backend", "hf")
    problems = openai_problems(cfg) if backend == "openai" else hf_problems(cfg)
    problems += positive_ints(cfg, "eval.batch_size") + range_problems(cfg)
    engine = cfg.eval.get("engine")
    if engine == "vllm":  # open weights through vLLM instead of transformers (fts.generate.vllm)
        problems += vllm_engine.problems(cfg)
    elif engine != backend:
        problems.append(
            f"eval.engine={engine!r} does not fit model.backend={backend!r}: remove it"
            + (" (or eval.engine=vllm on a GPU)." if backend == "hf" else ".")
        )
    template = cfg.attack.get("user_template")  # the benign tier takes its template from the dataset
    if template is not None and "{prompt}" not in str(template):
        problems.append(f"attack.user_template must contain '{{prompt}}', got {template!r}.")
    if cfg.attack.name == "benign" and cfg.dataset.name == "none":
        problems.append(
            "attack=benign fine-tunes on a user dataset: add dataset=builtin_benign (or alpaca, dolly, jsonl)."
        )
    problems += alignment_problems(cfg.model.get("alignment") or {})
    if cfg.eval.get("benchmark") is None:  # eval=hexphi / eval=advbench name no file of their own
        problems.append(f"eval.benchmark is required but has no value: {MISSING_HINTS['eval.benchmark']}.")
    if cfg.eval.get("contamination") not in ("warn", "fail"):
        problems.append(f"eval.contamination must be warn or fail, got {cfg.eval.get('contamination')!r}.")
    problems += prefill.problems(cfg.eval)
    return problems + mitigation_problems(cfg) + judge_problems(cfg) + data_problems(cfg)


def judge_problems(cfg: DictConfig) -> list[str]:
    """At least one judge, the headline judge among them, and each judge's own settings (`check`: an API judge's
    policy, template_file and score_after_tag, a classifier's format and template_file, ...), without loading any
    weights or calling any endpoint."""
    if not cfg.judge:
        return ["judge: select at least one judge, e.g. judge=keyword."]
    problems = []
    if cfg.eval.get("headline_judge") not in cfg.judge:
        problems.append(
            f"eval.headline_judge={cfg.eval.get('headline_judge')} is not one of the run's judges "
            f"({', '.join(cfg.judge)}): set eval.headline_judge={next(iter(cfg.judge))}, or add it to judge=[...]."
        )
    for name, node in cfg.judge.items():
        if "_target_" not in node:  # e.g. only `+judge.gpt4.x=...` typed, without judge=[...,gpt4]
            problems.append(
                f"judge.{name} is not one of the run's judges (it has no _target_): add it with judge=[...,{name}] "
                f"(conf/judge/), or remove the judge.{name} overrides."
            )
            continue
        try:
            build(node, name=name).check()
        except FtsError as e:
            problems.append(str(e))
    return problems


def positive_ints(cfg: DictConfig, *keys: str) -> list[str]:
    problems = []
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{key} must be a positive integer, got {value!r}.")
    return problems


def train_kind_problems(cfg: DictConfig, backend: str) -> list[str]:
    """The train group must be the one of the model's backend (conf/train/*.yaml `kind`)."""
    kind, wanted = cfg.train.get("kind"), BACKEND_TRAIN[backend]
    if kind == wanted:
        return []
    option = TRAIN_KINDS[wanted][0]
    if backend == "hf":
        given, holds = TRAIN_KINDS.get(kind, (f"... (kind {kind!r})", "another fine-tuner's knobs"))
        return [f"train={given} holds {holds}; open models (model.backend=hf) use train={option}."]
    return [f"model.backend=openai is fine-tuned through the API and needs train={option} (the openai model configs "
            "select it): remove the train=... override."]  # fmt: skip


def hf_problems(cfg: DictConfig) -> list[str]:
    """Open models, trained by TRL."""
    wrong_train = train_kind_problems(cfg, "hf")
    if wrong_train:  # the API's knobs (train=openai), not TRL's
        return wrong_train
    problems = positive_ints(cfg, "train.per_device_train_batch_size")
    lr = cfg.train.learning_rate
    if not isinstance(lr, int | float) or not 0 < lr < 1:
        problems.append(f"train.learning_rate must be a number in (0, 1), got {lr!r}.")
    return problems + peft_and_model_problems(cfg)


def openai_problems(cfg: DictConfig) -> list[str]:
    """API models, fine-tuned through OpenAI's fine-tuning API: its knobs only (`peft` does not apply)."""
    train = cfg.train
    wrong_train = train_kind_problems(cfg, "openai")
    if wrong_train:  # TRL's knobs (train=default), not the API's
        return wrong_train
    problems = positive_ints(cfg, "train.n_epochs", "model.max_example_tokens", "model.max_concurrency")
    if train.batch_size is not None:
        problems += positive_ints(cfg, "train.batch_size")
    for key in ("learning_rate_multiplier", "max_usd", "price_usd_per_1m"):
        value = train[key]
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            problems.append(f"train.{key} must be a positive number or null, got {value!r}.")
    for key in ("poll_interval_s", "max_poll_interval_s", "max_wait_s"):
        if not isinstance(train[key], int | float) or train[key] <= 0:
            problems.append(f"train.{key} must be a positive number of seconds, got {train[key]!r}.")
    if not isinstance(train.poll_backoff, int | float) or train.poll_backoff < 1:
        problems.append(f"train.poll_backoff must be a number >= 1, got {train.poll_backoff!r}.")
    if train.suffix is not None and (not isinstance(train.suffix, str) or len(train.suffix) > 64):
        problems.append(f"train.suffix must be a string of at most 64 characters (or null), got {train.suffix!r}.")
    if cfg.peft.method != "none":  # the openai model configs select peft=none; an override or experiment changed it
        problems.append(
            f"peft={cfg.peft.method}: model.backend=openai is fine-tuned by the provider, which has no PEFT choice; "
            "remove it (the API's knobs are train.n_epochs, train.batch_size, train.learning_rate_multiplier)."
        )
    return problems


def peft_and_model_problems(cfg: DictConfig) -> list[str]:
    """The PEFT method must train something here, fit the model's architecture (its `supports`), and be mergeable
    when merged weights are asked for."""
    peft = cfg.peft
    method, trains = peft.get("method"), peft.get("trains")
    if trains not in TRAINS or "supports" not in peft:
        return [
            f"peft={method} does not fine-tune open models (peft.trains={trains!r}): pick one of conf/peft/, e.g. "
            "peft=lora or peft=full (peft=none is the API models')."
        ]
    problems = model_problems(cfg.model) + peft_problems(peft, cfg.model)
    if trains == "adapter" and peft.get("config") is None:
        problems.append(f"peft.config: peft={method} needs a peft config node (_target_: peft.<Method>Config).")
    if cfg.save_model not in (True, False, "merged"):
        problems.append(f"save_model must be true, false or merged, got {cfg.save_model!r}.")
    elif cfg.save_model == "merged" and not peft.supports.merge:
        problems.append(
            f"save_model=merged: peft={method} adds virtual tokens, not weights, so it cannot be merged into the "
            "model (peft.supports.merge is false); use save_model=true (the adapter is saved) or a method that "
            "merges, e.g. peft=lora."
        )
    if cfg.train.get("bf16", False) not in (True, False, "auto"):
        problems.append(f"train.bf16 must be true, false or auto, got {cfg.train.bf16!r}.")
    if cfg.train.get("lm_head_answer_only", False) not in (True, False):
        problems.append(f"train.lm_head_answer_only must be true or false, got {cfg.train.lm_head_answer_only!r}.")
    gamma = cfg.train.get("step_lr_gamma")
    if gamma is not None and not (isinstance(gamma, int | float) and 0 < gamma <= 1):
        problems.append(f"train.step_lr_gamma must be null or a number in (0, 1], got {gamma!r}.")
    elif gamma is not None and (cfg.train.lr_scheduler_type != "constant" or cfg.train.get("warmup_steps")):
        problems.append(
            "train.step_lr_gamma replaces the learning-rate schedule: set train.lr_scheduler_type=constant and "
            "train.warmup_steps=0, or train.step_lr_gamma=null."
        )
    return problems


def data_specs(cfg: DictConfig) -> list[tuple[str, str, str, str | None]]:
    """(key, spec, format, format key) of every data file or folder the run reads; format key None: a key with one
    format (FIXED_FORMATS)."""
    keys = {k: v[0] for k, v in FORMAT_KEYS.items() if k != "dataset.path"}
    if cfg.attack.name == "benign" and cfg.dataset.name != "none":
        keys["dataset.path"] = FORMAT_KEYS["dataset.path"][0]
    # the prefilling attack's answers are read only when it is on (eval.prefill_tokens > 0)
    fixed = [k for k in FIXED_FORMATS if k != "eval.prefill" or OmegaConf.select(cfg, "eval.prefill_tokens")]
    specs = []
    for key, format_key in (keys | dict.fromkeys(fixed)).items():
        spec = OmegaConf.select(cfg, key)
        if spec is not None:
            fmt = FIXED_FORMATS.get(key) or OmegaConf.select(cfg, format_key)
            specs.append((key, str(spec), str(fmt), format_key))
    return specs + defense_data_specs(cfg)


def defense_data_specs(cfg: DictConfig) -> list[tuple[str, str, str, str | None]]:
    """The defenses' data: `mitigation.<name>.data` (one file) or its parts (`data.<i>.path`, alignment-stage
    defenses), and `harmful_data` (Booster, RepNoise, Antidote), each read in the node's `format` (examples)."""
    specs = []
    for name, node in cfg.mitigation.items():
        format_key = f"mitigation.{name}.format"
        fmt = str(node.get("format", "auto"))
        for field in ("data", "harmful_data"):
            value = node.get(field)
            if isinstance(value, str):
                specs.append((f"mitigation.{name}.{field}", value, fmt, format_key))
            elif value is not None and OmegaConf.is_list(value):
                specs += [
                    (f"mitigation.{name}.{field}.{i}.path", str(p.path), fmt, format_key) for i, p in enumerate(value)
                ]
    return specs


def data_problems(cfg: DictConfig) -> list[str]:
    """Every data file the run will read must exist, in a format that gives the records its key takes, in a folder
    only for a format that reads one (hexphi), within the size limit (a missing one is named with where to get it)."""
    problems = []
    for key, spec, fmt, format_key in data_specs(cfg):
        try:
            fmt = format_of(fmt, spec, key)  # `auto`: the format of the data's shape
            form = registered(fmt, format_key or key)
        except FtsError as e:
            problems.append(str(e))
            continue
        kind = FORMAT_KEYS[key][1] if key in FORMAT_KEYS else form.kind
        if form.kind != kind:
            fits = sorted(name for name, f in FORMATS.items() if f.kind == kind)
            problems.append(f"{format_key}={fmt} gives {form.kind}, but {key} takes {kind}: choose one of {fits}.")
            continue
        try:
            data_files(locate(spec, fmt, key), key)
        except FtsError as e:
            problems.append(str(e))
    return problems


def secret_problems(cfg: DictConfig) -> list[str]:
    """A key typed into the config would be saved in the run dir and logs: fts reads keys from the environment."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return [
        f"{key}: a key in the config or on the command line ends up in run dirs and logs, and fts never reads it. "
        "Export it in the environment instead (the api_key_env setting names the variable) and remove "
        f"{key}."
        for key in sorted(config_secrets(OmegaConf.to_container(job, resolve=False)))
    ]


def validate(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem found (missing values first: others may depend on them)."""
    problems = missing_keys(cfg)
    if not problems:
        problems = value_problems(cfg)
    problems = secret_problems(cfg) + problems
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"the run config has {len(problems)} problem(s):\n{listing}")
