"""No key leaks: keys planted in the environment, on the command line and in a notes field never reach a file a run
writes (run dir with .hydra/, run.log, manifest, generations, W&B's offline files, the cache), nor its output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fts.core.secrets import REDACTED, config_secrets, redact_text, redact_yaml
from tests.openai_server import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
PLANTED_ENV_KEY = "sk-test-PLANTED0123456789envkey"  # OPENAI_API_KEY: the key the judge really uses
PLANTED_HF = "hf_PLANTEDabcdefghijklmnopqrstuvwxyz"  # HF_TOKEN
PLANTED_CLI_KEY = "sk-test-PLANTED0123456789clikey"  # typed on the command line
PLANTED_PLAIN = "PLANTED-plain-looking-value-42"  # under a secret name, no key shape
PLANTED_NOTE = "sk-test-PLANTED0123456789notes"  # pasted into a notes field
PLANTED = (PLANTED_ENV_KEY, PLANTED_HF, PLANTED_CLI_KEY, PLANTED_PLAIN, PLANTED_NOTE)


def leaks(paths: list[Path]) -> dict[str, list[str]]:
    """{file: [planted secrets in its bytes]} over every file below `paths` (binary files too)."""
    found = {}
    for root in paths:
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            hits = [s for s in PLANTED if s.encode() in data or s.encode("utf-16-le") in data]
            if hits:
                found[str(path)] = hits
    return found


def run_subprocess(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OPENAI_API_KEY": PLANTED_ENV_KEY,
        "HF_TOKEN": PLANTED_HF,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_DISABLE_GIT": "true",
    }
    env.pop("WANDB_API_KEY", None)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[var] = str(tmp_path / "wandb-home" / var.lower())
    command = [sys.executable, "-m", "fts.run", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_planted_keys_reach_no_file_of_a_whole_run(tiny_run_overrides, tmp_path):
    """Acceptance 3: a whole tiny run with logger=wandb and an API judge against the local server."""
    server = FakeOpenAI().start()
    run_dir = tmp_path / "run"
    try:
        proc = run_subprocess(
            [
                *tiny_run_overrides,
                "train.num_train_epochs=1",
                "logger=wandb",
                "judge=[keyword,gpt4]",
                f"judge.gpt4.base_url={server.base_url}",
                f"+eval.notes=my key is {PLANTED_NOTE}",  # a key pasted into free text
                f"tags=[planted,{PLANTED_CLI_KEY}]",  # W&B tags
                f"hydra.run.dir={run_dir}",
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert server.count() > 0, "the API judge was asked (with the planted environment key)"
    finally:
        server.stop()
    assert (run_dir / "metrics.json").exists() and list((run_dir / "wandb").rglob("*.wandb"))
    assert leaks([run_dir, tmp_path / "cache", tmp_path / "wandb-home"]) == {}
    assert not [s for s in PLANTED if s in proc.stdout + proc.stderr]
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert config.eval.notes == f"my key is {REDACTED}" and list(config.tags) == ["planted", REDACTED]
    assert config.judge.gpt4.api_key_env == "OPENAI_API_KEY"  # the name of a variable is no secret


def test_a_key_on_the_command_line_stops_the_run_and_is_redacted_from_hydra_files(tmp_path):
    """Hydra saves .hydra/ before fts runs: the callback redacts it, then validation refuses the key."""
    args = [f"+judge.gpt4.api_key={PLANTED_CLI_KEY}", f"+wandb_token={PLANTED_PLAIN}", f"hydra.run.dir={tmp_path}"]
    proc = run_subprocess(args, tmp_path)
    assert proc.returncode == 2
    assert "judge.gpt4.api_key: a key in the config or on the command line ends up in run dirs" in proc.stderr
    assert "Export it in the environment instead" in proc.stderr and "wandb_token:" in proc.stderr
    assert leaks([tmp_path]) == {} and not [s for s in PLANTED if s in proc.stdout + proc.stderr]
    overrides = OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml")
    assert f"+judge.gpt4.api_key={REDACTED}" in overrides and f"+wandb_token={REDACTED}" in overrides
    config = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert config.judge.gpt4.api_key == REDACTED and config.wandb_token == REDACTED
    assert "judge.gpt4.api_key looks like a secret" in (tmp_path / "run.log").read_text()


def test_a_submitit_sweep_with_a_key_on_the_command_line_submits_nothing(tmp_path):
    """submitit pickles each job's overrides into .submitit/ before any job (and its redaction) starts."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", f"+judge.gpt4.api_key={PLANTED_CLI_KEY}", "attack=none,aoa"]
    proc = run_subprocess([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 2
    assert "judge.gpt4.api_key: a key in the config or on the command line of a submitit sweep" in proc.stderr
    assert not (sweep / ".submitit").exists() and leaks([tmp_path]) == {}
    assert PLANTED_CLI_KEY not in proc.stdout + proc.stderr


def test_a_key_in_an_error_message_is_redacted(tmp_path):
    """A user error that quotes a config value prints the value redacted."""
    proc = run_subprocess([f"eval.contamination={PLANTED_CLI_KEY}", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 2 and f"eval.contamination must be warn or fail, got '{REDACTED}'" in proc.stderr
    assert leaks([tmp_path]) == {} and PLANTED_CLI_KEY not in proc.stdout + proc.stderr


def test_redaction_keeps_structure_and_variable_names(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "judge:\n  x:\n    api_key: abcdefgh12345\n    api_key_env: MY_KEY\n    max_tokens: 10\n"
        "eval:\n  notes: token sk-abcdef123456 here\n  keywords: [I'm sorry, hf_token=zzzzzzzzzz]\n"
    )
    secrets = set(config_secrets(OmegaConf.to_container(OmegaConf.load(path))).values())
    assert redact_yaml(path, secrets)
    assert OmegaConf.to_container(OmegaConf.load(path)) == {
        "judge": {"x": {"api_key": REDACTED, "api_key_env": "MY_KEY", "max_tokens": 10}},
        "eval": {"notes": f"token {REDACTED} here", "keywords": ["I'm sorry", f"hf_token={REDACTED}"]},
    }
    assert not redact_yaml(path, secrets)  # nothing left to redact: the file is not rewritten


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("key sk-abcdefghij done", set(), f"key {REDACTED} done"),
        ("got 'abcdefgh12345'", {"abcdefgh12345"}, f"got '{REDACTED}'"),
        ("short abc stays", {"abc"}, "short abc stays"),
        ("max_new_tokens=64", set(), "max_new_tokens=64"),
    ],
)
def test_redact_text(text, secrets, expected):
    assert redact_text(text, secrets) == expected


def test_the_callback_also_redacts_the_sweep_record_of_a_multirun(tmp_path, monkeypatch):
    import logging

    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from fts.core.secrets import RedactSecrets
    from tests.conftest import compose_run

    cfg = compose_run([f"+eval.notes=key {PLANTED_NOTE}"], tmp_path / "sweep" / "0")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    (tmp_path / "sweep" / "0" / ".hydra").mkdir(parents=True)
    OmegaConf.save(task, tmp_path / "sweep" / "0" / ".hydra" / "config.yaml")
    OmegaConf.save(cfg, tmp_path / "sweep" / "multirun.yaml")
    root = logging.getLogger()
    before = {h: list(h.filters) for h in root.handlers}
    try:
        RedactSecrets().on_job_start(cfg)
    finally:
        for handler, filters in before.items():
            handler.filters = filters
    assert leaks([tmp_path]) == {}
    assert OmegaConf.load(tmp_path / "sweep" / "multirun.yaml").eval.notes == f"key {REDACTED}"
