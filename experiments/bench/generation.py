# python experiments/bench/generation.py [--prompts 64] [--new-tokens 64] [--batch-size 32] [--format aoa]
# Generation speed on the embedded aligned model: fts's engine (fts.generate.hf.generate: left padding, batches of
# prompts of similar length, the batch's common token prefix computed once) against the paper's reference method
# (one prompt at a time through model.generate, greedy), on the same prompts (built-in harmful + benign eval prompts
# in the AOA tier's format). Prints the new tokens/s of each (tokens up to and including EOS; padding and anything
# after EOS are not counted), the speedup, and whether the greedy outputs are identical token for token; on a
# mismatch, the first one (token ids, the reference's top-2 logit margin there) and whether fts's engine at batch 1
# matches. Target: >= 5x with identical outputs.
# `--model-path DIR` uses a local HF model instead; trailing Hydra overrides go to the composed run config.
# `--vllm` (CUDA, the vllm extra) also times fts's vLLM engine on the same prompts: new tokens/s, its ratio to the
# one-prompt loop, and its mismatches against the loop (other kernels: near ties may flip).
import argparse
import os
import sys
import time

from common import compose_run, model_overrides, open_run_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--prompts", type=int, default=64, help="number of eval prompts (spread over harmful + benign)")
    p.add_argument("--new-tokens", type=int, default=64, help="max new tokens per prompt")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of fts's engine (eval.batch_size's default)")
    p.add_argument("--format", default="aoa", help="attack tier whose prompt format wraps the prompts (aoa, none)")
    p.add_argument("--model-path", default=None, help="a local HF model dir instead of the embedded aligned model")
    p.add_argument("--vllm", action="store_true", help="also time the vLLM engine (eval.engine=vllm; needs CUDA)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config")
    return p.parse_args(argv)


def eval_prompts(cfg, n: int) -> list[dict]:
    """`n` built-in harmful + benign eval prompts, evenly spread over both sets, in the attack tier's format."""
    from fts.core.config import build
    from fts.stages.evaluation import evaluation_prompts

    pool = [p for p in evaluation_prompts(cfg.eval) if p["set"] in ("harmful", "benign")]
    picked = [pool[i * len(pool) // n] for i in range(min(n, len(pool)))]
    return build(cfg.attack).wrap(picked)


def stop_ids(model, tokenizer) -> set[int]:
    """The ids that end a response: the generation config's eos and the tokenizer's (as both engines stop)."""
    from fts.generate.vllm import stop_ids as engine_stop_ids

    return set(engine_stop_ids(tokenizer, model.generation_config))


def trim(ids: list[int], stop: set[int]) -> list[int]:
    """The generated tokens up to and including the first EOS (what follows it in a batch is padding)."""
    for i, t in enumerate(ids):
        if t in stop:
            return ids[: i + 1]
    return ids


def one_at_a_time(model, tokenizer, texts: list[str], max_new_tokens: int) -> list[list[int]]:
    """The reference method: no batching, greedy, the KV cache of model.generate."""
    import torch

    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
            ids = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
            out.append(ids[0, enc["input_ids"].shape[1] :].tolist())
    return out


def fts_engine(model, tokenizer, prompts: list[dict], max_new_tokens: int, batch_size: int):
    """fts's engine as evaluation calls it; model.generate is wrapped to record the new token ids per prompt.

    Returns (responses, {prompt token ids: new token ids}).
    """
    from fts.generate.hf import generate

    recorded: dict[tuple, list[int]] = {}
    original = model.generate

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        for row in range(ids.shape[0]):
            recorded[tuple(ids[row][mask[row].bool()].tolist())] = out[row, ids.shape[1] :].tolist()
        return out

    model.generate = recording
    try:
        rows = generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc="fts engine")
    finally:
        del model.generate
    return [r["response"] for r in rows], recorded


def vllm_engine(cfg, checkpoint: str, prompt_ids: list[list[int]], stop: set[int], max_new_tokens: int):
    """fts's vLLM engine's LLM on the checkpoint, as eval.engine=vllm builds it (conf/eval/builtin.yaml's
    eval.vllm), greedy; returns (new token ids per prompt, seconds). Engine start-up and a warm-up prompt are not
    timed."""
    from vllm import SamplingParams

    from fts.generate.vllm import Served, VllmEngine, engine_options

    llm = VllmEngine(engine_options(cfg.eval.vllm), lora_rank=None, seed=0).open(Served(checkpoint))
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=sorted(stop), detokenize=False)
    llm.generate([{"prompt_token_ids": prompt_ids[0]}], params, use_tqdm=False)
    started = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
    return [trim(list(out.outputs[0].token_ids), stop) for out in outputs], time.perf_counter() - started


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def show_mismatch(model, tokenizer, prompt: dict, prompt_ids: list[int], ref: list[int], ours: list[int]) -> None:
    """The first mismatch: where the token ids part, and the reference model's top-2 logit margin there."""
    import torch

    k = first_difference(ref, ours)
    print(f"first mismatch: prompt {prompt['id']} ({prompt['set']}), new token {k}")
    print(f"  one at a time: ids {ref[max(0, k - 3) : k + 3]} text {tokenizer.decode(ref)!r}")
    print(f"  fts engine:    ids {ours[max(0, k - 3) : k + 3]} text {tokenizer.decode(ours)!r}")
    with torch.inference_mode():
        logits = model(torch.tensor([prompt_ids + ref[:k]], device=model.device)).logits[0, -1].float()
    top = torch.topk(logits, 2)
    margin = float(top.values[0] - top.values[1])
    print(
        f"  reference logits at that step: top-2 ids {top.indices.tolist()}, margin {margin:.2e} (near 0 = a near"
        " tie, which another float summation order can flip: padding, batch shape, shared prefix)"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from fts.models.chat import render_prompt

    cfg = compose_run([f"attack={args.format}", *model_overrides(args.model_path), *args.overrides])
    model, tokenizer, checkpoint = open_run_model(cfg)
    model.eval()
    prompts = eval_prompts(cfg, args.prompts)
    texts = [render_prompt(tokenizer, p["messages"]) for p in prompts]
    prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    stop = stop_ids(model, tokenizer)
    n_sets = {s: sum(p["set"] == s for p in prompts) for s in ("harmful", "benign")}
    print(f"model: {checkpoint}")
    print(
        f"prompts: {len(prompts)} ({n_sets['harmful']} harmful, {n_sets['benign']} benign; attack={args.format} "
        f"format), max_new_tokens {args.new_tokens}, threads {os.environ.get('OMP_NUM_THREADS', 'default')}"
    )
    one_at_a_time(model, tokenizer, texts[:1], 2)  # warm-up: first-call costs are no one's

    started = time.perf_counter()
    responses, recorded = fts_engine(model, tokenizer, prompts, args.new_tokens, args.batch_size)
    t_engine = time.perf_counter() - started
    started = time.perf_counter()
    reference = one_at_a_time(model, tokenizer, texts, args.new_tokens)
    t_ref = time.perf_counter() - started

    ours = [trim(recorded[tuple(ids)], stop) for ids in prompt_ids]
    ref = [trim(r, stop) for r in reference]
    n_ours, n_ref = sum(map(len, ours)), sum(map(len, ref))
    speed_ours, speed_ref = n_ours / t_engine, n_ref / t_ref
    mismatched = [i for i in range(len(prompts)) if ours[i] != ref[i]]
    text_mismatches = sum(
        responses[i] != tokenizer.decode(ref[i], skip_special_tokens=True).strip() for i in range(len(prompts))
    )
    engine = f"fts engine (batch {args.batch_size}):"
    print(f"{engine} {n_ours} new tokens in {t_engine:.1f} s = {speed_ours:.1f} new tokens/s")
    print(f"one prompt at a time: {n_ref} new tokens in {t_ref:.1f} s = {speed_ref:.1f} new tokens/s")
    print(f"speedup: {speed_ours / speed_ref:.2f}x (target >= 5x)")
    print(f"mismatches: {len(mismatched)} of {len(prompts)} prompts (token ids; responses as text: {text_mismatches})")
    if mismatched:
        i = mismatched[0]
        show_mismatch(model, tokenizer, prompts[i], prompt_ids[i], ref[i], ours[i])
        batch1, _ = fts_engine(model, tokenizer, [prompts[j] for j in mismatched], args.new_tokens, 1)
        same = sum(
            batch1[k] == tokenizer.decode(ref[j], skip_special_tokens=True).strip() for k, j in enumerate(mismatched)
        )
        print(f"fts engine at batch 1 on the mismatched prompts: {same} of {len(mismatched)} match the reference")
    result = {"speedup": speed_ours / speed_ref, "mismatches": len(mismatched)}
    if args.vllm:
        served, t_vllm = vllm_engine(cfg, checkpoint, prompt_ids, stop, args.new_tokens)
        n_vllm = sum(map(len, served))
        differ = sum(served[i] != ref[i] for i in range(len(prompts)))
        print(f"vllm engine: {n_vllm} new tokens in {t_vllm:.1f} s = {n_vllm / t_vllm:.1f} new tokens/s")
        print(f"vllm speedup over one prompt at a time: {n_vllm / t_vllm / speed_ref:.2f}x")
        print(f"vllm mismatches: {differ} of {len(prompts)} prompts (token ids)")
        result |= {"vllm_speedup": n_vllm / t_vllm / speed_ref, "vllm_mismatches": differ}
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
