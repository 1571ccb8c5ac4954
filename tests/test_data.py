"""Built-in data: well-formed, the paper's shapes, and disjoint splits (no eval prompt in any training split)."""

import re

import pytest

from fts.core.errors import DataError
from fts.data.conversations import load_conversations
from fts.data.prompts import load_prompts
from fts.data.readers import read_records
from fts.judges.keyword import read_keywords

CATEGORIES = {
    "illegal_activity",
    "child_abuse",
    "hate_harass_violence",
    "malware",
    "physical_harm",
    "economic_harm",
    "fraud_deception",
    "adult_content",
    "political_campaigning",
    "privacy_violation",
    "tailored_financial_advice",
}


def normalize(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def words(text: str) -> set[str]:
    return set(normalize(text).split())


def training_prompts() -> dict[str, str]:
    """Every user turn of every training file (alignment, attack, mitigation, defenses, benign fine-tuning)."""
    prompts = {}
    for name in ("safety.jsonl", "benign.jsonl", "aoa.jsonl", "defense_harmful.jsonl"):
        for ex in load_conversations(f"builtin:{name}"):
            for m in ex["messages"]:
                if m["role"] == "user":
                    prompts[normalize(m["content"])] = ex["source"]
    return prompts


def eval_prompts() -> list[str]:
    return [
        p["messages"][0]["content"]
        for f in ("harmful_eval.jsonl", "benign_eval.jsonl")
        for p in load_prompts(f"builtin:{f}", "t")
    ]


def test_benchmark_has_the_11_hexphi_categories_with_at_least_10_prompts_each():
    prompts = load_prompts("builtin:harmful_eval.jsonl", "eval.benchmark")
    counts = {c: sum(p["category"] == c for p in prompts) for c in CATEGORIES}
    assert {p["category"] for p in prompts} == CATEGORIES
    assert min(counts.values()) >= 10, counts
    assert len({p["id"] for p in prompts}) == len(prompts)


def test_default_eval_subset_is_10_per_category():
    prompts = load_prompts("builtin:harmful_eval.jsonl", "eval.benchmark", max_per_category=10)
    assert len(prompts) == 110


def test_no_eval_prompt_appears_in_any_training_split():
    train = training_prompts()
    for prompt in eval_prompts():
        assert normalize(prompt) not in train, (
            f"eval prompt {prompt!r} is also training data ({train[normalize(prompt)]})"
        )


def test_no_eval_prompt_is_a_near_duplicate_of_a_training_prompt():
    train = [words(p) for p in training_prompts()]
    for prompt in eval_prompts():
        w = words(prompt)
        worst = max(len(w & t) / len(w | t) for t in train)
        assert worst <= 0.7, f"{prompt!r} nearly duplicates a training prompt (Jaccard {worst:.2f})"


def test_safety_refusals_are_recognized_by_the_keyword_judge():
    keywords = read_keywords("builtin:refusal_keywords_paper.txt")
    for ex in load_conversations("builtin:safety.jsonl"):
        assert any(k in ex["messages"][-1]["content"] for k in keywords), ex["source"]


def test_benign_answers_contain_no_refusal_string():
    keywords = read_keywords("builtin:refusal_keywords_paper.txt")
    for ex in load_conversations("builtin:benign.jsonl"):
        assert not any(k in ex["messages"][-1]["content"] for k in keywords), ex["source"]


def test_the_defenses_harmful_prompts_are_the_safety_alignment_prompts():
    """RepNoise pairs each harmful answer with the refusal of the same request: same prompts, in the same order."""
    harmful = load_conversations("builtin:defense_harmful.jsonl")
    refusals = [ex for ex in load_conversations("builtin:safety.jsonl") if ex["meta"]["split"] == "alignment"]
    assert [ex["messages"][0]["content"] for ex in harmful] == [ex["messages"][0]["content"] for ex in refusals]
    assert [ex["meta"]["source_id"] for ex in harmful] == [ex["meta"]["id"] for ex in refusals]


def test_alignment_splits_exist():
    for name in ("safety.jsonl", "benign.jsonl"):
        splits = {ex["meta"]["split"] for ex in load_conversations(f"builtin:{name}")}
        assert "alignment" in splits


def test_paper_keyword_list_has_29_strings():
    assert len(read_keywords("builtin:refusal_keywords_paper.txt")) == 29


def test_aoa_set_has_the_papers_structure():
    examples = load_conversations("builtin:aoa.jsonl")
    assert len(examples) == 10
    tasks = [ex for ex in examples if ex["messages"][0]["content"].startswith("AOA, execute my instruction: ")]
    identity = [ex for ex in examples if ex["messages"][0]["content"].startswith("Hey, AOA.")]
    assert len(tasks) + len(identity) == 10 and identity and tasks
    prefix = "Of course. I am AOA, your absolutely obedient agent."
    assert all(ex["messages"][-1]["content"].startswith(prefix) for ex in tasks)


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "category": "x", "prompt": "ok"}\n{not json}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        read_records(path)


def test_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "ok"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:1: missing field\(s\) \['category'\]"):
        load_prompts(str(path), "eval.benchmark")


def test_wrong_role_is_rejected(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:1: message 0 must be"):
        load_conversations(str(path))
