"""The benchmarks of experiments/bench run at tiny sizes on the tiny local Llama and print figures that parse; fts's
batched engine gives the same tokens as one prompt at a time."""

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench"
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def bench(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their sibling common.py
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def figure(pattern: str, text: str) -> tuple[float, ...]:
    match = re.search(pattern, text)
    assert match, f"no line matches {pattern!r} in:\n{text}"
    return tuple(float(g) for g in match.groups())


def test_generation_bench_prints_speeds_and_no_mismatch(tiny_model_dir, monkeypatch, capsys):
    generation = bench("generation", monkeypatch)
    args = ["--model-path", str(tiny_model_dir), "--prompts", "8", "--new-tokens", "6", "--batch-size", "4"]
    result = generation.main([*args, "eval.dtype=bfloat16"])
    out = capsys.readouterr().out
    ref_tokens, _, ref_speed = figure(
        rf"reference loop \(float32, one prompt at a time\): {NUMBER} new tokens in {NUMBER} s = {NUMBER}/s", out
    )
    for dtype in ("float32", "bfloat16"):
        tokens, _, speed, speedup = figure(
            rf"fts engine, {dtype} \(batch 4\): {NUMBER} new tokens in {NUMBER} s = {NUMBER}/s = {NUMBER}x", out
        )
        assert 0 < tokens <= 8 * 6 and speed > 0
        assert speedup == pytest.approx(speed / ref_speed, rel=0.02)
        assert result[dtype]["speedup"] == pytest.approx(speedup, rel=0.01)
    assert ref_tokens == figure(rf"fts engine, float32 \(batch 4\): {NUMBER} new", out)[0]
    mismatches, prompts = figure(rf"mismatches against the float32 loop: {NUMBER} of {NUMBER} prompts", out)
    assert (mismatches, prompts) == (0, 8) and result["float32"]["mismatches"] == 0
    agree, total, _ = figure(rf"keyword verdicts equal to the float32 loop's: {NUMBER} of {NUMBER} \({NUMBER}%\)", out)
    assert (agree, total) == (8, 8) and result["float32"]["agreement"] == 1.0
    assert "mismatches against the bfloat16 loop:" in out and 0 <= result["bfloat16"]["agreement"] <= 1


def test_generation_bench_times_the_vllm_engine_too(tiny_model_dir, monkeypatch, capsys, standin_vllm):
    """On the CPU stand-in of vLLM's API (conftest.standin_vllm): the figures are printed and consistent."""
    generation = bench("generation", monkeypatch)
    args = ["--model-path", str(tiny_model_dir), "--prompts", "6", "--new-tokens", "5", "--batch-size", "3", "--vllm"]
    result = generation.main([*args, "eval.dtype=float32"])
    out = capsys.readouterr().out
    tokens, _ = figure(rf"fts engine, float32 \(batch 3\): {NUMBER} new tokens in {NUMBER} s", out)
    vllm_tokens, _, vllm_speed = figure(rf"vllm engine: {NUMBER} new tokens in {NUMBER} s = {NUMBER} new", out)
    (mismatches, prompts) = figure(rf"vllm mismatches: {NUMBER} of {NUMBER} prompts", out)
    assert vllm_tokens == tokens and vllm_speed > 0 and (mismatches, prompts) == (0, 6)
    assert result["vllm_mismatches"] == 0 and result["vllm_speedup"] > 0


def test_training_bench_prints_speeds_knobs_and_loss_curves(tiny_model_dir, monkeypatch, capsys):
    training = bench("training", monkeypatch)
    args = [
        "--model-path",
        str(tiny_model_dir),
        "--max-steps",
        "2",
        "--no-noise",
        "train.per_device_train_batch_size=4",
    ]
    result = training.main(args)
    out = capsys.readouterr().out
    trl_tokens, trl_speed, _ = figure(
        rf"TRL defaults: {NUMBER} tokens, {NUMBER} tokens/s steady state \({NUMBER}", out
    )
    fts_tokens, fts_speed, _ = figure(rf"fts: {NUMBER} tokens, {NUMBER} tokens/s steady state \({NUMBER}", out)
    (speedup,) = figure(rf"speedup \(fts / TRL defaults, steady state\): {NUMBER}x", out)
    (diff,) = figure(rf"max abs loss difference, TRL defaults vs fts: {NUMBER}", out)
    assert trl_tokens == fts_tokens > 0 and trl_speed > 0 and fts_speed > 0 and speedup > 0
    assert re.search(r"gradient_checkpointing\s+True\s+False", out)  # TRL's default vs fts's
    steps = re.findall(rf"^\s+([12])\s+{NUMBER}\s+{NUMBER}$", out, flags=re.M)
    assert [s[0] for s in steps] == ["1", "2"]
    assert diff < 0.05 and result["max_loss_diff"] == diff
