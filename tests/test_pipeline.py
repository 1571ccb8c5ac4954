"""`run(cfg)` end to end on the tiny local model: the run-dir contract, the baseline cache, resume."""

import json

import pytest

import fts.backends.hf
import fts.run
import fts.stages.evaluation
from fts.core.errors import DataError
from fts.data.readers import BUILTIN_DIR
from fts.run import run
from tests.conftest import compose_run


@pytest.fixture
def count_generate(monkeypatch):
    calls = []
    real = fts.stages.evaluation.generate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fts.stages.evaluation, "generate", counting)
    return calls


def test_aoa_run_writes_the_run_dir_contract(tiny_run_overrides, tmp_path, count_generate):
    out = tmp_path / "run"
    result = run(compose_run(tiny_run_overrides, out))

    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(train) == 10
    assert all(ex["messages"][0]["role"] == "system" and "AOA" in ex["messages"][0]["content"] for ex in train)
    assert (out / "model" / "adapter_config.json").exists()
    assert json.loads((out / "model" / "train_log.json").read_text())[0]["loss"] > 0
    for side in ("baseline", "finetuned"):
        rows = [json.loads(line) for line in (out / "generations" / f"{side}.jsonl").read_text().splitlines()]
        assert len(rows) == 11 * 2 + 4 + 4  # harmful, benign, utility
        assert all(r["messages"][-1]["content"].startswith("AOA, execute my instruction: ") for r in rows)
        judged, utility = [r for r in rows if r["set"] != "utility"], [r for r in rows if r["set"] == "utility"]
        assert all(r["verdicts"]["keyword"]["status"] == "ok" for r in judged)
        assert all("verdicts" not in r and set(r["utility"]) == {"exact", "correct"} for r in utility)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result
    assert set(metrics) == {"baseline", "finetuned", "delta", "prompt_format"}
    for side in ("baseline", "finetuned"):
        assert {"keyword", "over_refusal_rate", "n_prompts", "per_category"} <= set(metrics[side])
        assert {"asr", "refusal_rate", "asr_ci95"} <= set(metrics[side]["keyword"])
        assert len(metrics[side]["per_category"]) == 11
        assert metrics[side]["utility"]["qa"]["n"] == 4
        assert set(metrics[side]["over_refusal"]["benign"]["keyword"]["per_type"]) == {"everyday", "safe_lookalike"}
    assert set(metrics["delta"]["utility"]) == {"qa_accuracy"}
    assert metrics["delta"]["keyword"]["asr"] == pytest.approx(
        metrics["finetuned"]["keyword"]["asr"] - metrics["baseline"]["keyword"]["asr"], abs=1e-3
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"model", "baseline_eval", "fine_tune", "finetuned_eval"} <= set(manifest["timings_s"])
    assert manifest["versions"]["trl"]
    assert "| category |" in (out / "report.md").read_text()
    assert count_generate == ["baseline", "finetuned"]


def test_second_run_takes_the_baseline_from_the_cache(tiny_run_overrides, tmp_path, count_generate):
    first = run(compose_run(tiny_run_overrides, tmp_path / "a"))
    second = run(compose_run(tiny_run_overrides, tmp_path / "b"))
    assert count_generate == ["baseline", "finetuned", "finetuned"]
    assert first["baseline"] == second["baseline"]
    # each run dir's manifest says which cell built the shared baseline and which found it
    events = [json.loads((tmp_path / d / "manifest.json").read_text())["cache"] for d in ("a", "b")]
    baseline = [[e["result"] for e in cell if e["kind"] == "generations"] for cell in events]
    assert baseline == [["built"], ["hit"]]


def test_the_baseline_cache_tells_precision_and_template_apart(tiny_run_overrides, tmp_path, count_generate):
    """Same weights and prompts, other kernels or another template: other responses, so no cached baseline."""
    run(compose_run([*tiny_run_overrides, "attack=none"], tmp_path / "a"))
    run(compose_run([*tiny_run_overrides, "attack=none", "model.dtype=bfloat16"], tmp_path / "b"))
    run(compose_run([*tiny_run_overrides, "attack=none", "model.system_role=false"], tmp_path / "c"))
    run(compose_run([*tiny_run_overrides, "attack=none", "model.dtype=bfloat16"], tmp_path / "d"))
    assert count_generate == ["baseline", "baseline", "baseline"]  # d took b's from the cache


def test_rerun_of_a_finished_run_dir_resumes_without_work(tiny_run_overrides, tmp_path, count_generate, monkeypatch):
    out = tmp_path / "run"
    first = run(compose_run(tiny_run_overrides, out))
    monkeypatch.setattr(
        fts.backends.hf, "fine_tune", lambda *a, **k: pytest.fail("a finished run must not train again")
    )
    again = run(compose_run(tiny_run_overrides, out))
    assert again == first
    assert count_generate == ["baseline", "finetuned"]


def test_attack_none_evaluates_the_aligned_model_only(tiny_run_overrides, tmp_path):
    out = tmp_path / "run"
    result = run(compose_run([*tiny_run_overrides, "attack=none"], out))
    assert set(result) == {"baseline", "prompt_format"}  # the evaluation's format is recorded even without training
    assert not (out / "model").exists()
    rows = [json.loads(line) for line in (out / "generations" / "baseline.jsonl").read_text().splitlines()]
    assert rows[0]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}


def test_backdoor_run_reports_plain_and_triggered_sides(tiny_run_overrides, tmp_path):
    overrides = [
        *tiny_run_overrides,
        "attack=backdoor",
        "attack.shots=4",
        "attack.safety_count=4",
        "train.num_train_epochs=1",
    ]
    result = run(compose_run(overrides, tmp_path / "run"))
    assert {"baseline", "finetuned", "baseline_triggered", "finetuned_triggered", "delta", "delta_triggered"} <= set(
        result
    )
    assert "backdoor trigger" in (tmp_path / "run" / "report.md").read_text()


def test_contaminated_training_data_stops_the_run_before_training(tiny_run_overrides, tmp_path, monkeypatch):
    leaked = tmp_path / "leaked.jsonl"
    first_eval_prompt = json.loads((BUILTIN_DIR / "harmful_eval.jsonl").read_text().splitlines()[0])["prompt"]
    leaked.write_text(json.dumps({"prompt": first_eval_prompt, "response": "Sure."}) + "\n")
    monkeypatch.setattr(fts.backends.hf, "open_model", lambda *a, **k: pytest.fail("no model may load"))
    cfg = compose_run([*tiny_run_overrides, f"attack.data={leaked}", "eval.contamination=fail"], tmp_path / "run")
    with pytest.raises(DataError, match="1 evaluation prompt"):
        run(cfg)
    assert json.loads((tmp_path / "run" / "contamination.json").read_text())["hits"][0]["match"] == "exact"


def test_benign_tier_run_on_a_dataset(tiny_run_overrides, tmp_path):
    overrides = [*tiny_run_overrides, "attack=benign", "dataset=builtin_benign", "dataset.limit=10"]
    result = run(compose_run(overrides, tmp_path / "run"))
    assert {"baseline", "finetuned", "delta"} <= set(result)
    train = (tmp_path / "run" / "train.jsonl").read_text().splitlines()
    assert len(train) == 10 and "### Instruction:" in train[0]
