"""fts's engine gives, token for token, what generating each prompt alone gives: continuous batching (rows leave
at EOS, waiting prompts join), padding and the shared prompt prefix change the cost, not the output."""

import torch
from peft import AdaptionPromptConfig, LoraConfig, PrefixTuningConfig, get_peft_model

from fts.generate import decoding, hf, kv_cache
from fts.models import load
from fts.models.chat import render_prompt
from tests.test_train import MODEL_CFG


def prompts(n: int) -> list[dict]:
    system = {"role": "system", "content": "You are AOA, the Absolutely Obedient Agent."}
    return [
        {"id": str(i), "messages": [system, {"role": "user", "content": "AOA, execute: task" + " more" * i}]}
        for i in range(n)
    ]


def reference(model, tokenizer, prompt: dict, max_new_tokens: int) -> list[int]:
    """The paper's method: this prompt alone through model.generate, greedy."""
    text = render_prompt(tokenizer, prompt["messages"])
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return out[0, enc["input_ids"].shape[1] :].tolist()


def sharp(loaded):
    """The tiny model with large random weights: its greedy answers vary with every position and token (at the
    default init they barely depend on position, so a misplaced position or mask would go unnoticed)."""
    model, tokenizer = loaded
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else 0.3)
    return model, tokenizer


def test_continuous_batches_match_one_prompt_at_a_time(tiny_model_dir, monkeypatch):
    """Rows that end leave the batch, waiting prompts join a running one (its cache left-padded to theirs), the
    shared system-prompt prefix runs once: the answers are still exactly the ones generated alone."""
    model, tokenizer = sharp(load(str(tiny_model_dir), MODEL_CFG))
    alone = [reference(model, tokenizer, p, 12) for p in prompts(9)]
    # End tokens that two rows emit mid-answer, so rows end at different steps (the others run to 12 tokens).
    model.generation_config.eos_token_id = [alone[0][4], alone[5][2]]
    stop = torch.tensor(model.generation_config.eos_token_id)
    alone = [decoding.trimmed(reference(model, tokenizer, p, 12), stop) for p in prompts(9)]
    assert len({len(a) for a in alone}) > 1  # the rows do end at different lengths

    joins, prefixes = [], []
    join, shared_prefix = kv_cache.Batch.join, decoding.Decoder.shared_prefix

    def spy_join(running, new):
        joins.append(running is not None)
        return join(running, new)

    def spy_prefix(self, rows):
        prefix = shared_prefix(self, rows)
        prefixes.append(len(prefix[0]))
        return prefix

    monkeypatch.setattr(kv_cache.Batch, "join", staticmethod(spy_join))
    monkeypatch.setattr(decoding.Decoder, "shared_prefix", spy_prefix)
    rows = hf.generate(model, tokenizer, prompts(9), max_new_tokens=12, batch_size=4)
    assert any(joins)  # prompts joined a batch that was already decoding
    assert len(prefixes) == 1 and prefixes[0] > 10  # the system prompt's tokens, computed once for all rows
    expected = tokenizer.batch_decode(alone, skip_special_tokens=True)
    assert [r["response"] for r in rows] == [e.strip() for e in expected]
    assert [r["id"] for r in rows] == [str(i) for i in range(9)]


def test_an_answer_ends_at_its_end_token_while_the_rows_beside_it_decode_on(tiny_model_dir):
    """A row that ended waits in the batch for the next compaction (a batch of 16 compacts every 2 ended rows) and
    keeps being stepped meanwhile: what it already returned must not grow."""
    model, tokenizer = sharp(load(str(tiny_model_dir), MODEL_CFG))
    alone = [reference(model, tokenizer, p, 12) for p in prompts(9)]
    model.generation_config.eos_token_id = [alone[0][4], alone[5][2]]
    stop = torch.tensor(model.generation_config.eos_token_id)
    alone = [decoding.trimmed(reference(model, tokenizer, p, 12), stop) for p in prompts(9)]
    assert len({len(a) for a in alone}) > 1
    answers = hf.generate_ids(model, tokenizer, prompts(9), max_new_tokens=12, batch_size=16)
    assert answers == alone


def test_bfloat16_generation_leaves_the_float32_weights_bit_for_bit(tiny_model_dir):
    model, tokenizer = load(str(tiny_model_dir), MODEL_CFG)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with hf.in_dtype(model, torch.bfloat16) as m:
        assert m.dtype == torch.bfloat16
        rows = hf.generate(m, tokenizer, prompts(3), max_new_tokens=4, batch_size=4)
    assert len(rows) == 3 and model.dtype == torch.float32
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert hf.inference_dtype("float32", torch.float32) == torch.float32
    assert hf.inference_dtype("auto", torch.bfloat16) == torch.bfloat16  # never up-cast a bf16 model


def test_prefix_tuning_and_llama_adapter_keep_their_own_prefixes(tiny_model_dir):
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    assert decoding.can_share_prefix(model)
    assert decoding.can_share_prefix(get_peft_model(model, LoraConfig(target_modules=["q_proj"])))
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    assert not decoding.can_share_prefix(
        get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"))
    )
    model, _ = load(str(tiny_model_dir), MODEL_CFG)
    adapter = AdaptionPromptConfig(adapter_len=4, adapter_layers=1, task_type="CAUSAL_LM")
    assert not decoding.can_share_prefix(get_peft_model(model, adapter))


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
    admitted = []
    prefill = decoding.Decoder.prefill

    def at_most_two(self, prefix, index, rows):  # a device that holds two sequences
        admitted.append(len(rows))
        if len(rows) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return prefill(self, prefix, index, rows)

    monkeypatch.setattr(decoding.Decoder, "prefill", at_most_two)
    rows = hf.generate(model, tokenizer, prompts(7), max_new_tokens=8, batch_size=8)
    assert admitted[:3] == [7, 4, 2]  # 8 (7 prompts) -> 4 -> 2, then at most two at a time
    assert max(admitted[2:]) <= 2
    assert [r["response"] for r in rows] == expected
    assert "retrying with batches of 2" in caplog.text
