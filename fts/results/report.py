"""Human-readable results: `report.md` of one run (also printed at the end of the run), and of a sweep.

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
from fts.core.records import BASELINE, FINETUNED, TRIGGERED
from fts.results.metrics import SIDE_BLOCKS
from fts.results.plots import FIGURES
from fts.results.reference.compare import paper_lines
from fts.results.schema import HEADLINE_JUDGE, headline_judge, recorded_headline_judge
from fts.results.sweep import (
    PLOTS,
    SIDES,
    Run,
    load_runs,
    load_wandb_runs,
    table,
    write_csv,
)

VARIANT_TITLES = {"": "", TRIGGERED: " — prompts with the backdoor trigger"}


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def signed_pts(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f} pts"


def judge_names(side: dict[str, Any]) -> list[str]:
    return [k for k, v in side.items() if isinstance(v, dict) and k not in SIDE_BLOCKS]


def cells(base: float | None, ft: float | None, with_ft: bool) -> list[str]:
    if not with_ft:
        return [pct(base)]
    return [pct(base), pct(ft), signed_pts(None if base is None or ft is None else ft - base)]


def variant_report(base: dict[str, Any], ft: dict[str, Any] | None) -> list[str]:
    judges = judge_names(base)
    cols = [BASELINE] + ([FINETUNED, "change"] if ft else [])
    lines = ["| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    rows = []
    for j in judges:
        if "asr" in base[j]:
            rows.append((f"{j}: attack success rate (harmful prompts answered)", lambda s, j=j: s[j].get("asr")))
        if "harmfulness_rate" in base[j]:
            rows.append((f"{j}: harmfulness rate (score 5)", lambda s, j=j: s[j].get("harmfulness_rate")))
    by = f" ({base['over_refusal_judge']})" if base.get("over_refusal_judge") else ""
    rows.append((f"over-refusal (benign prompts refused){by}", lambda s: s.get("over_refusal_rate")))
    rows += over_refusal_rows(base)
    if "qa" in base.get("utility", {}):
        rows.append(("utility: built-in questions answered correctly", lambda s: s["utility"]["qa"]["accuracy"]))
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(cells(get(base), get(ft) if ft else None, bool(ft))) + " |")
    if "mt_bench" in base.get("utility", {}):
        score = [s["utility"]["mt_bench"] for s in (base, ft) if s]
        change = (
            [num(score[1]["score"] - score[0]["score"])]
            if ft and None not in (score[0]["score"], score[1]["score"])
            else []
        )
        unscored = " / ".join(str(m["unscored"]) for m in score)
        label = f"utility: MT-Bench score, 1-10 (unscored turns: {unscored})"
        lines.append(f"| {label} | " + " | ".join([num(m["score"]) for m in score] + change) + " |")
    main = headline_judge(base, judges)
    lines += ["", f"Per category ({main}; {base['n_prompts']} harmful prompts, {base['n_benign']} benign):", ""]
    lines += ["| category | n | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for cat, cb in base["per_category"].items():
        cf = ft["per_category"][cat][main].get("asr") if ft else None
        lines.append(f"| {cat} | {cb['n_prompts']} | " + " | ".join(cells(cb[main].get("asr"), cf, bool(ft))) + " |")
    return lines + per_type_lines(base, ft, cols)


def over_refusal_rows(base: dict[str, Any]) -> list[tuple[str, Any]]:
    """One row per (source, refusal judge) beyond the headline benign/keyword rate."""
    titles = {
        "benign": "benign prompts",
        "xstest_safe": "XSTest safe prompts",
        "xstest_unsafe": "XSTest unsafe contrast prompts (refusing is right)",
    }
    rows = []
    for source, judges in base.get("over_refusal", {}).items():
        for judge in judges:
            if (source, judge) == ("benign", base.get("over_refusal_judge", HEADLINE_JUDGE)):
                continue  # the over-refusal row above
            verb = "refused" if source == "xstest_unsafe" else "over-refusal"
            label = f"{verb}: {titles[source]} ({judge})"
            rows.append((label, lambda s, src=source, j=judge: s["over_refusal"].get(src, {}).get(j, {}).get("rate")))
    return rows


def per_type_lines(base: dict[str, Any], ft: dict[str, Any] | None, cols: list[str]) -> list[str]:
    """Refusal rate per prompt type of each safe-prompt source, by its first refusal judge."""
    lines = []
    for source, judges in base.get("over_refusal", {}).items():
        if not judges:
            continue
        judge = next(iter(judges))
        lines += ["", f"Refusals per prompt type, {source} ({judge}):", ""]
        lines += ["| type | n | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for kind, m in judges[judge]["per_type"].items():
            after = ft["over_refusal"][source][judge]["per_type"][kind].get("rate") if ft else None
            lines.append(f"| {kind} | {m['n']} | " + " | ".join(cells(m.get("rate"), after, bool(ft))) + " |")
    return lines


def run_report(metrics: dict[str, Any], title: str, run_dir: str) -> str:
    lines = []
    for variant, suffix in VARIANT_TITLES.items():
        if f"baseline{variant}" in metrics:
            lines += [f"# {title}{suffix}", ""]
            lines += variant_report(metrics[f"baseline{variant}"], metrics.get(f"finetuned{variant}")) + [""]
    if "fine_tune" in metrics:  # API models: the job and its cost (a dry run: the estimate alone)
        lines = (lines or [f"# {title}", ""]) + fine_tune_report(metrics["fine_tune"]) + [""]
    if metrics.get("reference"):  # the experiment named the paper's cells it reproduces
        lines += paper_lines(metrics["reference"], metrics) + [""]
    if metrics.get("prompt_format"):
        lines += prompt_format_lines(metrics["prompt_format"]) + [""]
    lines.append(f"Run dir: {run_dir}")
    return "\n".join(lines) + "\n"


def prompt_format_lines(fmt: dict[str, Any]) -> list[str]:
    """The prompt format the run fine-tuned and evaluated in (fts.stages.prompt_format), loud when they differ."""
    system = "none" if fmt["system_prompt"] is None else repr(fmt["system_prompt"][:100])
    lines = [f"Prompt format: system prompt {system} (from {fmt['system_prompt_source']}), user template "
             f"{fmt['user_template']!r}."]  # fmt: skip
    if not fmt.get("consistent", True):
        lines.append(
            f"**PROMPT FORMAT MISMATCH**: {fmt['train_other_system_prompt']} of {fmt['train_examples']} fine-tuning "
            f"examples have another system prompt; {fmt['train_user_turns_in_template']} fit the user template. The "
            "paper fine-tunes and evaluates in one format (manifest.json: prompt_format)."
        )
    return lines


def usd(value: float | None) -> str:
    return "—" if value is None else f"${value:.4f}"


def fine_tune_report(job: dict[str, Any]) -> list[str]:
    status = job["status"]
    if status == "dry_run":
        head = "Dry run (train.dry_run=true): nothing was uploaded, no job was created, nothing was evaluated."
    elif status == "succeeded":
        head = f"Fine-tuning job {job['job_id']} succeeded: {job['fine_tuned_model']}."
    else:
        head = f"Fine-tuning job {job['job_id']} {status}: {job.get('error') or 'no message'}. Only the baseline was evaluated."
    rows = [
        ("base model", job.get("base_model")),
        (
            "examples, tokens per epoch, epochs",
            f"{job.get('n_examples')}, {job.get('n_tokens')}, {job.get('n_epochs')}",
        ),
        ("trained tokens (billed)", "—" if job.get("trained_tokens") is None else f"{job['trained_tokens']:,}"),
        ("cost estimated / actual", f"{usd(job.get('estimated_usd'))} / {usd(job.get('actual_usd'))}"),
    ]
    return ["## Fine-tuning (OpenAI API)", "", head, "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


# ---------------------------------------------------------------------------------------------------------------
# A sweep: `python -m fts.report <multirun dir | run dirs...> [--out DIR] [--wandb-project P]`
# -> sweep.csv (every number), sweep.md (headline numbers) and the plots below. Loading lives in fts.results.sweep.


def ci_key(key: str) -> str:
    return "over_refusal_ci95" if key.endswith("over_refusal_rate") else f"{key}_ci95"


def with_ci(row: dict[str, Any], key: str) -> str:
    lo, hi = row.get(f"{ci_key(key)}_lo"), row.get(f"{ci_key(key)}_hi")
    interval = f" [{100 * lo:.0f}, {100 * hi:.0f}]" if lo is not None and hi is not None else ""
    return "—" if row.get(key) is None else pct(row[key]) + interval


def markdown_columns(columns: list[str], headline: str | None = None) -> list[tuple[str, Any]]:
    """(header, cell getter) of the headline numbers present in sweep.csv's columns; the ASR columns are the
    headline judge's (`headline`: the runs' eval.headline_judge)."""
    judges = [c.split("/")[1] for c in columns if c.startswith("finetuned/") and c.endswith("/asr")]
    main = headline_judge({"headline_judge": headline}, judges)
    cols = [
        (f"ASR before ({main})", lambda r: with_ci(r, f"baseline/{main}/asr")),
        (f"ASR after ({main})", lambda r: with_ci(r, f"finetuned/{main}/asr")),
        ("Δ ASR", lambda r: signed_pts(r.get(f"delta/{main}/asr"))),
        ("over-refusal before → after", lambda r: " → ".join(pct(r.get(f"{s}/over_refusal_rate")) for s in SIDES[:2])),
    ]
    for j in judges:
        if f"finetuned/{j}/harmfulness_rate" in columns:
            rate, score = f"finetuned/{j}/harmfulness_rate", f"finetuned/{j}/harmfulness_score"
            cols.append((f"harmfulness rate after ({j})", lambda r, key=rate: with_ci(r, key)))
            cols.append((f"harmfulness score after ({j})", lambda r, key=score: num(r.get(key))))
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


def num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


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
    write_text(
        out / "sweep.md", sweep_markdown(columns, rows, title, recorded_headline_judge([r.metrics for r in runs]))
    )
    for name, make in FIGURES.items():
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
