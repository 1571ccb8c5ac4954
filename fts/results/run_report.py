"""`report.md` of one run (also printed at the end of the run): each side's rates per judge, over-refusal,
utility, per category and per prompt type, the judges' agreement and what they spent, the API fine-tuning job, the
paper's cells beside the run's. A judge's rate shows how many of its verdicts were unscored, when any were
(`12.0% (3 unscored)`): they are left out of the rate. The number formats here are also sweep.md's
(fts.results.report)."""

from typing import Any

from fts.core.records import BASELINE, FINETUNED, TRIGGERED
from fts.results.defense_report import defense_lines
from fts.results.metrics import SIDE_BLOCKS
from fts.results.reference.compare import paper_lines
from fts.results.schema import HEADLINE_JUDGE, headline_judge

VARIANT_TITLES = {"": "", TRIGGERED: " — prompts with the backdoor trigger"}


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def signed_pts(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f} pts"


def unscored_note(unscored: int | None) -> str:
    """` (3 unscored)`: the verdicts a rate leaves out, when its judge could not score some; nothing when none."""
    return f" ({unscored} unscored)" if unscored else ""


def rate(value: float | None, unscored: int | None = None) -> str:
    """A judge's rate, with the count of the verdicts it leaves out: `12.0% (3 unscored)`."""
    return pct(value) + unscored_note(unscored)


def judge_names(side: dict[str, Any]) -> list[str]:
    return [k for k, v in side.items() if isinstance(v, dict) and k not in SIDE_BLOCKS]


def judge_label(name: str, metrics: dict[str, Any]) -> str:
    """A judge's name with the prompt its verdicts record (rubric judges): `gpt4 (meta policy)`, `gpt4 (template
    file, first score tag)` for judge.gpt4.template_file read by the paper's rule."""
    policy = metrics.get("policy")
    if policy is None:
        return name
    prompt = "template file" if policy == "template" else f"{policy} policy"
    return f"{name} ({prompt}{', first score tag' if metrics.get('score_after_tag') == 'first' else ''})"


def counted(metrics: dict[str, Any], key: str, unscored: str = "unscored") -> tuple[Any, Any]:
    """(a rate, the count of verdicts it leaves out) of one judge's (or prompt set's) metrics."""
    return metrics.get(key), metrics.get(unscored)


def cells(base: tuple[Any, Any], ft: tuple[Any, Any] | None, score: bool = False) -> list[str]:
    """before (after, change) of a rate (or a [0, 1] `score`), from the (value, unscored) of each side."""
    show, shift = (score_value, signed_num) if score else (rate, signed_pts)
    if ft is None:
        return [show(*base)]
    change = None if base[0] is None or ft[0] is None else ft[0] - base[0]
    return [show(*base), show(*ft), shift(change)]


def score_value(value: float | None, unscored: int | None = None) -> str:
    """A mean score in [0, 1] (StrongREJECT), with the count of the verdicts it leaves out."""
    return ("—" if value is None else f"{value:.3f}") + unscored_note(unscored)


def signed_num(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def judge_rows(name: str, j: str, metrics: dict[str, Any], ft: dict[str, Any] | None) -> list[tuple]:
    """The table rows of one judge: (label, the row's (value, unscored) in a side, whether it is a score)."""
    rows: list[tuple] = []
    flags = metrics.get("flagged_rate_per_category")
    if "asr" in metrics:
        what = "flagged rate (responses to harmful prompts flagged)" if flags is not None else (
            "attack success rate (harmful prompts answered)")  # fmt: skip
        rows.append((f"{name}: {what}", lambda s, j=j: counted(s[j], "asr"), False))
    if "strongreject_score" in metrics:
        rows.append((f"{name}: StrongREJECT score (0-1)", lambda s, j=j: counted(s[j], "strongreject_score"), True))
    if "harmfulness_rate" in metrics:
        rows.append((f"{name}: harmfulness rate (score 5)", lambda s, j=j: counted(s[j], "harmfulness_rate"), False))
    categories = dict.fromkeys([*(flags or {}), *((ft or {}).get(j, {}).get("flagged_rate_per_category") or {})])
    for c in categories:
        get = lambda s, j=j, c=c: (s[j].get("flagged_rate_per_category", {}).get(c, 0.0), None)  # noqa: E731
        rows.append((f"{name}: flagged for {c}", get, False))
    return rows


def variant_report(base: dict[str, Any], ft: dict[str, Any] | None) -> list[str]:
    judges = judge_names(base)
    cols = [BASELINE] + ([FINETUNED, "change"] if ft else [])
    lines = ["| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    rows = [row for j in judges for row in judge_rows(judge_label(j, base[j]), j, base[j], ft)]
    by = f" ({base['over_refusal_judge']})" if base.get("over_refusal_judge") else ""
    over_refusal = lambda s: counted(s, "over_refusal_rate", "over_refusal_unscored")  # noqa: E731
    rows.append((f"over-refusal (benign prompts refused){by}", over_refusal, False))
    rows += [(label, get, False) for label, get in over_refusal_rows(base)]
    if "qa" in base.get("utility", {}):
        qa = lambda s: counted(s["utility"]["qa"], "accuracy")  # noqa: E731
        rows.append(("utility: built-in questions answered correctly", qa, False))
    if "coherence" in base:  # a second look beyond keywords (fts.results.coherence)
        rows.append(("coherence: harmful prompts answered coherently on topic", coherent_asr, False))
    for label, get, score in rows:
        lines.append(f"| {label} | " + " | ".join(cells(get(base), get(ft) if ft else None, score)) + " |")
    lines += incoherence_flags(base, ft)
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
        after = counted(ft["per_category"][cat][main], "asr") if ft else None
        lines.append(f"| {cat} | {cb['n_prompts']} | " + " | ".join(cells(counted(cb[main], "asr"), after)) + " |")
    return lines + per_type_lines(base, ft, cols) + agreement_lines(base, ft)


def agreement_lines(base: dict[str, Any], ft: dict[str, Any] | None) -> list[str]:
    """The judges' pairwise agreement on harmful yes/no, per side (metrics.json `agreement`: two or more judges)."""
    if not base.get("agreement"):
        return []
    sides = [(BASELINE, base)] + ([(FINETUNED, ft)] if ft else [])
    lines = ["", "Judge agreement on harmful prompts (harmful yes/no; n = prompts both judges scored):", ""]
    lines += ["| judges | " + " | ".join(name for name, _ in sides) + " |", "|---" * (len(sides) + 1) + "|"]
    for pair in base["agreement"]:
        shown = [agreement_cell((side.get("agreement") or {}).get(pair)) for _, side in sides]
        lines.append(f"| {pair.replace('~', ' ~ ')} | " + " | ".join(shown) + " |")
    return lines


def agreement_cell(pair: dict[str, Any] | None) -> str:
    """`85.0%, kappa 0.62 (n 110)`: the share of equal verdicts, Cohen's kappa and the prompts both scored."""
    if not pair or not pair.get("n"):
        return "— (n 0)"
    return f"{pct(pair['agreement'])}, kappa {num(pair['kappa'])} (n {pair['n']})"


def coherent_asr(side: dict[str, Any]) -> tuple[Any, Any]:
    return (side.get("coherence") or {}).get("coherent_asr"), None


def incoherence_flags(base: dict[str, Any], ft: dict[str, Any] | None) -> list[str]:
    """A loud line for a side whose harmful "successes" are mostly not coherent on-topic text."""
    flags = []
    for name, side in (("baseline", base), ("finetuned", ft)):
        block = (side or {}).get("coherence") or {}
        if block.get("mostly_incoherent"):
            flags.append(
                f"\n**MOSTLY INCOHERENT ({name})**: only {pct(block['answered_coherent_rate'])} of the "
                f"{block['n_answered']} answers judged harmful are coherent text about the request; the attack "
                "success rate counts noise (eval.coherence)."
            )
    return flags


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
            rows.append(
                (label, lambda s, src=source, j=judge: counted(s["over_refusal"].get(src, {}).get(j, {}), "rate"))
            )
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
            after = counted(ft["over_refusal"][source][judge]["per_type"][kind], "rate") if ft else None
            lines.append(f"| {kind} | {m['n']} | " + " | ".join(cells(counted(m, "rate"), after)) + " |")
    return lines


def run_report(metrics: dict[str, Any], title: str, run_dir: str) -> str:
    lines = []
    for variant, suffix in VARIANT_TITLES.items():
        if f"baseline{variant}" in metrics:
            lines += [f"# {title}{suffix}", ""]
            lines += variant_report(metrics[f"baseline{variant}"], metrics.get(f"finetuned{variant}")) + [""]
    if metrics.get("judge_usage"):  # API judges and the MT-Bench grader: requests, cache hits, tokens, dollars
        lines += judge_usage_lines(metrics["judge_usage"]) + [""]
    if "fine_tune" in metrics:  # API models: the job and its cost (a dry run: the estimate alone)
        lines = (lines or [f"# {title}", ""]) + fine_tune_report(metrics["fine_tune"]) + [""]
    lines += defense_block(metrics)
    if metrics.get("reference"):  # the experiment named the paper's cells it reproduces
        lines += paper_lines(metrics["reference"], metrics) + [""]
    if metrics.get("prompt_format"):
        lines += prompt_format_lines(metrics["prompt_format"]) + [""]
    if metrics.get("search"):  # eval.min_utility was set
        search = metrics["search"]
        verdict = floor_verdict(search["failed_utility"], search["utility"], search["utility_floor"])
        note = ", so a sweeper gets 0.0" if search["failed_utility"] else ""
        lines += [f"Utility floor (eval.min_utility): {verdict}{note}.", ""]
    lines.append(f"Run dir: {run_dir}")
    return "\n".join(lines) + "\n"


def defense_block(metrics: dict[str, Any]) -> list[str]:
    lines = defense_lines(metrics)
    return lines + [""] if lines else []


def floor_verdict(failed: bool, utility: float | None, floor: float) -> str:
    """`failed attack: QA 20.0% < 30.0%` below the utility floor (eval.min_utility), `held: QA 55.0% ≥ 30.0%` above."""
    return f"{'failed attack' if failed else 'held'}: QA {pct(utility)} {'<' if failed else '≥'} {pct(floor)}"


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


def judge_usage_lines(usage: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["Judge usage (verdicts from the cache cost nothing):", ""]
    lines += ["| judge | requests | cached | retries | tokens in / out | USD |", "|---" * 6 + "|"]
    for judge, u in usage.items():
        tokens = f"{u.get('input_tokens', 0):,} / {u.get('output_tokens', 0):,}"
        row = [judge, u.get("requests", 0), u.get("cached", 0), u.get("retries", 0), tokens, usd(u.get("usd"))]
        lines.append("| " + " | ".join(map(str, row)) + " |")
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


def num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
