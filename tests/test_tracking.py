"""W&B tracking, offline: what a run logs is read back from the files W&B writes, and no secret reaches them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fts.core.secrets import is_secret_name, scrub
from fts.results.tracking import Tracker, WandbTracker
from tests.conftest import compose_run
from tests.test_report import fake_metrics, fake_side

PLANTED = "sk-test-PLANTED"


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """Offline W&B, no key, nothing written outside tmp_path (config, cache, artifact staging), no git probing."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))


# wandb-core writes the log in the background and may still be flushing it when `finish()` returns (seen on the
# first run of a process); W&B's own reader follows the file until the exit record, and never yields a half record.
IDLE_TIMEOUT_S = 30


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of the one offline run under <run_dir>/wandb/, as decoded by W&B's own transaction-log reader
    (`wandb leet inspect`, wandb-core's), once the run's exit record is written."""
    (log,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    follow = ["--json", "--follow", "--idle-timeout", f"{IDLE_TIMEOUT_S}s", str(log)]
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", *follow]
    # The idle timeout bounds a log that stops growing; the hard timeout bounds one that never stops.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=IDLE_TIMEOUT_S * 4)
    assert done.returncode == 0, f"wandb leet inspect {log} failed: {done.stderr}"
    found = [json.loads(line) for line in done.stdout.splitlines()]
    ends = found[-1]["type"] if found else "no record"
    assert ends == "exit", f"{log} has no exit record ({ends} last) after {IDLE_TIMEOUT_S}s idle: {done.stderr}"
    return found


def read_offline_run(run_dir: Path) -> dict:
    """Run record, config, merged summary and history of the one offline run under <run_dir>/wandb/."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    out = {"dir": offline, "run": None, "config": {}, "summary": {}, "history": [], "records": wandb_records(run_dir)}
    for record in out["records"]:
        kind, body = record["type"], record.get(record["type"], {})
        if kind == "run":
            out["run"] = body
            out["config"] |= body.get("config", {}).get("update", {})
        elif kind in ("config", "summary"):
            out[kind] |= body.get("update", {})
        elif kind == "history":
            out["history"].append(body.get("item", {}))
    return out


def fake_sides() -> dict[str, list[dict]]:
    return {
        "baseline": fake_side(0.1, 0.05, seed=1, rubric=True),
        "finetuned": fake_side(0.8, 0.1, seed=2, rubric=True),
    }


def test_wandb_run_holds_config_summary_table_and_chart(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = compose_run(["logger=wandb", "attack=harmful", "seed=3"], run_dir)
    sides = fake_sides()
    metrics = fake_metrics(sides)
    tracker = Tracker.from_config(cfg.logger, cfg, run_dir)
    assert isinstance(tracker, WandbTracker) and tracker.report_to() == ["wandb"]
    tracker.log_result(metrics, sides)
    capsys.readouterr()
    tracker.finish()
    tracker.finish()  # run.py's finally may call it again
    # The upload hint of the first lines has scrolled away by the end of a run: it is the run's last line, once.
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("fts: W&B run smollm2_135m_safe-harmful-lora-none-s3 (offline; ")
    assert f"upload it with `wandb sync {run_dir}/wandb/offline-run-" in said[0]

    logged = read_offline_run(run_dir)
    run = logged["run"]
    assert (run["project"], run["run_group"], run["job_type"]) == ("fts", "run", "finetune_eval")
    assert run["display_name"] == "smollm2_135m_safe-harmful-lora-none-s3"
    assert logged["config"]["attack"]["name"] == "harmful" and logged["config"]["seed"] == 3
    assert logged["config"]["choices"]["attack"] == "harmful" and "hydra" not in logged["config"]

    summary = logged["summary"]
    assert summary["finetuned/keyword/asr"] == metrics["finetuned"]["keyword"]["asr"]
    assert summary["baseline/over_refusal_rate"] == metrics["baseline"]["over_refusal_rate"]
    assert summary["delta/keyword/asr"] == metrics["delta"]["keyword"]["asr"]
    assert summary["finetuned/keyword/asr_ci95_lo"] == metrics["finetuned"]["keyword"]["asr_ci95"][0]
    assert summary["finetuned/gpt4/harmfulness_score"] == metrics["finetuned"]["gpt4"]["harmfulness_score"]
    assert (
        summary["finetuned/per_category/malware/keyword/asr"]
        == (metrics["finetuned"]["per_category"]["malware"]["keyword"]["asr"])
    )

    (table_file,) = (logged["dir"] / "files" / "media" / "table").glob("generations_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:6] == ["side", "id", "category", "set", "prompt", "response"]
    judged = [f"{j}_{f}" for j in ("keyword", "gpt4") for f in ("harmful", "score", "status")]
    assert table["columns"][6:] == [*judged, "utility_correct"]
    assert len(table["data"]) == sum(len(rows) for rows in sides.values())
    first = sides["finetuned"][0]
    row = next(r for r in table["data"] if r[0] == "finetuned" and r[1] == first["id"])
    assert row[2:6] == [first["category"], "harmful", first["prompt"], first["response"]]
    assert row[6:9] == [first["verdicts"]["keyword"]["harmful"], None, "ok"]
    assert list((logged["dir"] / "files" / "media" / "table").glob("per_category_*.table.json"))
    (chart,) = (logged["dir"] / "files" / "media" / "images").glob("per_category_chart_*.png")
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_no_secret_reaches_the_wandb_files(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setattr(sys, "argv", ["fts.run", "logger=wandb", f"+judge.x.api_key={PLANTED}"])
    run_dir = tmp_path / "run"
    overrides = ["logger=wandb", f"+judge.x.api_key={PLANTED}", f"+eval.note=key is {PLANTED}", "+judge.x.model=m"]
    cfg = compose_run(overrides, run_dir)
    with Tracker.from_config(cfg.logger, cfg, run_dir) as tracker:
        tracker.log_result(fake_metrics(fake_sides()), fake_sides())
    logged = read_offline_run(run_dir)
    assert logged["records"][-1]["type"] == "exit"
    files = [p for p in (run_dir / "wandb").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    assert [p for p in files if PLANTED.encode() in p.read_bytes()] == []
    config = logged["config"]
    assert config["judge"]["x"] == {"model": "m"}
    assert config["eval"]["max_new_tokens"] == cfg.eval.max_new_tokens  # "token" in a name is not a secret
    assert config["judge"]["keyword"]["keywords"]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("OPENAI_API_KEY", True),
        ("hf_token", True),
        ("apiKey", True),
        ("client_secret", True),
        ("db_password", True),
        ("max_new_tokens", False),
        ("keywords", False),
        ("pad_token_id", False),
        ("tokenizer", False),
    ],
)
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_scrub_drops_secret_keys_and_key_shaped_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "plain-looking-value-123")
    config = {
        "a": {"api_key": "x", "url": "https://h/?k=sk-abcdef123456", "n": 1},
        "b": ["ok", "plain-looking-value-123"],
    }
    assert scrub(config) == {"a": {"n": 1}, "b": ["ok"]}


def test_logger_none_and_disabled_are_no_ops(tmp_path):
    for overrides in (["logger=none"], ["logger=wandb", "logger.mode=disabled"]):
        run_dir = tmp_path / overrides[-1]
        cfg = compose_run(overrides, run_dir)
        tracker = Tracker.from_config(cfg.logger, cfg, run_dir)
        assert type(tracker) is Tracker and tracker.report_to() == []
        tracker.log_result({"baseline": {}}, {})
        tracker.finish()
        assert not (run_dir / "wandb").exists()


def test_jobs_of_one_process_get_one_run_each(tmp_path):
    """The basic launcher runs multirun jobs in one process: each job's tracker is its own W&B run, even when an
    earlier job could not finish its run."""
    ids = []
    for num, attack in enumerate(("harmful", "aoa")):
        run_dir = tmp_path / str(num)
        cfg = compose_run(["logger=wandb", f"attack={attack}"], run_dir)
        tracker = Tracker.from_config(cfg.logger, cfg, run_dir)
        ids.append(tracker.run.id)
        tracker.log_result(fake_metrics(fake_sides()), fake_sides())
        if num == 1:
            tracker.finish()
    assert ids[0] != ids[1]
    names = [read_offline_run(tmp_path / str(num))["run"]["display_name"] for num in (0, 1)]
    assert names == ["smollm2_135m_safe-harmful-lora-none-s0", "smollm2_135m_safe-aoa-lora-none-s0"]


def test_a_whole_run_with_logger_wandb_writes_metrics_table_and_training_curves(tiny_run_overrides, tmp_path):
    from fts.run import run
    from tests.conftest import compose_run

    out = tmp_path / "run"
    result = run(compose_run([*tiny_run_overrides, "logger=wandb"], out))
    logged = read_offline_run(out)
    assert logged["summary"]["finetuned/keyword/asr"] == result["finetuned"]["keyword"]["asr"]
    assert logged["summary"]["delta/keyword/asr"] == result["delta"]["keyword"]["asr"]
    history_keys = {key for item in logged["history"] for key in item}
    assert "train/loss" in history_keys, "TRL's training curve must land in the same W&B run"
    tables = list(logged["dir"].glob("files/media/table/generations*.table.json"))
    assert tables, "the generations table is in the offline run files"
    rows = json.loads(tables[0].read_text())["data"]
    assert len(rows) == 2 * (11 * 2 + 4 + 4)  # baseline + finetuned: 22 harmful, 4 benign, 4 utility each
