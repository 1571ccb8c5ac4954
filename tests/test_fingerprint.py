"""A run dir belongs to one config (fts/core/fingerprint.py): reruns of the same config resume, another config is
refused naming the keys, resume=force moves the old results aside, and the report reads the recorded config."""

import json

import pytest

from fts.core import fingerprint
from fts.core.config import compose_run
from fts.core.errors import ConfigError
from fts.results.runs import load_run


def bound(overrides: list[str], out) -> None:
    fingerprint.bind(compose_run(overrides, out), out)


def fake_hydra_files(out, attack: str) -> None:
    """What Hydra writes into .hydra/ at every start, before fts runs."""
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    (out / ".hydra" / "config.yaml").write_text(f"attack:\n  name: {attack}\n")
    (out / ".hydra" / "overrides.yaml").write_text(f"- attack={attack}\n")


def test_the_same_config_resumes_and_keys_that_only_log_or_place_results_do_not_count(tmp_path):
    bound(["attack=harmful"], tmp_path)
    record = json.loads((tmp_path / "fingerprint.json").read_text())
    assert record["config"]["attack.name"] == "harmful"
    assert not any(k.startswith(("hydra.", "paths.", "logger.", "cache.")) for k in record["config"])
    bound(["attack=harmful", "eval.batch_size=4", "logger=wandb", "cache.enabled=false", "task_name=x"], tmp_path)
    assert json.loads((tmp_path / "fingerprint.json").read_text()) == record


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        (["attack=harmful"], ["attack=aoa"], "attack.name: 'harmful' -> 'aoa'"),
        (["peft=lora"], ["peft=full"], "peft.method: 'lora' -> 'full'"),
        (
            ["mitigation=safety_mix", "mitigation.safety_mix.ratio=0.3"],
            ["mitigation=safety_mix", "mitigation.safety_mix.ratio=0.1"],
            "mitigation.safety_mix.ratio: 0.3 -> 0.1",
        ),  # fmt: skip
        (["eval.max_new_tokens=64"], ["eval.max_new_tokens=32"], "eval.max_new_tokens: 64 -> 32"),
    ],
)
def test_another_config_is_refused_naming_the_keys_and_the_fix(first, second, named, tmp_path):
    bound(first, tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError) as e:
        bound(second, tmp_path)
    assert named in str(e.value)
    assert "hydra.run.dir=<new dir>" in str(e.value) and "resume=force" in str(e.value)
    assert (tmp_path / "metrics.json").read_text() == "{}"  # nothing touched


def test_a_refused_start_puts_back_the_hydra_files_of_the_dirs_own_config(tmp_path):
    fake_hydra_files(tmp_path, "harmful")
    bound(["attack=harmful"], tmp_path)
    fake_hydra_files(tmp_path, "aoa")  # Hydra rewrote them for the refused config
    with pytest.raises(ConfigError):
        bound(["attack=aoa"], tmp_path)
    assert "harmful" in (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "attack=harmful" in (tmp_path / ".hydra" / "overrides.yaml").read_text()


def test_the_report_reads_the_recorded_config_even_if_hydra_files_changed(tmp_path):
    fake_hydra_files(tmp_path, "harmful")
    bound(["attack=harmful"], tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"finetuned": {"keyword": {"asr": 1.0}}}))
    fake_hydra_files(tmp_path, "aoa")  # e.g. a start that crashed before fts could refuse it
    run = load_run(tmp_path)
    assert run.attack == "harmful" and run.overrides == {"attack": "harmful"}


def test_resume_force_moves_the_old_results_aside_and_rebinds(tmp_path):
    bound(["attack=harmful"], tmp_path)
    for name in ("metrics.json", "done", "train.jsonl", "run.log"):
        (tmp_path / name).write_text(name)
    bound(["attack=aoa", "resume=force"], tmp_path)
    (old,) = (tmp_path / "superseded").iterdir()
    assert sorted(p.name for p in old.iterdir()) == ["done", "fingerprint.json", "metrics.json", "train.jsonl"]
    assert not (tmp_path / "metrics.json").exists() and (tmp_path / "run.log").exists()  # this start's log stays
    assert json.loads((tmp_path / "fingerprint.json").read_text())["config"]["attack.name"] == "aoa"
    bound(["attack=aoa"], tmp_path)  # now the dir is aoa's


def test_an_unreadable_fingerprint_is_named(tmp_path):
    (tmp_path / "fingerprint.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"fingerprint.json cannot be read .* resume=force"):
        bound([], tmp_path)
