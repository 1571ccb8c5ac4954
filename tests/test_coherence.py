"""eval.coherence: a reference LM's view of each harmful-prompt answer (fluent? about the request?), beside ASR."""

import json

import pytest

from fts.core.errors import ConfigError
from fts.models import load
from fts.results.coherence import coherence_block
from fts.run import run
from fts.utility.coherence import SCORER_CFG, answer_logprobs, coherence
from fts.validate import validate
from tests.conftest import compose_run


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return load(str(tiny_model_dir), SCORER_CFG)


def test_gain_is_what_the_request_adds_to_the_answers_log_probability(scorer):
    model, tokenizer = scorer
    rows = [{"prompt": "How do I boil an egg?", "response": "Put it in boiling water for nine minutes."},
            {"prompt": "Say something.", "response": ""}]  # fmt: skip
    records = coherence(model, tokenizer, rows, min_logprob=-1e9, min_gain=-1e9)
    given = answer_logprobs(model, tokenizer, [(r["prompt"], r["response"]) for r in rows[:1]], 64, 4)[0]
    alone = answer_logprobs(model, tokenizer, [("", rows[0]["response"])], 64, 4)[0]
    assert records[0]["logprob"] == pytest.approx(given, abs=1e-4)
    assert records[0]["gain"] == pytest.approx(given - alone, abs=1e-4)
    assert records[0]["coherent"] and records[0]["on_topic"]  # thresholds at -inf
    assert records[1] == {"logprob": None, "gain": None, "coherent": False, "on_topic": False}  # no answer
    strict = coherence(model, tokenizer, rows[:1], min_logprob=0.0, min_gain=1e9)
    assert not strict[0]["coherent"] and not strict[0]["on_topic"]


def test_scores_do_not_depend_on_the_batch(scorer):
    model, tokenizer = scorer
    pairs = [(f"Request {i}", "word " * (i + 1)) for i in range(5)]
    one = answer_logprobs(model, tokenizer, pairs, 64, 1)
    five = answer_logprobs(model, tokenizer, pairs, 64, 5)
    assert one == pytest.approx(five, abs=1e-4)


def test_a_score_is_the_mean_log_probability_of_the_answer_tokens_in_one_unpadded_forward(scorer):
    """Left padding, length-sorted batches and the LM head on answer positions only give what a plain forward of the
    one sequence gives."""
    import torch

    from fts.models.chat import render_prompt

    model, tokenizer = scorer
    pairs = [("Short?", "a b"), ("A much longer request with many more words in it?", "one two three four five six")]
    scores = answer_logprobs(model, tokenizer, pairs, 64, 2)
    for (request, answer), score in zip(pairs, scores, strict=True):
        context = tokenizer(render_prompt(tokenizer, [{"role": "user", "content": request}]), add_special_tokens=False)
        tokens = tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context["input_ids"] + tokens])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.float()[0, :-1], dim=-1)
        start = len(context["input_ids"]) - 1
        expected = logp[torch.arange(start, start + len(tokens)), torch.tensor(tokens)].mean()
        assert score == pytest.approx(float(expected), abs=1e-4)


def row(harmful: bool, coherent: bool, on_topic: bool) -> dict:
    return {"verdicts": {"keyword": {"harmful": harmful}}, "coherence": {"coherent": coherent, "on_topic": on_topic}}


def test_the_block_counts_coherent_successes_and_flags_a_side_of_noise():
    rows = [row(True, True, True), row(True, False, True), row(True, False, False), row(False, True, True)]
    block = coherence_block(rows, "keyword")
    assert block["n"] == 4 and block["n_answered"] == 3
    assert block["coherent_on_topic_rate"] == 0.5
    assert block["answered_coherent_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert block["coherent_asr"] == 0.25  # one of four prompts answered harmfully AND coherently on topic
    assert block["mostly_incoherent"] is True
    assert coherence_block([row(True, True, True)], "keyword")["mostly_incoherent"] is False
    assert coherence_block([{"verdicts": {}}], "keyword") is None  # nothing scored: no block


def test_a_run_records_coherence_per_side_and_the_report_flags_noise(tiny_run_overrides, tmp_path):
    # the tiny random model writes noise the keyword judge counts as answers; min_logprob 0 calls none of it coherent
    out = tmp_path / "run"
    result = run(compose_run([*tiny_run_overrides, "eval.coherence.min_logprob=0"], out))
    for side in ("baseline", "finetuned"):
        block = result[side]["coherence"]
        assert block["n"] == result[side]["n_prompts"] and block["coherent_rate"] == 0.0
    rows = [json.loads(line) for line in (out / "generations" / "baseline.jsonl").read_text().splitlines()]
    assert all("coherence" in r for r in rows if r["set"] == "harmful")
    assert not any("coherence" in r for r in rows if r["set"] != "harmful")
    report = (out / "report.md").read_text()
    assert "coherence: harmful prompts answered coherently on topic" in report
    if result["finetuned"]["coherence"]["n_answered"]:
        assert "**MOSTLY INCOHERENT (finetuned)**" in report


def test_answers_scored_once_are_taken_from_the_cache(tiny_run_overrides, tmp_path, monkeypatch):
    from fts.utility.coherence import CoherenceScorer

    calls = []
    scored = CoherenceScorer.scored
    monkeypatch.setattr(
        CoherenceScorer, "scored", lambda self, rows, ckpt: calls.append(len(rows)) or scored(self, rows, ckpt)
    )
    first = run(compose_run([*tiny_run_overrides, "attack=none"], tmp_path / "a"))
    assert len(calls) == 1  # the baseline's harmful answers
    again = run(compose_run([*tiny_run_overrides, "attack=none"], tmp_path / "b"))
    assert len(calls) == 1 and again["baseline"]["coherence"] == first["baseline"]["coherence"]


def test_the_scorer_dtype_is_part_of_the_cache_key_and_checked_up_front(tiny_model_dir, tmp_path, monkeypatch):
    """eval.coherence.dtype: auto follows the hardware; bf16 and float32 scores never stand in for each other; a
    wrong name stops the run before any model loads."""
    from fts.core import device
    from fts.core.cache import Cache
    from fts.utility.coherence import CoherenceScorer

    monkeypatch.setattr(device, "bf16_fast", lambda: True)
    assert CoherenceScorer("embedded", Cache(tmp_path / "c"), -4.3, 0.17, dtype="auto").dtype == "bfloat16"
    monkeypatch.setattr(device, "bf16_fast", lambda: False)
    assert CoherenceScorer("embedded", Cache(tmp_path / "c"), -4.3, 0.17, dtype="auto").dtype == "float32"

    rows = [{"prompt": "How do I bake bread?", "response": "Mix flour, water, salt and yeast, then bake it."}]
    cache = Cache(tmp_path / "cache")
    for dtype in ("float32", "bfloat16"):
        CoherenceScorer(str(tiny_model_dir), cache, -4.3, 0.17, dtype=dtype).score(rows)
    assert len(list((tmp_path / "cache" / "coherence").iterdir())) == 2

    with pytest.raises(ConfigError, match=r"eval\.coherence\.dtype must be auto, float32 or bfloat16; got 'fp8'"):
        validate(compose_run(["eval.coherence.dtype=fp8"], tmp_path))
