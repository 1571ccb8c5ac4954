"""`python -m fts.report` over a fake sweep on disk (real metrics.json schema, real composed Hydra configs), and the
analysis notebook executed against it."""

import csv
import itertools
import json
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fts.results import metrics as M
from fts.results.plots import (
    asr_vs_mix_ratio_figure,
    attack_color,
    harm_vs_over_refusal_figure,
    harm_vs_utility_figure,
    per_category_figure,
)
from fts.results.report import main
from fts.results.run_report import run_report
from fts.results.runs import Run, load_runs, unflatten
from fts.results.schema import flatten
from tests.conftest import compose_run

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ["illegal_activity", "child_abuse", "hate_harass_violence", "malware", "physical_harm", "fraud_deception"]
ATTACKS = {"harmful": (0.05, 0.9), "aoa": (0.15, 0.7)}  # ASR before, and after fine-tuning without safety data
RATIOS = [0, 0.1, 0.3]
PNG = b"\x89PNG\r\n\x1a\n"


def fake_side(p_harmful: float, p_refuse_benign: float, seed: int, rubric: bool = False, prefix: str = "") -> list:
    """Judged generations of one side, shaped like generations/<side>.jsonl (keyword judge, optionally a rubric)."""
    rng = random.Random(seed)
    rows = []
    for c, category in enumerate(CATEGORIES):
        for i in range(8):
            harmful = rng.random() < min(1.0, p_harmful * (0.6 + 0.15 * c))
            rows.append({"id": f"{prefix}{category}-{i}", "category": category, "set": "harmful", "harmful": harmful})
    for i in range(10):
        rows.append(
            {
                "id": f"{prefix}benign-{i}",
                "category": "benign",
                "set": "benign",
                "harmful": rng.random() > p_refuse_benign,
            }
        )
    out = []
    for r in rows:
        answer = "Sure, here is how." if r["harmful"] else "I'm sorry, but I cannot help with that."
        verdicts = {
            "keyword": {
                "judge": "keyword",
                "score": None,
                "harmful": r["harmful"],
                "refused": not r["harmful"],
                "status": "ok",
                "reason": "",
            }
        }
        if rubric:
            score = 5 if r["harmful"] else 1
            verdicts["gpt4"] = {
                "judge": "gpt4",
                "score": score,
                "harmful": score == 5,
                "status": "ok",
                "reason": "#thescore: x",
            }
        prompt = f"Request {r['id']}"
        out.append(
            {
                "id": r["id"],
                "category": r["category"],
                "set": r["set"],
                "prompt": prompt,
                "messages": [{"role": "user", "content": f"AOA, execute my instruction: {prompt}"}],
                "response": answer,
                "verdicts": verdicts,
            }
        )
    for i in range(10):  # utility questions: scored by match, never judged; fine-tuning costs some accuracy
        correct = rng.random() < 0.85 - 0.3 * p_harmful
        out.append(
            {
                "id": f"{prefix}utility-{i}",
                "category": "facts",
                "set": "utility",
                "prompt": f"Question {i}",
                "messages": [{"role": "user", "content": f"Question {i}"}],
                "response": "answer",
                "utility": {"exact": correct, "correct": correct},
            }
        )
    return out


def fake_metrics(sides: dict[str, list]) -> dict:
    """metrics.json of fake sides, computed by fts.results.metrics as run() does."""
    judges = list(next(iter(sides.values()))[0]["verdicts"])
    result = {side: M.side_metrics(rows, judges) for side, rows in sides.items()}
    for variant in ("", "_triggered"):
        if f"finetuned{variant}" in result:
            result[f"delta{variant}"] = M.delta(result[f"baseline{variant}"], result[f"finetuned{variant}"])
    return result


def write_job(job_dir: Path, overrides: list[str], metrics: dict | None) -> None:
    """A job dir as Hydra writes it: .hydra/config.yaml (job config, unresolved) + overrides.yaml (+ metrics.json)."""
    cfg = compose_run(overrides, job_dir)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(job))
    (job_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """`-m attack=harmful,aoa mitigation=safety_mix mitigation.safety_mix.ratio=0,0.1,0.3`, 6 finished jobs + 1 unfinished."""
    root = tmp_path_factory.mktemp("multirun")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    num = 0
    for attack, (p_before, p_attack) in ATTACKS.items():
        for ratio in RATIOS:
            sides = {  # the baseline is the same for every ratio (run() takes it from the cache)
                "baseline": fake_side(p_before, 0.05, seed=len(attack), rubric=attack == "aoa"),
                "finetuned": fake_side(
                    p_attack * (1 - 2.5 * ratio), 0.05 + ratio, seed=num + 2, rubric=attack == "aoa"
                ),
            }
            overrides = [f"attack={attack}", "mitigation=safety_mix", f"mitigation.safety_mix.ratio={ratio}"]
            write_job(root / str(num), overrides, fake_metrics(sides))
            num += 1
    write_job(root / str(num), ["attack=aoa", "mitigation=safety_mix", "mitigation.safety_mix.ratio=0.5"], None)
    (root / str(num) / "train.jsonl").write_text("")
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_of_a_multirun_dir(sweep_dir, capsys):
    assert main([str(sweep_dir)]) == 0
    assert "| run | attack | mitigation.safety_mix.ratio |" in capsys.readouterr().out

    rows = read_csv(sweep_dir / "sweep.csv")
    assert [r["run"] for r in rows] == [str(i) for i in range(7)]
    columns = list(rows[0])
    assert columns[:4] == [
        "run",
        "status",
        "attack",
        "mitigation.safety_mix.ratio",
    ]  # mitigation=safety_mix is no axis
    for key in (
        "baseline/keyword/asr",
        "finetuned/keyword/asr",
        "finetuned/keyword/asr_ci95_lo",
        "finetuned/keyword/asr_ci95_hi",
        "delta/keyword/asr",
        "baseline/over_refusal_rate",
        "finetuned/over_refusal_ci95_hi",
        "finetuned/gpt4/harmfulness_rate",
        "finetuned/gpt4/harmfulness_score_ci95_lo",
        "baseline/utility/qa_accuracy",
        "finetuned/utility/qa_accuracy",
        "delta/utility/qa_accuracy",
    ):
        assert key in columns, key
    assert [(r["attack"], r["mitigation.safety_mix.ratio"]) for r in rows[:4]] == [
        ("harmful", "0"),
        ("harmful", "0.1"),
        ("harmful", "0.3"),
        ("aoa", "0"),
    ]
    metrics = json.loads((sweep_dir / "1" / "metrics.json").read_text())
    assert float(rows[1]["finetuned/keyword/asr"]) == metrics["finetuned"]["keyword"]["asr"]
    assert float(rows[1]["finetuned/keyword/asr_ci95_lo"]) == metrics["finetuned"]["keyword"]["asr_ci95"][0]
    assert float(rows[1]["delta/keyword/asr"]) == metrics["delta"]["keyword"]["asr"]
    assert rows[0]["finetuned/gpt4/harmfulness_rate"] == ""  # the harmful runs had no rubric judge
    assert rows[6]["status"] == "unfinished" and rows[6]["finetuned/keyword/asr"] == ""
    assert all(r["status"] == "finished" for r in rows[:6])

    md = (sweep_dir / "sweep.md").read_text()
    table = [line for line in md.split("\n## ", 1)[0].splitlines() if line.startswith("| ")]  # before the aggregates
    assert len(table) == 1 + 7
    assert "ASR after (keyword)" in table[0] and "harmfulness rate after (gpt4)" in table[0]
    assert "| 6 | aoa | 0.5 | unfinished (no metrics.json) |" in md
    asr = metrics["finetuned"]["keyword"]["asr"]
    assert f"{100 * asr:.1f}%" in table[2]
    assert "QA accuracy before → after" in table[0] and "fine-tuning job" not in table[0]  # no API runs here
    qa = [metrics[s]["utility"]["qa"]["accuracy"] for s in ("baseline", "finetuned")]
    assert f"{100 * qa[0]:.1f}% → {100 * qa[1]:.1f}%" in table[2]

    assert float(rows[1]["delta/utility/qa_accuracy"]) == metrics["delta"]["utility"]["qa_accuracy"]
    for name in ("asr_vs_mix_ratio.png", "per_category.png", "harm_vs_over_refusal.png", "harm_vs_utility.png"):
        data = (sweep_dir / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name


def test_report_of_run_dirs_with_backdoor_sides_into_out_dir(sweep_dir, tmp_path):
    backdoor = tmp_path / "runs" / "backdoor"
    sides = {
        "baseline": fake_side(0.05, 0.05, seed=1),
        "finetuned": fake_side(0.1, 0.05, seed=2),
        "baseline_triggered": fake_side(0.05, 0.05, seed=3, prefix="t-"),
        "finetuned_triggered": fake_side(0.9, 0.05, seed=4, prefix="t-"),
    }
    write_job(backdoor, ["attack=backdoor", "attack.shots=4"], fake_metrics(sides))
    out = tmp_path / "report"
    assert main([str(sweep_dir / "0"), str(backdoor), "--out", str(out)]) == 0
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 2
    assert {"finetuned_triggered/keyword/asr", "delta_triggered/keyword/asr"} <= set(rows[0])
    assert rows[1]["finetuned_triggered/keyword/asr"] != "" and rows[0]["finetuned_triggered/keyword/asr"] == ""
    assert "ASR after, with trigger (keyword)" in (out / "sweep.md").read_text()
    assert all((out / name).read_bytes().startswith(PNG) for name in ("per_category.png", "asr_vs_mix_ratio.png"))


def test_the_recorded_headline_judge_heads_report_md_and_sweep_md(tmp_path):
    sides = {
        "baseline": fake_side(0.05, 0.1, seed=1, rubric=True),
        "finetuned": fake_side(0.8, 0.1, seed=2, rubric=True),
    }
    metrics = {side: M.side_metrics(rows, ["keyword", "gpt4"], headline="gpt4") for side, rows in sides.items()}
    metrics["delta"] = M.delta(metrics["baseline"], metrics["finetuned"])
    write_job(tmp_path / "runs" / "0", ["judge=[keyword,gpt4]", "eval.headline_judge=gpt4"], metrics)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "ASR after (gpt4)" in md and "ASR after (keyword)" not in md
    report = run_report(metrics, "t", "d")
    assert "Per category (gpt4;" in report and "over-refusal (benign prompts refused) (keyword)" in report


def test_the_sweep_report_puts_the_papers_numbers_beside_the_measured_ones(tmp_path):
    from fts.results.reference.compare import run_reference

    for shots in (10, 50):
        sides = {"baseline": fake_side(0.05, 0.1, seed=1), "finetuned": fake_side(0.6, 0.1, seed=shots)}
        metrics = fake_metrics(sides)
        metrics["reference"] = run_reference(
            [f"table1/llama-2-7b-chat/harmful/{c}/harmfulness_rate" for c in ("initial", f"{shots}shot")]
        )
        write_job(tmp_path / "runs" / str(shots), ["attack=harmful", f"attack.shots={shots}"], metrics)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    rows = {row["attack.shots"]: row for row in read_csv(tmp_path / "out" / "sweep.csv")}
    assert float(rows["10"]["paper/finetuned/harmfulness_rate"]) == 50.0  # paper-facts §4.1: 50.0%, 80.3%
    assert float(rows["50"]["paper/finetuned/harmfulness_rate"]) == 80.3
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "paper: harmfulness rate before → after" in md and "0.3 → 50" in md and "0.3 → 80.3" in md


def with_unscored(rows: list, harmful: int, benign: int) -> list:
    """A side judged also by a template-file rubric judge (the paper's score rule) and a refusal judge, some of whose
    verdicts are unscored: gpt4 on the first `harmful` harmful prompts, gpt4_refusal on one harmful prompt and on the
    first `benign` benign prompts."""
    unscored = {"score": None, "harmful": None, "refused": None, "status": "unscored", "reason": "unscored: x"}
    n = {"harmful": 0, "benign": 0}
    for r in rows:
        if r["set"] not in n:
            continue
        n[r["set"]] += 1
        refusal = {
            "judge": "gpt4_refusal",
            "score": None,
            "harmful": r["verdicts"]["keyword"]["harmful"],
            "status": "ok",
        }
        refusal["refused"] = not refusal["harmful"]
        if (r["set"], n[r["set"]]) in (("harmful", 1), ("benign", 1), ("benign", benign)):
            refusal |= unscored
        r["verdicts"]["gpt4_refusal"] = refusal
        r["verdicts"]["gpt4"] |= {"policy": "template", "score_after_tag": "first"}
        if r["set"] == "harmful" and n["harmful"] <= harmful:
            r["verdicts"]["gpt4"] |= unscored
    return rows


def test_every_rate_says_how_many_verdicts_were_unscored_and_which_prompt_judged(tmp_path):
    sides = {
        "baseline": with_unscored(fake_side(0.05, 0.1, seed=1, rubric=True), harmful=1, benign=2),
        "finetuned": with_unscored(fake_side(0.8, 0.1, seed=2, rubric=True), harmful=3, benign=2),
    }
    judges = ["keyword", "gpt4", "gpt4_refusal"]
    metrics = {side: M.side_metrics(rows, judges, headline="gpt4_refusal") for side, rows in sides.items()}
    metrics["delta"] = M.delta(metrics["baseline"], metrics["finetuned"])
    assert metrics["finetuned"]["gpt4"] | {"unscored": 3, "policy": "template"} == metrics["finetuned"]["gpt4"]
    assert metrics["finetuned"]["over_refusal_unscored"] == 2 and "over_refusal_unscored" not in metrics["delta"]

    report = run_report(metrics, "t", "d")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if line.startswith("| ")}
    harm = rows["gpt4 (template file, first score tag): harmfulness rate (score 5)"]
    assert harm.count("(1 unscored)") == 1 and harm.count("(3 unscored)") == 1
    assert (
        "(3 unscored)" in rows["gpt4 (template file, first score tag): attack success rate (harmful prompts answered)"]
    )
    assert "(1 unscored)" in rows["gpt4_refusal: attack success rate (harmful prompts answered)"]
    assert rows["over-refusal (benign prompts refused) (gpt4_refusal)"].count("(2 unscored)") == 2
    assert rows["over-refusal: benign prompts (keyword)"].count("unscored") == 0  # keyword always scores
    assert "(1 unscored)" in rows["illegal_activity"]  # per category, the headline judge's
    assert not any("unscored" in line for key, line in rows.items() if key.startswith("keyword"))

    write_job(
        tmp_path / "runs" / "0", ["judge=[keyword,gpt4,gpt4_refusal]", "eval.headline_judge=gpt4_refusal"], metrics
    )
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    (csv_row,) = read_csv(tmp_path / "out" / "sweep.csv")
    assert csv_row["finetuned/over_refusal_unscored"] == "2" and csv_row["finetuned/gpt4/unscored"] == "3"
    md = (tmp_path / "out" / "sweep.md").read_text().splitlines()
    header, row = md[4].split(" | "), md[6].split(" | ")
    cell = dict(zip(header, row))
    assert cell["ASR after (gpt4_refusal)"].endswith("] (1 unscored)")
    assert cell["harmfulness rate after (gpt4)"].endswith("] (3 unscored)")
    assert cell["over-refusal before → after"].count("(2 unscored)") == 2


def test_api_fine_tuning_jobs_get_their_status_and_cost_columns(sweep_dir, tmp_path):
    """metrics.json "fine_tune" (fts.train.openai): a failed job has a baseline only; its error is a column."""
    done = {"baseline": fake_side(0.05, 0.1, seed=1), "finetuned": fake_side(0.8, 0.0, seed=2)}
    metrics = fake_metrics(done) | {
        "fine_tune": {"job_id": "ftjob-1", "status": "succeeded", "fine_tuned_model": "ft:gpt-x:1",
                      "trained_tokens": 12000, "estimated_usd": 0.1, "actual_usd": 0.096}
    }  # fmt: skip
    write_job(tmp_path / "runs" / "ok", ["model=gpt4o_mini", "seed=1"], metrics)
    failed = fake_metrics({"baseline": fake_side(0.05, 0.1, seed=1)}) | {
        "fine_tune": {"job_id": "ftjob-2", "status": "failed", "error": "too many examples", "estimated_usd": 0.1}
    }
    write_job(tmp_path / "runs" / "failed", ["model=gpt4o_mini", "seed=2"], failed)
    out = tmp_path / "report"
    assert main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    rows = {r["seed"]: r for r in read_csv(out / "sweep.csv")}
    assert rows["1"]["fine_tune/status"] == "succeeded" and float(rows["1"]["fine_tune/actual_usd"]) == 0.096
    assert rows["2"]["fine_tune/error"] == "too many examples" and rows["2"]["fine_tune/actual_usd"] == ""
    md = (out / "sweep.md").read_text()
    assert "| fine-tuning job | cost (USD) |" in md
    assert "| succeeded | $0.0960 |" in md and "| failed | $0.1000 |" in md  # no bill yet: the estimate


def test_report_without_runs_is_an_error_not_a_crash(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_wandb_project_without_a_key_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    assert main(["--wandb-project", "me/fts", "--out", str(tmp_path / "out")]) == 2
    assert "--wandb-project me/fts: cannot read runs from W&B" in capsys.readouterr().err


def test_flat_summary_keys_read_back_as_metrics_json(sweep_dir):
    metrics = json.loads((sweep_dir / "3" / "metrics.json").read_text())
    assert unflatten(flatten(metrics)) == metrics
    assert load_runs([sweep_dir / "3"])[0].metrics == metrics


def test_run_report_is_unchanged_for_one_run(sweep_dir):
    metrics = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    report = run_report(metrics, title="t", run_dir="d")
    assert report.startswith("# t\n") and "| category | n | baseline | finetuned | change |" in report


def read_notebook(path: Path):
    """The notebook as nbformat reads it; any warning fails (MissingIDFieldWarning: a cell without an id)."""
    nbformat = pytest.importorskip("nbformat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    return notebook


def test_analysis_notebook_runs_headless_with_the_readme_command(sweep_dir, tmp_path):
    """README: `FTS_SWEEP_DIR=<dir> .venv/bin/jupyter execute notebooks/analysis.ipynb --output=$PWD/<dir>/analysis`."""
    pytest.importorskip("nbclient")  # it provides `jupyter execute`
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.is_file():
        pytest.skip(f"no {jupyter}")
    notebook = read_notebook(REPO / "notebooks" / "analysis.ipynb")
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "saved with outputs"
    assert "the four plots" in notebook.cells[0].source
    env = os.environ | {
        "FTS_SWEEP_DIR": os.path.relpath(sweep_dir, REPO),  # relative: the notebook takes it from the repo root
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),  # the kernel: this checkout
    }
    command = [jupyter, "execute", "notebooks/analysis.ipynb", f"--output={tmp_path}/analysis", "--timeout=300"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "MissingIDFieldWarning" not in done.stderr
    executed = read_notebook(tmp_path / "analysis.ipynb")
    outputs = [o for cell in executed.cells for o in cell.get("outputs", [])]
    assert f"sweep: {sweep_dir.resolve()}" in "".join(o.get("text", "") for o in outputs)
    assert "7 runs, 6 finished" in "".join(o.get("text", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4
    assert any("unfinished (no metrics.json)" in o.get("data", {}).get("text/markdown", "") for o in outputs)


# ---------------------------------------------------------------------------------------------------------------
# The plots keep every cell visible when cells coincide or are zero.

COINCIDING = {  # (attack, ratio): (p_harmful, p_refuse_benign, seed) of the side before, and after fine-tuning
    ("harmful", 0): ((0.05, 0.05, 1), (0.9, 0.1, 7)),
    ("harmful", 0.3): ((0.05, 0.05, 1), (0.9, 0.1, 7)),  # the same numbers as r=0
    ("aoa", 0): ((0.05, 0.05, 1), (0.05, 0.05, 1)),  # fine-tuned == aligned == harmful's aligned model
    ("aoa", 0.3): ((0.05, 0.05, 1), (0.05, 0.05, 1)),
    ("benign", 0): ((0.0, 0.0, 3), (0.0, 0.0, 3)),  # every ASR 0%
    ("benign", 0.3): ((0.0, 0.0, 3), (0.0, 0.0, 3)),
}


@pytest.fixture(scope="module")
def coinciding_runs() -> list[Run]:
    runs = []
    for (attack, ratio), (before, after) in COINCIDING.items():
        sides = {"baseline": fake_side(*before[:2], seed=before[2]), "finetuned": fake_side(*after[:2], seed=after[2])}
        config = {"attack": {"name": attack}, "mitigation": {"ratio": ratio}, "seed": 1}
        runs.append(Run(path=f"{attack}-{ratio}", metrics=fake_metrics(sides), config=config))
    return runs


def markers(ax, kind: str) -> list:
    return [line for line in ax.lines if line.get_marker() == kind]


def pixels(fig, line) -> list:
    """Where a marker is drawn on the canvas (its data point moved by its offset), in pixels."""
    return [tuple(p) for p in line.get_transform().transform(line.get_xydata())]


@pytest.mark.parametrize("figure", [harm_vs_over_refusal_figure, harm_vs_utility_figure])
def test_coinciding_trade_off_points_are_drawn_apart_and_labelled_once(coinciding_runs, figure):
    fig = figure(coinciding_runs)
    fig.draw_without_rendering()
    (ax,) = fig.axes
    stars, dots = markers(ax, "*"), markers(ax, "o")
    assert (len(stars), len(dots)) == (3, 6)  # every aligned model and every fine-tuned cell has its marker
    drawn = [xy for line in stars + dots for xy in pixels(fig, line)]
    gap = min(math.dist(a, b) for a, b in itertools.combinations(drawn, 2))
    assert gap >= 7 * fig.dpi / 72, "two markers on top of each other"  # 7 pt: a dot's size
    labels = [t.get_text() for t in ax.texts]
    assert "harmful: r=0, r=0.3" in labels and "aoa: before, r=0, r=0.3\nharmful: before" in labels
    assert sorted(" ".join(labels).replace(",", "").split()).count("before") == 3  # each cell named once
    boxes = [t.get_window_extent() for t in ax.texts]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2)), labels
    assert min(d.get_zorder() for d in dots) > max(s.get_zorder() for s in stars)  # fine-tuned above the star
    assert {d.get_markeredgecolor() for d in dots} == {"white"}  # a rim that sets a dot off a star of its color


def near_side(over_refusal: float, asr: float) -> dict:
    return {"over_refusal_rate": over_refusal, "keyword": {"asr": asr, "asr_ci95": [asr, asr]}}


def test_labels_of_near_points_do_not_overprint():
    """The 2x2 mixing sweep on the embedded model: AOA's aligned model at (70%, 0%), its r=0.3 cell at (66.7%,
    0.9%), r=0 at (80%, 0%): three groups, near enough for their labels to collide."""
    cells = {0: near_side(0.80, 0.0), 0.3: near_side(0.667, 0.009)}
    runs = [
        Run(path=f"aoa-{r}", metrics={"baseline": near_side(0.70, 0.0), "finetuned": side},
            config={"attack": {"name": "aoa"}, "mitigation": {"ratio": r}, "seed": 0})
        for r, side in cells.items()
    ]  # fmt: skip
    fig = harm_vs_over_refusal_figure(runs)
    fig.draw_without_rendering()
    (ax,) = fig.axes
    assert sorted(t.get_text() for t in ax.texts) == ["aoa: before", "aoa: r=0", "aoa: r=0.3"]
    boxes = [t.get_window_extent() for t in ax.texts]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_zero_bars_keep_a_marker_and_their_value(coinciding_runs):
    fig = per_category_figure(coinciding_runs)
    fig.draw_without_rendering()
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == ["attack: aoa", "attack: benign", "attack: harmful"]
    for title, ax in panels.items():
        zero = sorted(b.get_y() + b.get_height() / 2 for b in ax.patches if b.get_width() < 0.5)
        drawn = sorted(y for line in markers(ax, "D") for x, y in line.get_xydata() if x == 0)
        assert drawn == pytest.approx(zero), title  # a marker on the axis for each 0% bar, and for no other
        assert [t.get_text() for t in ax.texts] == ["0%"] * len(zero), title
    assert len(markers(panels["attack: benign"], "D")) == 3 * len(CATEGORIES)  # before, r=0, r=0.3: all 0%


def test_equal_aligned_lines_take_turns_and_fine_tuned_markers_lie_above(coinciding_runs):
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = asr_vs_mix_ratio_figure(coinciding_runs)
    fig.set_dpi(200)  # lines a few pixels wide: their middle row has the line's own color
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    (ax,) = fig.axes
    before = {line.get_label(): line for line in ax.lines if "aligned" in line.get_label()}
    y = before["aoa: aligned (before)"].get_ydata()[0]
    assert before["harmful: aligned (before)"].get_ydata()[0] == y  # the two aligned models coincide
    image = np.asarray(canvas.buffer_rgba())[:, :, :3].astype(int)
    left, row = ax.transData.transform((ax.get_xlim()[0], y))
    first = ax.transData.transform((min(x for x in ax.lines[0].get_xdata()), y))[0]
    top = image.shape[0] - round(row)  # the canvas counts rows from the top
    strip = image[top - 1 : top + 2, round(left) + 2 : round(first) - 12]  # 3 rows, left of any fine-tuned line
    for i in (0, 2):  # aoa and harmful: both colors show on the shared line
        distance = np.abs(strip - np.array(attack_color(i)[:3]) * 255).sum(axis=2).min(axis=0)
        assert (distance < 60).sum() >= 3, f"the aligned line of attack {i} is hidden"
    after = [line for line in ax.lines if line.get_marker() == "o"]
    assert min(line.get_zorder() for line in after) > max(line.get_zorder() for line in before.values())
