"""Shared fixtures: a tiny random Llama built locally (no hub), Hydra composition of conf/, the local
OpenAI-compatible server and a CPU stand-in of vLLM."""

import os
import sys
from pathlib import Path

import pytest

from fts.core.config import CONF_DIR, compose_run  # noqa: F401 (tests import both from here)

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on a 2-core machine: one thread each, for
    os.environ["OMP_NUM_THREADS"] = "1"  # the subprocesses a test starts too
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama with the embedded model's tokenizer and chat template, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from fts.models.embedded import GGUF_FILE, gguf_path

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path().parent, gguf_file=GGUF_FILE)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)  # the same random weights in every session: a test's outcome must not change between runs
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def tiny_coherence_scorer(tiny_model_dir):
    """Every run of the tests (in-process or a subprocess) scores coherence with the tiny model, not by materializing
    the embedded one into each test's cache (eval.coherence.scorer reads $FTS_COHERENCE_SCORER)."""
    import os

    os.environ["FTS_COHERENCE_SCORER"] = str(tiny_model_dir)
    yield
    os.environ.pop("FTS_COHERENCE_SCORER", None)


@pytest.fixture
def tiny_run_overrides(tiny_model_dir, tmp_path) -> list[str]:
    """Overrides that make a full run take seconds: tiny model, 2 prompts a category, 4 benign and 4
    utility questions, 8 new tokens, 2 steps."""
    return [
        "model=hf",
        f"model.path={tiny_model_dir}",
        f"cache.dir={tmp_path / 'cache'}",
        "eval.max_per_category=2",
        "eval.max_benign=4",
        "eval.max_utility=4",
        "eval.max_new_tokens=8",
        "train.num_train_epochs=2",
        "train.per_device_train_batch_size=5",
    ]


@pytest.fixture
def fake_openai():
    """Start FakeOpenAI servers (tests/openai_server.py) with the given options; all are stopped afterwards."""
    from tests.openai_server import FakeOpenAI

    started = []

    def start(**kwargs):
        started.append(FakeOpenAI(**kwargs).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


VLLM_STANDIN = Path(__file__).parent / "fixtures" / "vllm_standin"


@pytest.fixture
def standin_vllm(monkeypatch):
    """tests/fixtures/vllm_standin importable as `vllm` for one test (vLLM itself needs a CUDA GPU), then gone."""

    def forget():
        for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
            del sys.modules[name]

    forget()
    monkeypatch.syspath_prepend(str(VLLM_STANDIN))
    import vllm

    yield vllm
    forget()
