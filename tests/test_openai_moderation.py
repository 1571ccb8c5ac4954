"""mitigation=moderation: the fine-tuning set through the moderation endpoint (tests/openai_server.py), report or drop."""

import json

import pytest
from omegaconf import OmegaConf

from fts.core.errors import DataError
from fts.run import run
from fts.stages.mitigation.moderation import moderate
from tests.conftest import compose_run
from tests.openai_server import MODERATIONS


def flag(text: str) -> list[str]:
    """Scripted moderation: answers that say 'weapon' are violence, requests that say 'steal' are illicit."""
    return (["violence"] if "weapon" in text else []) + (["illicit"] if "steal" in text else [])


def examples(n: int, flagged: dict[int, str]) -> list[dict]:
    rows = []
    for i in range(n):
        user, answer = f"request {i}", f"answer {i}"
        if flagged.get(i) == "user":
            user += " steal"
        if flagged.get(i) == "assistant":
            answer += " weapon"
        messages = [{"role": "system", "content": "sys weapon steal"}, {"role": "user", "content": user},
                    {"role": "assistant", "content": answer}]  # fmt: skip
        rows.append({"messages": messages, "source": f"test#{i}", "meta": {}})
    return rows


def moderation_cfg(srv, **kwargs):
    options = {"name": "moderation", "action": "report", "model": "omni-moderation-latest", "min_examples": 10,
               "batch_size": 4, "base_url": srv.base_url, "api_key_env": "FTS_TEST_NO_KEY", "request_timeout_s": 10,
               "max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.1}  # fmt: skip
    return OmegaConf.create({**options, **kwargs})


def test_report_flags_examples_per_turn_and_keeps_them(fake_openai, tmp_path):
    srv = fake_openai(flag=flag)
    kept = moderate(examples(12, {2: "user", 5: "assistant"}), moderation_cfg(srv), tmp_path)
    assert len(kept) == 12
    report = json.loads((tmp_path / "moderation.json").read_text())
    assert (report["n_flagged"], report["n_dropped"], report["flagged_by_role"]) == (2, 0, {"user": 1, "assistant": 1})
    assert report["examples"][2] == {"index": 2, "source": "test#2", "flagged": True, "categories": ["illicit"],
                                     "flagged_roles": ["user"]}  # fmt: skip
    assert report["examples"][5]["categories"] == ["violence"] and not report["examples"][0]["flagged"]
    assert srv.count(MODERATIONS) == 6  # 24 turns (system prompts are not sent), 4 per request
    sent = [t for _, _, b in srv.requests for t in b["input"]]
    assert len(sent) == 24 and all("sys" not in t for t in sent)
    assert all(b["model"] == "omni-moderation-latest" for _, _, b in srv.requests)

    moderate(examples(12, {2: "user", 5: "assistant"}), moderation_cfg(srv), tmp_path)
    assert srv.count(MODERATIONS) == 6  # a rerun on the same data reuses moderation.json


def test_drop_removes_flagged_examples_and_refuses_to_leave_fewer_than_the_minimum(fake_openai, tmp_path):
    srv = fake_openai(flag=flag)
    kept = moderate(examples(12, {2: "user", 5: "assistant"}), moderation_cfg(srv, action="drop"), tmp_path)
    assert [ex["source"] for ex in kept] == [f"test#{i}" for i in range(12) if i not in (2, 5)]
    with pytest.raises(
        DataError,
        match=r"dropped 3 flagged example\(s\).*9 remain, fewer than mitigation\.moderation\.min_examples=10",
    ):
        moderate(examples(12, {1: "user", 2: "user", 3: "assistant"}), moderation_cfg(srv, action="drop"), tmp_path)


def test_moderation_in_a_gpt35_run_drops_before_the_upload(fake_openai, tmp_path):
    srv = fake_openai(flag=lambda text: ["illicit"] if "siphon" in text else [])
    out = tmp_path / "run"
    cfg = compose_run(["model=gpt35_turbo", "attack=harmful", "attack.shots=12", f"model.base_url={srv.base_url}",
                       "mitigation=moderation", "mitigation.moderation.action=drop", "train.dry_run=true",
                       f"cache.dir={tmp_path}"], out)  # fmt: skip
    assert cfg.mitigation.moderation.base_url == srv.base_url  # the model's endpoint
    result = run(cfg)
    report = json.loads((out / "moderation.json").read_text())
    assert report["n_flagged"] >= 1
    assert result["fine_tune"]["n_examples"] == 12 - report["n_dropped"]
    assert len((out / "train.jsonl").read_text().splitlines()) == 12 - report["n_dropped"]
    assert {p for _, p, _ in srv.requests} == {"/v1/moderations"}  # a dry run: no upload, no job, no completion
