# python experiments/bench/sweep_cache.py [--cells seed=0,1,2,3] [size options] [hydra overrides...]
# What fts's cache saves a sweep: the same 4-cell sweep (default: attack=aoa with seeds 0-3; the cells share the
# aligned model and the baseline) run twice through fts.run.run, one cell after another in one process (as Hydra's
# basic launcher runs a multirun), each sweep in a fresh process of its own:
#   cached:   cache enabled, starting from an EMPTY cache dir: it pays once for materializing and safety-aligning the
#             embedded model and once for the baseline evaluation;
#   uncached: cache.enabled=false: every cell rebuilds the model, re-aligns it and re-evaluates the baseline.
# Prints the wall time of each, their ratio, how many times each shared stage was actually computed (counted by
# wrapping fts.core.cache.Cache.build's fill and fts.stages.evaluation.Evaluator.generate, not from logs), and the per-stage time
# sums of the cells' manifest.json. Target: cached <= 0.7x uncached, baseline evaluated once.
# Default sizes keep the whole benchmark at ~10-15 min on 2 idle cores: 2 harmful prompts per category (22) + 6
# benign + 6 utility questions at 32 new tokens, 4 training steps, and an alignment of 24 safety + 24 benign examples
# for 1 epoch (the real default, 230 examples x 2 epochs, takes minutes per build: the uncached sweep would pay that
# 4 times, making the ratio look better than a smaller alignment, and the benchmark 4x longer).
# Working files go to a temp dir (--workdir to keep them); $FTS_CACHE is not touched.
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, compose_run, model_overrides

MODES = ("cached", "uncached")
STAGES = ("model", "baseline_eval", "fine_tune", "finetuned_eval")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", action="append", help="a swept key, Hydra style (repeatable: the cells are the product)")
    p.add_argument("--max-per-category", type=int, default=2, help="eval.max_per_category (11 categories)")
    p.add_argument("--max-benign", type=int, default=6, help="eval.max_benign")
    p.add_argument("--max-utility", type=int, default=6, help="eval.max_utility")
    p.add_argument("--new-tokens", type=int, default=32, help="eval.max_new_tokens")
    p.add_argument("--max-steps", type=int, default=4, help="train.max_steps of each cell")
    p.add_argument("--align-safety", type=int, default=24, help="alignment: first N safety examples")
    p.add_argument("--align-benign", type=int, default=24, help="alignment: first N benign examples")
    p.add_argument("--align-epochs", type=int, default=1, help="alignment epochs")
    p.add_argument("--model-path", default=None, help="a local HF model dir instead of the embedded model")
    p.add_argument("--workdir", default=None, help="keep run dirs, caches and logs here (default: a temp dir)")
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every cell")
    args = p.parse_args(argv)
    args.cells = args.cells or ["seed=0,1,2,3"]
    return args


def sweep_cells(specs: list[str]) -> list[list[str]]:
    """`key=a,b` specs -> one override list per cell (their product)."""
    axes = [[f"{key}={value}" for value in values.split(",")] for key, values in (s.split("=", 1) for s in specs)]
    return [list(cell) for cell in itertools.product(*axes)]


def size_overrides(args: argparse.Namespace) -> list[str]:
    sizes = [
        f"eval.max_per_category={args.max_per_category}",
        f"eval.max_benign={args.max_benign}",
        f"eval.max_utility={args.max_utility}",
        f"eval.max_new_tokens={args.new_tokens}",
        f"train.max_steps={args.max_steps}",
        "task_name=bench_sweep",
    ]
    if args.model_path:
        return [*model_overrides(args.model_path), *sizes]
    return [
        *sizes,
        f"model.alignment.data.0.limit={args.align_safety}",
        f"model.alignment.data.1.limit={args.align_benign}",
        f"model.alignment.train.num_train_epochs={args.align_epochs}",
    ]


def counted(counts: dict):
    """Count what is really computed: every cache fill by kind, every evaluation by side."""
    from fts.core.cache import Cache
    from fts.stages.evaluation import Evaluator

    build, generate = Cache.build, Evaluator.generate

    def counting_build(self, kind, material, fill):
        def counting_fill(tmp):
            counts[f"built {kind}"] = counts.get(f"built {kind}", 0) + 1
            return fill(tmp)

        return build(self, kind, material, counting_fill)

    def counting_generate(self, model, tokenizer, prompts, desc):
        side = "baseline" if desc.startswith("baseline") else "finetuned"
        counts[f"evaluated {side}"] = counts.get(f"evaluated {side}", 0) + 1
        return generate(self, model, tokenizer, prompts, desc)

    Cache.build, Evaluator.generate = counting_build, counting_generate


def worker(args: argparse.Namespace) -> None:
    """One sweep, cells one after another in this process; writes result.json into its mode's dir."""
    import logging

    from fts.run import run

    logging.basicConfig(level=logging.INFO)
    mode_dir = Path(args.workdir) / args.worker
    cache = [f"cache.dir={mode_dir / 'cache'}", f"cache.enabled={str(args.worker == 'cached').lower()}"]
    counts: dict[str, int] = {}
    counted(counts)
    stages = dict.fromkeys(STAGES, 0.0)
    for k, cell in enumerate(sweep_cells(args.cells)):
        out = mode_dir / "runs" / str(k)
        started = time.perf_counter()
        run(compose_run([*size_overrides(args), *cache, *args.overrides, *cell], out))
        timings = json.loads((out / "manifest.json").read_text())["timings_s"]
        for stage in STAGES:
            stages[stage] += timings.get(stage, 0.0)
        print(
            f"bench: {args.worker} cell {k} ({' '.join(cell)}) took {time.perf_counter() - started:.1f} s", flush=True
        )
    (mode_dir / "result.json").write_text(json.dumps({"counts": counts, "stages": stages}))


def run_sweep(args: argparse.Namespace, argv: list[str], mode: str, workdir: Path) -> dict:
    (workdir / mode).mkdir(parents=True, exist_ok=True)
    log_path = workdir / mode / "worker.log"
    cmd = [sys.executable, __file__, *argv, "--worker", mode, "--workdir", str(workdir)]
    print(f"running the {mode} sweep (log: {log_path}) ...", flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = log_path.read_text().splitlines()[-30:]
        raise SystemExit(f"the {mode} sweep failed ({done.returncode}); end of {log_path}:\n" + "\n".join(tail))
    return {**json.loads((workdir / mode / "result.json").read_text()), "wall": wall}


def report(args: argparse.Namespace, results: dict[str, dict]) -> dict:
    cells = sweep_cells(args.cells)
    cached, uncached = results["cached"], results["uncached"]
    print(f"\nsweep: {len(cells)} cells ({' / '.join(args.cells)}); overrides: {' '.join(size_overrides(args))}")
    print(f"  {'':<34} {'cached (empty cache)':>22} {'cache.enabled=false':>22}")
    print(f"  {'wall time (s)':<34} {cached['wall']:>22.1f} {uncached['wall']:>22.1f}")
    keys = sorted(set(cached["counts"]) | set(uncached["counts"]))
    for key in keys:
        print(f"  {key:<34} {cached['counts'].get(key, 0):>22} {uncached['counts'].get(key, 0):>22}")
    for stage in STAGES:
        name = f"sum of cells' {stage} (s)"
        print(f"  {name:<34} {cached['stages'][stage]:>22.1f} {uncached['stages'][stage]:>22.1f}")
    ratio = cached["wall"] / uncached["wall"]
    baselines = cached["counts"].get("evaluated baseline", 0)
    print(f"wall time ratio cached / uncached: {ratio:.2f} (target <= 0.7)")
    print(
        f"baseline evaluations computed: cached {baselines}, uncached {uncached['counts'].get('evaluated baseline', 0)}"
    )
    return {"ratio": ratio, "baselines_cached": baselines}


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fts-bench-sweep-"))
    try:
        results = {mode: run_sweep(args, argv, mode, workdir) for mode in MODES}
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return report(args, results)


if __name__ == "__main__":
    main()
