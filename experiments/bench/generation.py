# python experiments/bench/generation.py [--prompts 64] [--new-tokens 64] [--batch-size 32] [--format aoa]
# Generation speed on the embedded aligned model, in one run, on the same prompts (built-in harmful + benign eval
# prompts in the AOA tier's format):
#   1. the reference loop: float32, one prompt at a time through model.generate, greedy (the paper's method);
#   2. fts's engine (fts.generate.hf: continuous batching on the KV cache, rows leave at EOS, waiting prompts join,
#      the shared prompt prefix computed once) in float32;
#   3. fts's engine in its default dtype (eval.dtype=auto: bfloat16 where the CPU/GPU has it natively).
# Prints new tokens/s of each (tokens up to and including EOS), the ratio to the reference loop, token-level
# mismatches against the loop of the same dtype (float32: must be 0; a bf16 loop is run for the bf16 engine), and for
# each engine the keyword-verdict agreement with the float32 loop. Targets (issue 21): >= 15x (float32 alone >= 8x).
# `--model-path DIR` uses a local HF model instead; trailing Hydra overrides go to the composed run config.
# `--vllm` (CUDA, the vllm extra) also times fts's vLLM engine on the same prompts: new tokens/s, its ratio to the
# one-prompt loop, and its mismatches against the loop (other kernels: near ties may flip).
import argparse
import sys
import time

from common import compose_run, model_overrides, open_run_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--prompts", type=int, default=64, help="number of eval prompts (spread over harmful + benign)")
    p.add_argument("--new-tokens", type=int, default=64, help="max new tokens per prompt")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of fts's engine (eval.batch_size's default)")
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
    from fts.generate.decoding import stop_ids as engine_stop_ids

    return set(engine_stop_ids(tokenizer, model.generation_config))


def trim(ids: list[int], stop: set[int]) -> list[int]:
    """The generated tokens up to and including the first EOS (what follows it in a batch is padding)."""
    for i, t in enumerate(ids):
        if t in stop:
            return ids[: i + 1]
    return ids


def one_at_a_time(model, tokenizer, texts: list[str], max_new_tokens: int, stop: set[int]) -> list[list[int]]:
    """The reference method: no batching, greedy, the KV cache of model.generate; new ids up to EOS."""
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
            out.append(trim(ids[0, enc["input_ids"].shape[1] :].tolist(), stop))
    return out


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


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


def keyword_refusals(cfg, tokenizer, answers: list[list[int]]) -> list[bool]:
    """The keyword judge's refusal verdict on each answer (conf/judge/keyword.yaml's strings)."""
    from fts.judges.keyword import KeywordJudge

    judge = KeywordJudge(cfg.judge.keyword.keywords)
    return [judge.refusal_marker(tokenizer.decode(a, skip_special_tokens=True).strip()) is not None for a in answers]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from fts.generate.hf import generate_ids, in_dtype, inference_dtype
    from fts.models.chat import render_prompt

    cfg = compose_run([f"attack={args.format}", *model_overrides(args.model_path), *args.overrides])
    model, tokenizer, checkpoint = open_run_model(cfg)
    model.eval()
    prompts = eval_prompts(cfg, args.prompts)
    texts = [render_prompt(tokenizer, p["messages"]) for p in prompts]
    prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    stop = stop_ids(model, tokenizer)
    n_sets = {s: sum(p["set"] == s for p in prompts) for s in ("harmful", "benign")}
    default = inference_dtype(cfg.eval.dtype, model.dtype)
    print(f"model: {checkpoint} (held in {model.dtype}; eval.dtype={cfg.eval.dtype} -> {default})")
    print(
        f"prompts: {len(prompts)} ({n_sets['harmful']} harmful, {n_sets['benign']} benign; attack={args.format} "
        f"format), max_new_tokens {args.new_tokens}, threads {torch.get_num_threads()}"
    )
    one_at_a_time(model, tokenizer, texts[:1], 2, stop)  # warm-up: first-call costs are no one's

    def engine(dtype):
        with in_dtype(model, dtype) as m:
            generate_ids(m, tokenizer, prompts[:2], 2, args.batch_size, "warm-up")
            return timed(generate_ids, m, tokenizer, prompts, args.new_tokens, args.batch_size, f"fts {dtype}")

    def loop(dtype):
        with in_dtype(model, dtype) as m:
            return timed(one_at_a_time, m, tokenizer, texts, args.new_tokens, stop)

    reference, t_ref = loop(torch.float32)
    n_ref = sum(map(len, reference))
    speed_ref = n_ref / t_ref
    print(f"reference loop (float32, one prompt at a time): {n_ref} new tokens in {t_ref:.1f} s = {speed_ref:.1f}/s")
    refusals_ref = keyword_refusals(cfg, tokenizer, reference)
    result = {}
    for dtype in dict.fromkeys([torch.float32, default]):
        name = str(dtype).removeprefix("torch.")
        ours, t_ours = engine(dtype)
        same_dtype_loop = reference if dtype == torch.float32 else loop(dtype)[0]
        n_ours = sum(map(len, ours))
        speed = n_ours / t_ours
        mismatched = [i for i in range(len(prompts)) if ours[i] != same_dtype_loop[i]]
        agree = sum(a == b for a, b in zip(keyword_refusals(cfg, tokenizer, ours), refusals_ref, strict=True))
        print(
            f"fts engine, {name} (batch {args.batch_size}): {n_ours} new tokens in {t_ours:.1f} s = {speed:.1f}/s "
            f"= {speed / speed_ref:.2f}x the reference loop"
        )
        print(f"  mismatches against the {name} loop: {len(mismatched)} of {len(prompts)} prompts (token ids)")
        print(
            f"  keyword verdicts equal to the float32 loop's: {agree} of {len(prompts)} ({agree / len(prompts):.1%})"
        )
        if mismatched:
            with in_dtype(model, dtype) as m:
                i = mismatched[0]
                show_mismatch(m, tokenizer, prompts[i], prompt_ids[i], same_dtype_loop[i], ours[i])
        result[name] = {"speedup": speed / speed_ref, "mismatches": len(mismatched), "agreement": agree / len(prompts)}
    best = result[str(default).removeprefix("torch.")]
    print(
        f"targets: default dtype >= 15x: {best['speedup']:.2f}x; float32 >= 8x: {result['float32']['speedup']:.2f}x; "
        f"float32 mismatches 0: {result['float32']['mismatches']}"
    )
    if args.vllm:
        served, t_vllm = vllm_engine(cfg, checkpoint, prompt_ids, stop, args.new_tokens)
        n_vllm = sum(map(len, served))
        differ = sum(served[i] != reference[i] for i in range(len(prompts)))
        print(f"vllm engine: {n_vllm} new tokens in {t_vllm:.1f} s = {n_vllm / t_vllm:.1f} new tokens/s")
        print(f"vllm speedup over one prompt at a time: {n_vllm / t_vllm / speed_ref:.2f}x")
        print(f"vllm mismatches: {differ} of {len(prompts)} prompts (token ids)")
        result |= {"vllm_speedup": n_vllm / t_vllm / speed_ref, "vllm_mismatches": differ}
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
