# python experiments/bench/peak_rss.py [--cold | --cache DIR] [-- fts.run overrides...]
# Peak resident memory of the default run: starts `python -m fts.run <overrides>` as a child process, with FTS_CACHE
# set to --cache (default: $FTS_CACHE; --cold: a new empty dir, so the run also materializes and safety-aligns the
# embedded model, the worst case). While it runs, the RSS of its process tree (VmRSS of the child and every
# descendant, from /proc) is summed every 0.2 s; after it exits, getrusage(RUSAGE_CHILDREN).ru_maxrss gives the
# largest single process's peak (its VmHWM). Prints both in GiB against the target (< 4 GiB), the exit code and the
# wall time. The run dir is a temp dir unless an override sets hydra.run.dir.
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT

TARGET_GIB = 4.0
GIB = 1024**3


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own, overrides = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default=os.environ.get("FTS_CACHE"), help="FTS_CACHE of the run")
    p.add_argument("--cold", action="store_true", help="start from a new, empty cache dir")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between /proc polls")
    return p.parse_args(own), overrides


def tree_rss(root: int) -> int:
    """Bytes resident in `root` and all its descendants now (processes that vanish mid-scan are skipped)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(entry.name)] = next(
            (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(rss.get(pid, 0) for pid in tree)


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    scratch = Path(tempfile.mkdtemp(prefix="fts-bench-rss-"))
    env = os.environ.copy()
    cache = scratch / "cache" if args.cold else args.cache
    if cache:
        env["FTS_CACHE"] = str(cache)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides = [*overrides, f"hydra.run.dir={scratch / 'run'}"]
    cmd = [sys.executable, "-m", "fts.run", *overrides]
    print(f"running: FTS_CACHE={env.get('FTS_CACHE', '~/.cache/fts')} {' '.join(cmd[1:])}", flush=True)
    started, peak_tree = time.perf_counter(), 0
    try:
        child = subprocess.Popen(cmd, cwd=ROOT, env=env)
        while child.poll() is None:
            peak_tree = max(peak_tree, tree_rss(child.pid))
            time.sleep(args.interval)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wall = time.perf_counter() - started
    peak_process = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    peak = max(peak_process, peak_tree)
    print(f"\nexit code: {child.returncode}; wall time: {wall:.0f} s")
    print(f"peak RSS, largest process (getrusage ru_maxrss = VmHWM): {peak_process / GIB:.2f} GiB")
    print(f"peak RSS, process tree summed (polled every {args.interval:g} s): {peak_tree / GIB:.2f} GiB")
    print(
        f"peak RSS: {peak / GIB:.2f} GiB (target < {TARGET_GIB:g} GiB: {'met' if peak < TARGET_GIB * GIB else 'MISSED'})"
    )
    return {"peak_gib": peak / GIB, "returncode": child.returncode}


if __name__ == "__main__":
    main()
