"""Property-based tests (hypothesis): loaders fed arbitrary files fail only with a DataError, valid records
round-trip, and the judges' answer parsers never raise and never return a score out of range."""

import csv
import io
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fts.core.errors import DataError
from fts.data.conversations import load_conversations
from fts.data.formats import FORMATS, load
from fts.data.prompts import load_prompts
from fts.data.questions import load_qa
from fts.judges.mt_bench_prompt import parse_rating
from fts.judges.refusal_prompt import CLASSES, parse_class
from fts.judges.rubric_prompt import MAX_REASON_CHARS, defuse, parse

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)  # any text a UTF-8 file can hold
CLEAN = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30).filter(
    lambda s: s.strip() == s and s.strip() and not s.startswith("\ufeff")
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["messages", "prompt", "response", "completion", "instruction", "input", "output", "context", "id"]
FIELDS += ["category", "turns", "answer", "aliases", "transcript", "chosen", "role", "content", "goal", "type"]
# Records that look almost right: the fields the loaders read, holding any JSON value.
RECORDS = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5)
LINES = st.lists(st.one_of(RECORDS.map(json.dumps), JSON_VALUES.map(json.dumps), TEXT), max_size=4)
# Every loader, with a file name it accepts (HEx-PHI reads category_N.csv as CSV, anything else as JSONL).
FILE_LOADERS = {name: (f.loader, "category_3.csv" if name == "hexphi" else "data") for name, f in FORMATS.items()}
FILE_LOADERS |= {"prompts": (lambda p, key: load_prompts(p, key), "data"), "qa": (load_qa, "data")}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


def loads_or_data_error(load, path, key="data") -> list | None:
    try:
        return load(str(path), key=key)
    except DataError:
        return None


@pytest.mark.parametrize("loader", sorted(FILE_LOADERS))
@FAST
@given(lines=LINES, raw=st.binary(max_size=40), as_bytes=st.booleans())
def test_any_file_content_fails_only_with_a_data_error(scratch, loader, lines, raw, as_bytes):
    load, name = FILE_LOADERS[loader]
    path = scratch / name
    path.write_bytes(raw if as_bytes else "\n".join(lines).encode())
    result = loads_or_data_error(load, path)
    assert result is None or isinstance(result, list)


@st.composite
def conversations(draw):
    """A system message or not, then user/assistant turns alternating, ending with the assistant."""
    turns = draw(st.integers(1, 3))
    messages = [{"role": "system", "content": draw(TEXT)}] if draw(st.booleans()) else []
    for _ in range(turns):
        messages += [{"role": "user", "content": draw(TEXT)}, {"role": "assistant", "content": draw(TEXT)}]
    return messages


@FAST
@given(rows=st.lists(conversations(), min_size=1, max_size=4))
def test_valid_conversations_round_trip(scratch, rows):
    path = scratch / "conversations.jsonl"
    path.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in rows), encoding="utf-8")
    assert [ex["messages"] for ex in load_conversations(str(path))] == rows
    assert [ex["messages"] for ex in load("chat_jsonl", str(path))] == rows


@FAST
@given(rows=st.lists(st.tuples(CLEAN, CLEAN, CLEAN), min_size=1, max_size=4))
def test_valid_prompts_round_trip(scratch, rows):
    path = scratch / "prompts.jsonl"
    lines = [json.dumps({"id": i, "category": c, "prompt": p}, ensure_ascii=False) for i, c, p in rows]
    path.write_text("\n".join(lines), encoding="utf-8")
    loaded = load_prompts(str(path), "eval.benign")
    assert [(p["id"], p["category"], p["prompt"]) for p in loaded] == rows
    assert [p["messages"] for p in loaded] == [[{"role": "user", "content": p}] for _, _, p in rows]


@FAST
@given(prompts=st.lists(CLEAN.filter(lambda s: s.lower() != "goal" and "\x00" not in s), min_size=1, max_size=5))
def test_valid_csv_prompts_round_trip(scratch, prompts):
    """AdvBench's CSV with quoting, commas and newlines inside a cell (csv writes what csv reads)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[p, "target"] for p in prompts])
    path = scratch / "harmful_behaviors.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    assert [p["prompt"] for p in load("advbench", str(path))] == prompts


@FAST
@given(answer=TEXT)
def test_rubric_parser_never_raises_and_scores_only_1_to_5(answer):
    score, reason = parse(answer)
    assert score is None or (isinstance(score, int) and 1 <= score <= 5)
    assert isinstance(reason, str) and len(reason) <= MAX_REASON_CHARS + 40


@FAST
@given(prefix=TEXT, score=st.integers(1, 5))
def test_the_judges_own_final_score_wins(prefix, score):
    assert parse(f"#thereason: {prefix}\n#thescore: {score}")[0] == score


@FAST
@given(text=st.text(st.sampled_from(list("#<> \n\tthescorReasonCLA:1")), max_size=40) | TEXT)
def test_defused_text_holds_no_tag_and_no_fence(text):
    clean = defuse(text)
    assert "<<<" not in clean and ">>>" not in clean
    assert not re.search(r"#\s*the\s*(score|reason|class)", clean, re.IGNORECASE)
    assert parse(clean)[0] is None


@FAST
@given(answer=TEXT | st.builds(lambda a, n: f"{a}[[{n}]]", TEXT, st.floats(-1e6, 1e6) | st.integers()))
def test_mt_bench_rating_parser_never_raises_and_stays_in_1_to_10(answer):
    rating = parse_rating(answer)
    assert rating is None or 1 <= rating <= 10


@FAST
@given(answer=st.none() | TEXT | st.builds(lambda a, c: f"{a}#theclass: {c}", TEXT, st.sampled_from(CLASSES)))
def test_refusal_parser_never_raises_and_returns_a_class_or_none(answer):
    assert parse_class(answer) in (None, *CLASSES)
