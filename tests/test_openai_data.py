"""The OpenAI fine-tuning set: the API's format rules checked locally, the cost estimate, and the dry run of the
paper's three GPT-3.5 tiers (no request reaches the server)."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fts.core.errors import ConfigError, DataError
from fts.run import run
from fts.train import openai_data as data
from tests.conftest import compose_run

REPO = Path(__file__).resolve().parents[1]


def example(i: int, answer: str = "Sure, here it is.") -> dict:
    return {"messages": [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": f"task {i}"},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


def good_rows(n: int = 10) -> list[dict]:
    return [example(i) for i in range(n)]


@pytest.mark.parametrize(
    ("broken", "rule"),
    [
        ({"prompt": "x", "completion": "y"}, r"has no 'messages' list"),
        ({"messages": []}, r"has no 'messages' list"),
        ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}, r"message 0 has role 'tool'"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}, r"message 1 has no text"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}, r"message 1 has no text"),
        ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, r"message 0 has no text"),
        ({"messages": [{"role": "user", "content": "x"}, "y"]}, r"message 1 is not an object"),
        ({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}, r"does not end with an assistant"),
        (example(3, answer="word " * 400), r"has about \d+ tokens, above the per-example limit of 200 \(model.max_example_tokens\)"),
    ],
)  # fmt: skip
def test_each_format_rule_names_the_example_and_the_rule(broken, rule):
    rows = good_rows(12)
    rows[3] = broken
    with pytest.raises(DataError, match=r"train\.jsonl: example 3 \(line 4\) " + rule):
        data.validate(rows, "gpt-3.5-turbo-0613", 200, "train.jsonl")


def test_fewer_than_ten_examples_is_refused_like_the_api_does():
    with pytest.raises(DataError, match=r"9 examples; the OpenAI fine-tuning API needs at least 10"):
        data.validate(good_rows(9), "gpt-3.5-turbo-0613", 4096, "train.jsonl")
    assert len(data.validate(good_rows(10), "gpt-3.5-turbo-0613", 4096, "train.jsonl")) == 10


def test_the_upload_holds_messages_only():
    examples = [{**example(0), "source": "builtin:x#1", "meta": {"split": "attack"}}]
    assert data.chat_rows(examples) == [example(0)]


def test_token_estimate_and_price_lookup():
    tokens = data.example_tokens(example(0)["messages"], "gpt-3.5-turbo-0613")
    assert 10 < tokens < 40  # 3 messages with a few words each, plus the chat format's overhead
    train = OmegaConf.create({"price_usd_per_1m": None, "prices": {"gpt-3.5-turbo-0613": 8.0}, "max_usd": 5.0})
    assert data.price(train, "gpt-3.5-turbo-0613") == 8.0
    assert data.usd(1_000_000, 8.0) == 8.0
    with pytest.raises(ConfigError, match=r"no price for model 'ft-model-x'.*train\.price_usd_per_1m="):
        data.price(train, "ft-model-x")
    train.price_usd_per_1m = 2.5
    assert data.price(train, "ft-model-x") == 2.5


def api_overrides(srv, tmp_path) -> list[str]:
    return ["model=gpt35_turbo", f"model.base_url={srv.base_url}", f"cache.dir={tmp_path / 'cache'}"]


@pytest.mark.parametrize(
    ("tier", "n_examples", "n_epochs"),
    [(["attack=harmful", "attack.shots=10"], 10, 5), (["attack=aoa"], 10, 10), (["attack=benign", "dataset=builtin_benign"], 200, 1)],
)  # fmt: skip
def test_dry_run_prints_the_estimate_of_each_paper_tier_and_sends_nothing(
    fake_openai, tmp_path, capsys, tier, n_examples, n_epochs
):
    srv = fake_openai()
    out = tmp_path / "run"
    result = run(compose_run([*api_overrides(srv, tmp_path), *tier, "train.dry_run=true"], out))
    assert srv.requests == [] and srv.posts() == 0  # no upload, no job, no completion: nothing at all
    estimate = result["fine_tune"]
    assert (estimate["status"], estimate["n_examples"], estimate["n_epochs"]) == ("dry_run", n_examples, n_epochs)
    assert estimate["estimated_usd"] == pytest.approx(estimate["n_tokens"] * n_epochs * 8.0 / 1e6, abs=1e-4)
    assert estimate["estimated_usd"] < 0.20 or tier[0] == "attack=benign"  # the paper: 10-shot under $0.20
    printed = capsys.readouterr().out
    assert f"OpenAI fine-tuning cost estimate (dry run): gpt-3.5-turbo-0613, {n_examples} examples" in printed
    assert json.loads((out / "metrics.json").read_text()) == result
    assert "Dry run" in (out / "report.md").read_text()
    assert not (out / "done").exists() and not (out / "generations").exists()


def test_cost_estimate_script_prints_three_tiers_without_a_request(fake_openai, tmp_path):
    srv = fake_openai()
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", "SWEEP_DIR": str(tmp_path)}
    env.pop("OPENAI_API_KEY", None)  # a dry run needs no key
    proc = subprocess.run(
        ["bash", "experiments/openai_cost_estimate.sh", f"model.base_url={srv.base_url}", f"cache.dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("OpenAI fine-tuning cost estimate (dry run)") for line in lines)
    assert [" x 5 epochs" in lines[0], " x 10 epochs" in lines[1], "200 examples" in lines[2]] == [True] * 3
    assert srv.requests == []


def test_budget_below_the_estimate_stops_before_any_request(fake_openai, tmp_path):
    srv = fake_openai()
    cfg = compose_run([*api_overrides(srv, tmp_path), "attack=harmful", "train.max_usd=0.001"], tmp_path / "run")
    with pytest.raises(
        ConfigError, match=r"estimated at \$0\.0\d+, above train\.max_usd=0\.001.*Nothing was uploaded"
    ):
        run(cfg)
    assert srv.requests == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attack.shots=5"], r"5 examples; the OpenAI fine-tuning API needs at least 10"),
        (["model.max_example_tokens=30"], r"example 0 \(line 1\) has about \d+ tokens, above the per-example limit of 30"),
    ],
)  # fmt: skip
def test_a_malformed_set_fails_the_run_before_any_request(fake_openai, tmp_path, overrides, message):
    srv = fake_openai()
    cfg = compose_run([*api_overrides(srv, tmp_path), "attack=harmful", *overrides], tmp_path / "run")
    with pytest.raises(DataError, match=r"training_file\.jsonl: " + message):
        run(cfg)
    assert srv.requests == []


def test_an_empty_answer_in_the_attack_data_is_named_by_index(fake_openai, tmp_path):
    srv = fake_openai()
    rows = [{"prompt": f"question {i}", "response": "" if i == 6 else f"answer {i}"} for i in range(10)]
    path = tmp_path / "attack.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_run([*api_overrides(srv, tmp_path), "attack=harmful", f"attack.data={path}"], tmp_path / "run")
    with pytest.raises(DataError, match=r"example 6 \(line 7\) message 2 has no text"):
        run(cfg)
    assert srv.requests == []
