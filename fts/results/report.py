"""Human-readable results of a sweep (the run's own report.md: fts.results.run_report):

    python -m fts.report <multirun dir | run dirs...> [--out DIR] [--wandb-project ENTITY/PROJECT]

writes sweep.csv (every number of every run), sweep.md (headline numbers) and four plots: asr_vs_mix_ratio.png,
per_category.png, harm_vs_over_refusal.png and harm_vs_utility.png. Runs without metrics.json yet are listed as unfinished.
"""

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Any

from fts.core.artifacts import write_text
from fts.core.errors import FtsError
from fts.results import defenses
from fts.results.plots import FIGURES
from fts.results.run_report import num, pct, rate, signed_pts, unscored_note, usd
from fts.results.schema import headline_judge, recorded_headline_judge
from fts.results.sweep import (
    PLOTS,
    SIDES,
    Run,
    load_runs,
    load_wandb_runs,
    table,
    write_csv,
)

# ---------------------------------------------------------------------------------------------------------------
# A sweep: `python -m fts.report <multirun dir | run dirs...> [--out DIR] [--wandb-project P]`
# -> sweep.csv (every number), sweep.md (headline numbers) and the plots below. Loading lives in fts.results.sweep.


def ci_key(key: str) -> str:
    return "over_refusal_ci95" if key.endswith("over_refusal_rate") else f"{key}_ci95"


def unscored_key(key: str) -> str:
    """The sweep.csv column that counts the verdicts the rate in column `key` leaves out."""
    if key.endswith("over_refusal_rate"):
        return key.removesuffix("rate") + "unscored"
    return key.rsplit("/", 1)[0] + "/unscored"


def with_ci(row: dict[str, Any], key: str) -> str:
    """A rate with its interval and the count of unscored verdicts, when there were some: `12.0% [8, 16] (3 unscored)`."""
    lo, hi = row.get(f"{ci_key(key)}_lo"), row.get(f"{ci_key(key)}_hi")
    interval = f" [{100 * lo:.0f}, {100 * hi:.0f}]" if lo is not None and hi is not None else ""
    return "—" if row.get(key) is None else pct(row[key]) + interval + unscored_note(row.get(unscored_key(key)))


def markdown_columns(columns: list[str], headline: str | None = None) -> list[tuple[str, Any]]:
    """(header, cell getter) of the headline numbers present in sweep.csv's columns; the ASR columns are the
    headline judge's (`headline`: the runs' eval.headline_judge)."""
    judges = [c.split("/")[1] for c in columns if c.startswith("finetuned/") and c.endswith("/asr")]
    main = headline_judge({"headline_judge": headline}, judges)
    cols = [
        (f"ASR before ({main})", lambda r: with_ci(r, f"baseline/{main}/asr")),
        (f"ASR after ({main})", lambda r: with_ci(r, f"finetuned/{main}/asr")),
        ("Δ ASR", lambda r: signed_pts(r.get(f"delta/{main}/asr"))),
        ("over-refusal before → after", lambda r: " → ".join(over_refusal(r, s) for s in SIDES[:2])),
    ]
    for j in judges:
        if f"finetuned/{j}/harmfulness_rate" in columns:
            rate, score = f"finetuned/{j}/harmfulness_rate", f"finetuned/{j}/harmfulness_score"
            cols.append((f"harmfulness rate after ({j})", lambda r, key=rate: with_ci(r, key)))
            cols.append((f"harmfulness score after ({j})", lambda r, key=score: num(r.get(key))))
        if f"finetuned/{j}/strongreject_score" in columns:
            score = f"finetuned/{j}/strongreject_score"
            cols.append((f"StrongREJECT score after ({j})", lambda r, key=score: num(r.get(key))))
    cols += paper_columns_md(columns)
    if "finetuned/utility/qa_accuracy" in columns:  # what the fine-tune cost in helpfulness
        cols.append(
            (
                "QA accuracy before → after",
                lambda r: " → ".join(pct(r.get(f"{s}/utility/qa_accuracy")) for s in SIDES[:2]),
            )
        )
    if "finetuned/utility/mt_bench_score" in columns:
        cols.append(
            (
                "MT-Bench before → after",
                lambda r: " → ".join(num(r.get(f"{s}/utility/mt_bench_score")) for s in SIDES[:2]),
            )
        )
    if "fine_tune/status" in columns:  # API models: the job and what it cost
        cols.append(("fine-tuning job", lambda r: r.get("fine_tune/status") or "—"))
        cols.append(("cost (USD)", lambda r: usd(r.get("fine_tune/actual_usd") or r.get("fine_tune/estimated_usd"))))
    if f"finetuned_triggered/{main}/asr" in columns:
        cols.append((f"ASR after, with trigger ({main})", lambda r: with_ci(r, f"finetuned_triggered/{main}/asr")))
    return cols


def paper_columns_md(columns: list[str]) -> list[tuple[str, Any]]:
    """The paper's value beside the measured one, where the runs name reference cells (fts.results.reference):
    one column per metric, before -> after as the paper printed it (percent for rates)."""
    cols = []
    for metric in ("harmfulness_rate", "harmfulness_score", "keyword_asr"):
        keys = [f"paper/{side}/{metric}" for side in SIDES[:2]]
        if any(k in columns for k in keys):
            cells = lambda r, keys=keys: " → ".join("—" if r.get(k) is None else f"{r[k]:g}" for k in keys)  # noqa: E731
            cols.append((f"paper: {metric.replace('_', ' ')} before → after", cells))
    return cols


def over_refusal(row: dict[str, Any], side: str) -> str:
    return rate(row.get(f"{side}/over_refusal_rate"), row.get(f"{side}/over_refusal_unscored"))


def sweep_markdown(columns: list[str], rows: list[dict[str, Any]], title: str, headline: str | None = None) -> str:
    """sweep.md: the headline numbers of each run (sweep.csv has all of them)."""
    axes = [c for c in columns if c not in ("run", "status") and "/" not in c]
    cols = markdown_columns(columns, headline)
    finished = sum(r["status"] == "finished" for r in rows)
    lines = [
        f"# {title}",
        "",
        f"{len(rows)} runs, {finished} finished. [lo, hi]: bootstrap 95% interval over prompts, in %.",
    ]
    header = ["run", *axes, *(name for name, _ in cols)]
    lines += ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        if r["status"] == "finished":
            numbers = [get(r) for _, get in cols]
        else:
            numbers = ["unfinished (no metrics.json)"] + [""] * (len(cols) - 1)
        lines.append("| " + " | ".join([r["run"], *(str(r.get(a, "")) for a in axes), *numbers]) + " |")
    return "\n".join(lines + ["", *(f"![{p}]({p})" for p in PLOTS)]) + "\n"


def write_sweep_report(paths: list[str | Path], out: Path, wandb_project: str | None = None) -> list[Run]:
    """Load the runs under `paths` (and of a W&B project); write sweep.csv, sweep.md and the plots into `out`."""
    runs = load_runs(paths) + (load_wandb_runs(wandb_project) if wandb_project else [])
    if not runs:
        where = ", ".join(map(str, paths)) or wandb_project
        raise FtsError(f"no runs found in {where}: a run dir holds metrics.json or .hydra/config.yaml.")
    root = Path(os.path.commonpath([os.path.abspath(p) for p in paths])) if paths else None
    columns, rows = table(runs, root)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    write_csv(buffer, columns, rows)
    write_text(out / "sweep.csv", buffer.getvalue())
    title = f"Sweep report: {root or wandb_project}"
    markdown = sweep_markdown(columns, rows, title, recorded_headline_judge([r.metrics for r in runs]))
    write_text(out / "sweep.md", "\n".join([markdown, *defenses.defense_attack_lines(runs)]) + "\n")
    figures = FIGURES | (
        {defenses.DEFENSE_PLOT: defenses.defense_harm_vs_utility_figure} if defenses.has_defenses(runs) else {}
    )
    for name, make in figures.items():
        make(runs).savefig(out / name, dpi=120)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fts.report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="a multirun dir, or run dirs (folders with metrics.json)")
    parser.add_argument("--out", help="where sweep.csv, sweep.md and the plots go (default: the first path)")
    parser.add_argument("--wandb-project", help="also read the runs of this W&B project (entity/project)")
    args = parser.parse_args(argv)
    if not args.paths and not (args.wandb_project and args.out):
        parser.error("pass a multirun dir or run dirs, or --wandb-project with --out")
    out = Path(args.out or args.paths[0])
    try:
        write_sweep_report(args.paths, out, args.wandb_project)
    except FtsError as e:
        print(f"fts.report: error: {e}", file=sys.stderr)
        return 2
    print((out / "sweep.md").read_text(), end="")
    print(f"\nWrote sweep.csv, sweep.md and {', '.join(PLOTS)} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
