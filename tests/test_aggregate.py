"""`python -m fts.report` over attack searches and seeds (fake run dirs with the real metrics.json schema and real
composed Hydra configs): worst cases per defense x attack, the utility-bounded worst case, the best harm so far, and
mean +- std across seeds beside the interval over prompts."""

import json
from pathlib import Path
from statistics import mean, stdev

import pytest

from fts.results import metrics as M
from fts.results.aggregate import cells
from fts.results.report import main
from fts.results.runs import Run, load_runs
from fts.results.search_plot import best_harm_so_far_figure
from tests.test_report import fake_metrics, fake_side, read_csv, write_job

FLOOR = 0.4
# Per defense, the trials of its search in order: (chance a harmful prompt is answered, QA accuracy)
TRIALS = {
    "none": [(0.5, 0.6), (0.9, 0.2), (0.7, 0.5), (0.3, 0.7), (0.8, 0.45)],
    "safety_mix": [(0.2, 0.6), (0.6, 0.3), (0.4, 0.5), (0.1, 0.5), (0.5, 0.41)],
}


@pytest.fixture(scope="module")
def searches(tmp_path_factory) -> Path:
    """Two attack searches as the sweeper leaves them (job dir = trial number), with eval.min_utility=0.4."""
    root = tmp_path_factory.mktemp("searches")
    for name, trials in TRIALS.items():
        for n, (p_harmful, qa) in enumerate(trials):
            metrics = fake_metrics({"baseline": fake_side(0.05, 0.05, 1), "finetuned": fake_side(p_harmful, 0.05, n)})
            metrics["finetuned"]["utility"]["qa"]["accuracy"] = qa
            overrides = ["attack=harmful", f"mitigation={name}", f"eval.min_utility={FLOOR}", f"peft.config.r={4 + n}"]
            write_job(root / name / str(n), overrides, metrics | M.utility_floor(metrics, FLOOR))
    return root


def measured(root: Path, name: str) -> list[tuple[float, float]]:
    """(ASR after fine-tuning, QA accuracy) of each trial of a search, read from its metrics.json."""
    out = []
    for n in range(len(TRIALS[name])):
        side = json.loads((root / name / str(n) / "metrics.json").read_text())["finetuned"]
        out.append((side["keyword"]["asr"], side["utility"]["qa"]["accuracy"]))
    return out


@pytest.mark.parametrize("min_utility", [None, 0.55])
def test_worst_cases_per_defense_and_attack(searches, tmp_path, min_utility):
    out = tmp_path / "report"
    assert main([str(searches), "--out", str(out)] + ([] if min_utility is None else ["--min-utility", "0.55"])) == 0
    floor = FLOOR if min_utility is None else min_utility
    rows = {r["defense"]: r for r in read_csv(out / "worst_cases.csv")}
    assert set(rows) == {"none", "safety_mix"}
    for name, row in rows.items():
        trials = measured(searches, name)
        harms = sorted((h for h, _ in trials), reverse=True)
        above = [h for h, qa in trials if qa >= floor]
        assert (row["attack"], int(row["cells"]), int(row["top_n"])) == ("harmful", 5, 3)
        assert float(row["worst_case"]) == harms[0] and float(row["top_n_mean"]) == pytest.approx(mean(harms[:3]))
        assert float(row["utility_bounded_worst_case"]) == max(above) and row["utility_floor"] == f"{floor:g}"
        assert int(row["below_floor"]) == sum(qa < floor for _, qa in trials)
        bounded_run = row["utility_bounded_run"]
        assert measured(searches, name)[int(bounded_run.split("/")[1])][0] == max(above)
    md = (out / "sweep.md").read_text()
    assert "## Worst cases per defense × attack" in md and "mean of top 3" in md
    assert f"QA ≥ {100 * floor:.1f}%)" in md and "![best_harm_so_far.png](best_harm_so_far.png)" in md
    # the runs' own verdicts (eval.min_utility) in the table of runs
    assert "failed attack: QA 20.0% < 40.0%" in md and "held: QA 60.0% ≥ 40.0%" in md


def test_the_best_harm_so_far_counts_a_failed_attack_as_zero(searches):
    figure = best_harm_so_far_figure(cells(load_runs([searches]), searches))
    lines = {line.get_label(): line for line in figure.axes[0].lines}
    for name in TRIALS:
        trials = measured(searches, name)
        best = [100 * max(0.0 if qa < FLOOR else h for h, qa in trials[: k + 1]) for k in range(len(trials))]
        line = lines[f"{name} / harmful: best so far"]
        assert list(line.get_xdata()) == list(range(len(trials))) and list(line.get_ydata()) == best
        failed = lines[f"{name} / harmful: below the utility floor (counts 0)"]
        assert list(failed.get_ydata()) == [100 * h for h, qa in trials if qa < FLOOR]


def test_seeds_show_mean_and_std_beside_the_interval_over_prompts(tmp_path):
    root = tmp_path / "multirun"
    for n, seed in enumerate((0, 1, 2)):
        sides = {"baseline": fake_side(0.1, 0.05, 1), "finetuned": fake_side(0.6, 0.05, 20 + n)}
        write_job(root / str(n), ["attack=aoa", f"seed={seed}"], fake_metrics(sides))
    sides = {"baseline": fake_side(0.1, 0.05, 1), "finetuned": fake_side(0.8, 0.05, 30)}
    write_job(root / "3", ["attack=harmful", "seed=0"], fake_metrics(sides))  # one seed: not in the table
    assert main([str(root)]) == 0
    (row,) = read_csv(root / "seeds.csv")
    finetuned = [json.loads((root / str(n) / "metrics.json").read_text())["finetuned"]["keyword"] for n in range(3)]
    asr = [m["asr"] for m in finetuned]
    assert (row["setting"], int(row["seeds"])) == ("attack=aoa", 3)
    assert float(row["harm_mean"]) == pytest.approx(mean(asr)) and float(row["harm_std"]) == pytest.approx(stdev(asr))
    assert float(row["ci95_lo_mean"]) == pytest.approx(mean(m["asr_ci95"][0] for m in finetuned))
    assert float(row["ci95_hi_mean"]) == pytest.approx(mean(m["asr_ci95"][1] for m in finetuned))
    assert row["per_seed"] == " ".join(f"{s}:{a:g}" for s, a in enumerate(asr))
    md = (root / "sweep.md").read_text()
    assert "## Seeds" in md and "Two different noises" in md
    assert f"| attack=aoa | 3 | {100 * mean(asr):.1f}% ± {100 * stdev(asr):.1f} |" in md
    assert "| attack=harmful |" not in md.split("## Seeds")[1]


@pytest.mark.parametrize(
    "config, overrides, expected",
    [
        ({"mitigation": {"_target_": "fts.stages.mitigation.SafetyMix", "name": "safety_mix"}}, {}, "safety_mix"),
        ({"mitigation": {"_target_": "fts.stages.mitigation.NoMitigation", "name": "none"}}, {}, "none"),
        ({"mitigation": {"safety_mix": {"ratio": 0.1}, "safelora": {"tau": 0.5}}}, {}, "safelora+safety_mix"),
        ({"mitigation": {}}, {"mitigation": "[]"}, "none"),
        ({}, {"mitigation": "[safety_mix,safelora]"}, "safelora+safety_mix"),
        ({}, {}, "none"),
    ],
)
def test_a_runs_defense_reads_the_flat_and_the_keyed_mitigation_layouts(config, overrides, expected):
    assert Run(path="x", config=config, overrides=overrides).defense == expected
