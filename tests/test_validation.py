"""Validation before anything heavy: numeric keys, cross-field rules and data files, every problem at once, each
naming the key (or file and line) and the fix."""

import json

import pytest

import fts.backends.hf
import fts.run
import fts.stages.evaluation
from fts.core.errors import ConfigError, DataError
from fts.data.conversations import load_conversations
from fts.data.prompts import load_prompts
from fts.run import run
from fts.train.hf import fit_lengths
from fts.validate import validate
from tests.conftest import compose_run


def problems(overrides: list[str], tmp_path) -> str:
    with pytest.raises(ConfigError) as err:
        validate(compose_run(overrides, tmp_path))
    return str(err.value)


def test_numeric_keys_are_type_and_range_checked_all_at_once(tmp_path):
    message = problems(
        [
            "seed=-3",
            "eval.max_per_category=0",
            "eval.max_benign=-1",
            "eval.max_new_tokens=100000",
            "train.num_train_epochs=0",
            "train.max_steps=0",
            "train.gradient_accumulation_steps=1.5",
            "attack.shots=0",
            "train.too_long=truncate",
            "eval.dtype=fp8",
        ],
        tmp_path,
    )
    assert "10 problem(s)" in message
    for expected in (
        "seed must be an integer >= 0, got -3.",
        "eval.max_per_category must be null or a positive integer, got 0.",
        "eval.max_benign must be null or an integer >= 0, got -1.",
        "eval.max_new_tokens must be an integer in [1, 32768], got 100000.",
        "train.num_train_epochs must be a positive number, got 0.",
        "train.max_steps must be -1 (use the epochs) or a positive integer, got 0.",
        "train.gradient_accumulation_steps must be a positive integer, got 1.5.",
        "attack.shots must be null or a positive integer, got 0.",
        "train.too_long must be warn, drop or fail, got 'truncate'.",
        "eval.dtype must be auto, float32, bfloat16, float16; got 'fp8'.",
    ):
        assert expected in message


def test_a_mistyped_number_is_named(tmp_path):
    message = problems(["eval.max_per_category=ten", "seed=true"], tmp_path)
    assert "eval.max_per_category must be null or a positive integer, got 'ten'." in message
    assert "seed must be an integer >= 0, got True." in message


def test_safety_mix_ratio_is_a_fraction_below_one(tmp_path):
    message = problems(
        ["mitigation=safety_mix", "mitigation.safety_mix.ratio=1.5", "mitigation.safety_mix.count=-2"], tmp_path
    )
    assert "mitigation.safety_mix.ratio must be null or a number in [0, 1), got 1.5." in message
    assert "mitigation.safety_mix.count must be null or an integer >= 0, got -2." in message
    message = problems(["mitigation=safety_mix", "mitigation.safety_mix.ratio=null"], tmp_path)
    assert "mitigation=safety_mix needs mitigation.safety_mix.ratio (in [0, 1)) or .count." in message


def test_the_utility_floor_is_a_fraction_of_questions_that_are_asked(tmp_path):
    message = problems(["eval.min_utility=1.5"], tmp_path)
    assert "eval.min_utility must be null or a number in [0, 1], got 1.5." in message
    message = problems(["eval.min_utility=0.3", "eval.utility=null"], tmp_path)
    off = "eval.min_utility=0.3 is a floor for QA accuracy, but the QA questions are off (eval.utility=null, eval."
    assert off + "max_utility=null)" in message
    message = problems(["eval.min_utility=0.3", "eval.max_utility=0"], tmp_path)
    assert "eval.max_utility=0): set eval.utility=builtin:utility_eval.jsonl" in message
    validate(compose_run(["eval.min_utility=0.3"], tmp_path))  # with the built-in questions: fine


def test_backdoor_needs_a_trigger(tmp_path):
    message = problems(["attack=backdoor", "attack.trigger=' '", "attack.safety_count=-1"], tmp_path)
    assert "attack.trigger is empty: the backdoor needs a trigger phrase" in message
    assert "attack.safety_count must be an integer >= 0, got -1." in message


def write(tmp_path, text: str | bytes, name: str = "data.jsonl"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


OK = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"messages": []}', "field 'messages' must be a non-empty list"),
        ('{"messages": "hello"}', "field 'messages' must be a non-empty list"),
        ("[1, 2]", "message 0 must be {'role'"),  # a bare list is a conversation (the Llama-2 AOA file's shape)
        ('{"messages": [{"role": "bot", "content": "x"}]}', "message 0 must be {'role': one of"),
        ('{"messages": [{"role": "user", "content": 7}]}', "message 0 must be {'role': one of"),
        (
            '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}',
            "roles assistant -> user: expected an optional system message first, then user and assistant turns",
        ),
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]}',
            "roles user -> system",
        ),
        ('{"messages": [{"role": "user", "content": "q"}]}', "the last message must be the assistant answer"),
        ('{"prompt": 5, "response": "x"}', "field 'prompt' must be a string; got int"),
        ('{"prompt": "q"}', "needs either 'messages' or 'prompt' and 'response'"),
        ('{"messages": [', "not valid JSON"),
    ],
)
def test_a_bad_training_line_is_named_by_file_and_line(tmp_path, line, expected):
    path = write(tmp_path, f"{OK}\n\n{line}\n")  # a blank line in between: line numbers count it
    with pytest.raises(DataError, match=rf"^{path}:3: ") as err:
        load_conversations(str(path))
    assert expected in str(err.value)


def test_non_utf8_and_empty_files(tmp_path):
    path = write(tmp_path, OK.encode() + b"\n" + b'{"prompt": "caf\xe9", "response": "x"}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: not valid UTF-8 .*Re-save the file as UTF-8"):
        load_conversations(str(path))
    with pytest.raises(DataError, match="the file has no records"):
        load_conversations(str(write(tmp_path, "\n\n", "empty.jsonl")))


def test_a_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    text = "first\u2028second\x0cthird"
    row = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "a"}]}
    path = write(tmp_path, json.dumps(row, ensure_ascii=False) + "\n")
    assert load_conversations(str(path))[0]["messages"][0]["content"] == text


def test_prompt_fields_must_be_text(tmp_path):
    path = write(tmp_path, '{"id": 1, "category": "c", "prompt": "p"}\n')
    with pytest.raises(DataError, match=rf"^{path}:1: field 'id' must be a string; got int"):
        load_prompts(str(path), "eval.benign")


def test_a_format_of_the_wrong_kind_for_its_key_is_named(tmp_path):
    message = problems(["attack.format=hexphi", "eval.benchmark_format=alpaca"], tmp_path)
    assert "attack.format=hexphi gives prompts, but attack.data takes examples: choose one of [" in message
    assert "eval.benchmark_format=alpaca gives examples, but eval.benchmark takes prompts: choose one of [" in message
    assert "'fts_conversations'" in message and "'hexphi'" in message


class CharTokenizer:
    """One token per character (enough to test the length policy)."""

    eos_token = "</s>"
    chat_template = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **kwargs):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "</s>")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


def examples(*answers: str) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}], "source": f"s#{i}"}
        for i, a in enumerate(answers)
    ]


def test_over_long_examples_are_reported_dropped_or_fatal():
    data = examples("short", "x" * 100, "y" * 200)
    kept, n = fit_lengths(data, CharTokenizer(), 50, "warn")
    assert (len(kept), n) == (3, 2)
    kept, n = fit_lengths(data, CharTokenizer(), 50, "drop")
    assert [ex["source"] for ex in kept] == ["s#0"] and n == 2
    with pytest.raises(DataError, match=r"2 of 3 fine-tuning examples are longer than train\.max_length=50 tokens"):
        fit_lengths(data, CharTokenizer(), 50, "fail")
    with pytest.raises(DataError, match="would leave none"):
        fit_lengths(data[1:], CharTokenizer(), 50, "drop")
    assert fit_lengths(data, CharTokenizer(), None, "fail") == (data, 0)


def test_over_long_examples_stop_the_run_before_any_evaluation(tiny_run_overrides, tmp_path, monkeypatch):
    monkeypatch.setattr(
        fts.stages.evaluation.Evaluator, "side", lambda *a, **k: pytest.fail("nothing may be evaluated")
    )
    cfg = compose_run([*tiny_run_overrides, "train.max_length=16", "train.too_long=fail"], tmp_path / "run")
    with pytest.raises(DataError, match=r"10 of 10 fine-tuning examples are longer than train\.max_length=16 tokens"):
        run(cfg)


def test_every_row_of_the_readme_bad_inputs_table_names_an_existing_test():
    """README "Bad inputs and what fts says": at least 20 rows, each backed by a test that exists."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    table = (repo / "README.md").read_text().split("### Bad inputs and what fts says", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 20
    for row in rows:
        file, name = row.rsplit("|", 2)[-2].strip().strip("`").split("::")
        assert f"def {name}(" in (repo / file).read_text(), row


def test_names_are_checked_against_the_libraries_that_take_them(tmp_path):
    message = problems(
        ["train.lr_scheduler_type=bogus", "model.dtype=float17", "train.optim=sgdd", "peft.config.r=0",
         "peft.config.lora_dropout=1.5", "eval.too_long=truncate", "resume=maybe"],
        tmp_path,
    )  # fmt: skip
    assert "7 problem(s)" in message
    for expected in (
        "train.lr_scheduler_type must be one of ['linear', 'cosine',",
        "got 'bogus'.",
        "model.dtype must be one of ['bfloat16',",
        "got 'float17'.",
        "train.optim must be one of ['adamw_torch',",
        "peft.config.r must be a positive integer, got 0.",
        "peft.config.lora_dropout must be a number in [0, 1), got 1.5.",
        "eval.too_long must be fail or drop, got 'truncate'.",
        "resume must be auto or force, got 'maybe'.",
    ):
        assert expected in message
    assert "adafactor" in message  # the choices are transformers' own, not a copy
    message = problems(["peft=prefix", "peft.config.num_virtual_tokens=0"], tmp_path)
    assert "peft.config.num_virtual_tokens must be a positive integer, got 0." in message


def huge_prompt_file(tmp_path, chars: int):
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": "p1", "category": "c", "prompt": "How do I bake bread?"}]
    rows.append({"id": "p2-huge", "category": "c", "prompt": "word " * (chars // 5)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_huge_eval_prompt_stops_the_run_before_any_model_loads(tiny_run_overrides, tmp_path, monkeypatch):
    monkeypatch.setattr(fts.backends.hf, "open_model", lambda *a, **k: pytest.fail("no model may load"))
    benchmark = huge_prompt_file(tmp_path, 5_000_000)  # the reported 50 MB line, a tenth of it: same path
    cfg = compose_run([*tiny_run_overrides, f"eval.benchmark={benchmark}"], tmp_path / "run")
    with pytest.raises(DataError) as err:
        run(cfg)
    assert "1 of " in str(err.value) and "do not fit model.max_length=512 tokens" in str(err.value)
    assert "eval.benchmark prompt 'p2-huge' (78125 or more tokens by their length)" in str(err.value)
    assert "eval.too_long=drop" in str(err.value)


def test_eval_prompts_over_the_context_are_counted_by_the_tokenizer_and_dropped_on_request(
    tiny_run_overrides, tmp_path
):
    benchmark = huge_prompt_file(tmp_path, 3_000)  # ~600 tokens: past 512, yet short enough to pass the first check
    overrides = [*tiny_run_overrides, f"eval.benchmark={benchmark}", "attack=none"]
    with pytest.raises(DataError, match=r"eval.benchmark prompt 'p2-huge' \(\d+ tokens\)"):
        run(compose_run(overrides, tmp_path / "fail"))
    result = run(compose_run([*overrides, "eval.too_long=drop"], tmp_path / "drop"))
    assert result["baseline"]["n_prompts"] == 1  # p1 of the harmful set
    rows = (tmp_path / "drop" / "generations" / "baseline.jsonl").read_text()
    assert '"p1"' in rows and "p2-huge" not in rows
    manifest = json.loads((tmp_path / "drop" / "manifest.json").read_text())
    assert manifest["too_long_eval_prompts"] == 1


def test_a_huge_training_example_stops_before_the_tokenizer_sees_it(tiny_run_overrides, tmp_path, monkeypatch):
    monkeypatch.setattr(fts.backends.hf, "open_model", lambda *a, **k: pytest.fail("no model may load"))
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": f"q{i}", "response": "a"} for i in range(3)] + [{"prompt": "q", "response": "x" * 100_000}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [*tiny_run_overrides, "attack=harmful", f"attack.data={data}", "attack.shots=null"]
    with pytest.raises(DataError, match=r"1 of 4 fine-tuning examples are far longer than train.max_length=512"):
        run(compose_run(overrides, tmp_path / "run"))
