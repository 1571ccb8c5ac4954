"""judge=openai_moderation: the moderation endpoint on the responses, through the real `openai` client against the
local server (tests/openai_server.py): verdicts, batching, what is sent, the verdict cache, the ledger, metrics."""

import pytest

from fts.core.errors import ConfigError
from fts.judges.api import JudgeError
from fts.judges.moderation import ModerationJudge
from fts.results.metrics import side_metrics
from tests.openai_server import MODERATIONS, fail_fraction


def flag(text: str) -> list[str]:
    """Scripted moderation: 'weapon' is violence, 'steal' illicit."""
    return (["violence"] if "weapon" in text else []) + (["illicit"] if "steal" in text else [])


def make_judge(srv, tmp_path, **kwargs) -> ModerationJudge:
    options = {"base_url": srv.base_url, "api_key_env": "FTS_TEST_NO_KEY", "backoff_s": 0.01, "batch_size": 2}
    return ModerationJudge(**{**options, "cache_dir": str(tmp_path / "cache"), **kwargs})


ROWS = [
    {"prompt": "secret request A", "response": "Here is a weapon plan."},
    {"prompt": "secret request B", "response": "I'm sorry, I can't."},
    {"prompt": "secret request C", "response": "Steal it: take the weapon."},
    {"prompt": "secret request D", "response": "I'm sorry, I can't."},  # the same response: sent once
    {"prompt": "secret request E", "response": "Go steal the car."},
]


def test_flagged_responses_are_harmful_with_their_categories(fake_openai, tmp_path):
    srv = fake_openai(flag=flag)
    judge = make_judge(srv, tmp_path)
    judge.preflight(len(ROWS))
    verdicts = judge.judge(ROWS)
    assert [v["harmful"] for v in verdicts] == [True, False, True, False, True]
    assert [v["categories"] for v in verdicts] == [["violence"], [], ["violence"], [], ["illicit"]]
    assert verdicts[0]["reason"] == "flagged: violence" and verdicts[1]["reason"] == "not flagged"
    assert all(v["status"] == "ok" and v["judge"] == "openai_moderation" for v in verdicts)
    sent = [text for _, _, body in srv.requests for text in body["input"]]
    assert sent == [r["response"] for r in ROWS[:3]] + [ROWS[4]["response"]], "responses only, each once"
    assert srv.count(MODERATIONS) == 2  # 4 distinct responses, 2 per request
    assert judge.usage() | {"usd": 0.0} == judge.usage() and judge.usage()["requests"] == 2

    again = make_judge(srv, tmp_path)
    assert again.judge(ROWS) == verdicts and srv.count(MODERATIONS) == 2, "a rerun is served from the verdict cache"
    assert again.usage()["cached"] == 5 and again.usage()["requests"] == 0


def test_retries_are_counted_and_a_lost_endpoint_keeps_the_verdicts_so_far(fake_openai, tmp_path):
    srv = fake_openai(flag=flag, failure=fail_fraction(0.5))
    judge = make_judge(srv, tmp_path)
    assert [v["harmful"] for v in judge.judge(ROWS)] == [True, False, True, False, True]
    assert judge.usage()["retries"] >= 1 and judge.usage()["requests"] == 2
    flaky = fake_openai(flag=flag, failure=lambda n: 500 if n in (2, 3) else None)  # the 2nd batch, and its retry
    broken = make_judge(flaky, tmp_path / "other", max_retries=1)
    with pytest.raises(JudgeError, match=r"judge\.openai_moderation: moderation request failed after 2 attempt"):
        broken.judge(ROWS)
    resumed = make_judge(flaky, tmp_path / "other")
    resumed.judge(ROWS)
    assert resumed.usage()["cached"] == 3, "the first batch's verdicts were kept (rows 1, 2 and 4: 2 responses)"
    assert resumed.usage()["requests"] == 1


def test_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"judge\.openai_moderation\.batch_size must be a positive integer"):
        ModerationJudge(batch_size=0).check()
    with pytest.raises(ConfigError, match=r"judge\.openai_moderation: no API key\. Set FTS_TEST_NO_KEY"):
        ModerationJudge(api_key_env="FTS_TEST_NO_KEY").preflight(1)


def test_flagged_rate_per_category():
    verdicts = [["violence"], [], ["violence", "illicit"], []]
    rows = [
        {
            "set": "harmful",
            "category": "c",
            "verdicts": {"m": {"status": "ok", "score": None, "harmful": bool(v), "categories": v}},
        }  # fmt: skip
        for v in verdicts
    ]
    metrics = side_metrics(rows, ["m"])["m"]
    assert metrics["flagged_rate_per_category"] == {"illicit": 0.25, "violence": 0.5}
    assert metrics["asr"] == 0.5 and "harmfulness_rate" not in metrics


def test_a_run_with_keyword_and_moderation_judges(fake_openai, tiny_run_overrides, tmp_path):
    from fts.run import run
    from tests.conftest import compose_run

    srv = fake_openai(flag=lambda text: ["violence"] if len(text) % 2 else [])
    overrides = [*tiny_run_overrides, "judge=[keyword,openai_moderation]"]
    overrides += [f"judge.openai_moderation.base_url={srv.base_url}", "eval.max_per_category=1", "eval.max_utility=0"]
    result = run(compose_run(overrides, tmp_path / "run"))
    for side in ("baseline", "finetuned"):
        metrics = result[side]["openai_moderation"]
        assert metrics["flagged_rate_per_category"].keys() <= {"violence"} and "asr" in metrics
        assert set(result[side]["agreement"]) == {"keyword~openai_moderation"}
    assert result["judge_usage"]["openai_moderation"]["usd"] == 0.0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "openai_moderation: flagged rate (responses to harmful prompts flagged)" in report
    assert "| keyword ~ openai_moderation |" in report
