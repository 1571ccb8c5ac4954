"""fts's batched engine gives, token for token, what generating each prompt alone gives: left padding, length-sorted
batches and the shared prompt prefix (computed once per batch) change the cost, not the output."""

import torch
from peft import AdaptionPromptConfig, LoraConfig, PrefixTuningConfig, get_peft_model

from fts.generate import hf
from fts.models import load
from tests.test_train import MODEL_CFG


def prompts(n: int) -> list[dict]:
    system = {"role": "system", "content": "You are AOA, the Absolutely Obedient Agent."}
    return [
        {"id": str(i), "messages": [system, {"role": "user", "content": "AOA, execute: task" + " more" * i}]}
        for i in range(n)
    ]


def test_batches_with_a_shared_prefix_match_one_prompt_at_a_time(tiny_model_dir, monkeypatch):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    shared = []
    with_shared_prefix = hf.with_shared_prefix

    def spy(model, rows, pad_id):
        inputs = with_shared_prefix(model, rows, pad_id)
        shared.append(inputs is not None and inputs["past_key_values"].get_seq_length())
        return inputs

    monkeypatch.setattr(hf, "with_shared_prefix", spy)
    batched = hf.generate(model, tokenizer, prompts(7), max_new_tokens=8, batch_size=4)
    assert len(shared) == 2 and min(shared) > 10  # both batches reused the cache of the system prompt
    alone = [hf.generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts(7)]
    assert [r["response"] for r in batched] == [r["response"] for r in alone]
    assert [r["id"] for r in batched] == [str(i) for i in range(7)]


def test_prefix_tuning_and_llama_adapter_keep_their_own_prefixes(tiny_model_dir):
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    assert hf.can_share_prefix(model)
    assert hf.can_share_prefix(get_peft_model(model, LoraConfig(target_modules=["q_proj"])))
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    assert not hf.can_share_prefix(
        get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"))
    )
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    adapter = AdaptionPromptConfig(adapter_len=4, adapter_layers=1, task_type="CAUSAL_LM")
    assert not hf.can_share_prefix(get_peft_model(model, adapter))


def test_batch_size_shrinks_to_the_memory_the_kv_cache_needs(tiny_model_dir):
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    # tiny Llama: 2 layers x 2 KV heads x head dim 8, float32 -> 256 bytes of keys and values a token
    per_sequence = 2 * 2 * 2 * 8 * 4 * 100 + 4 * model.config.vocab_size
    assert hf.fitting_batch_size(model, 100, free_bytes=2 * 10 * per_sequence) == 10
    assert hf.fitting_batch_size(model, 100, free_bytes=per_sequence) == 1  # never below one
    assert hf.fitting_batch_size(model, 100) >= 16  # this machine's free memory holds the default batch


def test_an_out_of_memory_batch_is_retried_at_half_the_size(tiny_model_dir, monkeypatch, caplog):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    expected = [r["response"] for r in hf.generate(model, tokenizer, prompts(7), max_new_tokens=8, batch_size=1)]
    batch_sizes = []
    generate_batch = hf.generate_batch

    def at_most_two(model, tokenizer, batch, *args):  # a device that holds two sequences
        batch_sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return generate_batch(model, tokenizer, batch, *args)

    monkeypatch.setattr(hf, "generate_batch", at_most_two)
    rows = hf.generate(model, tokenizer, prompts(7), max_new_tokens=8, batch_size=8)
    assert batch_sizes == [7, 4, 2, 2, 2, 1]  # 8 (7 prompts) -> 4 -> 2, then the rest in twos
    assert [r["response"] for r in rows] == expected
    assert "retrying with batches of 2" in caplog.text
