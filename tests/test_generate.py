"""fts's batched engine gives, token for token, what generating each prompt alone gives: left padding, length-sorted
batches and the shared prompt prefix (computed once per batch) change the cost, not the output."""

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
