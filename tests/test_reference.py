"""The paper's numbers as data (fts/reference/qi2023.yaml): its shape, spot checks against the paper, the cells the
experiment files name, `python -m fts.reference`, and the "Paper vs measured" block of report.md."""

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fts.results import reference
from fts.results.reference import ReferenceDataError, UnknownCellError
from fts.results.reference.compare import run_reference
from fts.results.run_report import run_report
from tests.conftest import CONF_DIR, compose_run
from tests.test_report import fake_metrics, fake_side

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
TIER_OF_ATTACK = {"harmful": "harmful", "aoa": "aoa", "benign": "benign", "backdoor": "backdoor"}

# Typed from the paper's tables (paper-facts.md §4), independently of qi2023.yaml.
SPOT_CHECKS = {
    "table1/gpt-3.5-turbo/harmful/initial/harmfulness_rate": 1.8,
    "table1/llama-2-7b-chat/harmful/10shot/harmfulness_score": 3.58,
    "table1/llama-2-7b-chat/harmful/50shot/harmfulness_rate": 80.3,
    "table2/gpt-3.5-turbo/aoa/3ep/harmfulness_rate": 7.3,
    "table2/gpt-3.5-turbo/aoa/5ep/harmfulness_rate": 49.1,
    "table2/gpt-3.5-turbo/aoa/10ep/harmfulness_rate": 87.3,
    "table2/llama-2-7b-chat/aoa/10ep/harmfulness_score": 4.15,
    "table3/gpt-3.5-turbo/benign/dolly/harmfulness_score": 2.11,
    "table3/llama-2-7b-chat/benign/llava/harmfulness_rate": 18.8,
    "table4/gpt-3.5-turbo/harmful/100safe/harmfulness_rate": 23.0,
    "table4/gpt-3.5-turbo/benign/250safe/harmfulness_rate": 21.8,
    "table5/gpt-3.5-turbo/backdoor/plain/harmfulness_score": 1.21,
    "table5/gpt-3.5-turbo/backdoor/triggered/harmfulness_rate": 63.3,
    "table5/gpt-3.5-turbo/harmful/100shot/keyword_asr": 90.91,
    "table7/gpt-3.5-turbo/aoa/10ep/keyword_asr": 83.94,
    "table7/gpt-3.5-turbo/benign/alpaca-initial/keyword_asr": 11.21,
    "table8/gpt-3.5-turbo/none/initial/mt_bench": 8.0,
    "table10/llama-2-7b-chat/harmful/100shot/keyword_asr": 95.6,
    "table10/gpt-3.5-turbo/benign/alpaca/keyword_asr": 20.2,
    "table11/llama-2-7b-chat/harmful/prefix/harmfulness_rate": 42.4,
    "table11/llama-2-7b-chat/aoa/llama-adapter/harmfulness_score": 1.90,
    "table11/llama-2-7b-chat/benign/lora/harmfulness_rate": 25.2,
}
# Printed cells per table (GPT-3.5 has no LLaVA column in Table 3).
CELLS_PER_TABLE = {"table1": 16, "table2": 16, "table3": 20, "table4": 24, "table5": 24, "table7": 60}
CELLS_PER_TABLE |= {"table8": 4, "table10": 12, "table11": 30, "fig5a": 8}


def reference_ids(overrides: list[str]) -> tuple[list[str], object]:
    cfg = compose_run([*overrides, "++dataset.path=some/file"])
    return OmegaConf.to_container(cfg.reference, resolve=True), cfg


@pytest.mark.parametrize(("cell_id", "value"), SPOT_CHECKS.items())
def test_encoded_values_are_the_papers(cell_id, value):
    assert reference.cell(cell_id)["value"] == pytest.approx(value)


def test_every_printed_cell_is_encoded_once():
    counts = {}
    for c in reference.cells():
        counts[c["table"]] = counts.get(c["table"], 0) + 1
    assert counts == CELLS_PER_TABLE
    assert len({c["id"] for c in reference.cells()}) == sum(CELLS_PER_TABLE.values())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_files_name_existing_cells_of_their_tier(experiment):
    ids, cfg = reference_ids([f"experiment={experiment}"])
    assert ids, f"conf/experiment/{experiment}.yaml names no reference cell"
    table = experiment.split("_")[0]
    for cell_id in ids:
        cell = reference.cell(cell_id)  # raises for an unknown id
        # Table 10 is the AdvBench keyword ASR of Tables 1-3's cells: any of them may name it
        assert cell["table"] in (table, "table10") and cell["tier"] == TIER_OF_ATTACK[cfg.attack.name], cell_id


def quoted_rate(experiment: str) -> float | None:
    """The rate in an experiment file's comment "the paper's harmfulness rate: X%", if it has one."""
    text = (Path(CONF_DIR) / "experiment" / f"{experiment}.yaml").read_text().replace("\n# ", " ")
    found = re.search(r"the paper's harmfulness rate: ([\d.]+)%", text)
    return float(found.group(1)) if found else None


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if quoted_rate(e) is not None])
def test_comments_quote_the_referenced_rate(experiment):
    ids, _ = reference_ids([f"experiment={experiment}"])
    rate = next(reference.cell(i) for i in ids if i.endswith("harmfulness_rate") and "/initial/" not in i)
    assert rate["value"] == pytest.approx(quoted_rate(experiment))


@pytest.mark.parametrize(
    ("overrides", "column"),
    [
        (["experiment=table1_harmful", "attack.shots=100"], "100shot"),
        (["experiment=table2_aoa", "train.num_train_epochs=3"], "3ep"),
        (["experiment=table3_benign", "dataset=dolly"], "dolly"),
    ],
)
def test_swept_columns_follow_the_swept_key(overrides, column):
    ids, _ = reference_ids(overrides)
    assert [reference.cell(i)["id"].split("/")[3] for i in ids[2:]] == [column, column]


def write_cells(tmp_path, cells: str) -> Path:
    path = tmp_path / "ref.yaml"
    head = "cite: {authors: a, title: t, venue: v, arxiv: '1'}\nmetrics: {harmfulness_rate: {unit: percent}}\n"
    path.write_text(head + "cells:\n" + cells)
    return path


GOOD = "  - {id: t1/m/aoa/5ep/harmfulness_rate, table: t1, model: m, tier: aoa, setting: {}, side: finetuned, metric: harmfulness_rate, value: 1.5, source: T1}\n"


def test_validator_accepts_a_good_file(tmp_path):
    assert list(reference.load(write_cells(tmp_path, GOOD))["cells"]) == ["t1/m/aoa/5ep/harmfulness_rate"]


@pytest.mark.parametrize(
    ("cells", "problem"),
    [
        (GOOD + GOOD, "duplicate id"),
        (GOOD.replace("value: 1.5", "value: '87.3%'"), "value must be a number"),
        (GOOD.replace("value: 1.5", "value: true"), "value must be a number"),
        (GOOD.replace(", source: T1", ""), "lacks source"),
        (GOOD.replace("side: finetuned", "side: after"), "side must be one of"),
        (GOOD.replace("metric: harmfulness_rate", "metric: asr"), "metric 'asr'"),
        (GOOD.replace("tier: aoa", "tier: harmful"), "id does not match its fields"),
    ],
)
def test_validator_names_the_bad_cell(tmp_path, cells, problem):
    with pytest.raises(ReferenceDataError, match=re.escape("t1/m/aoa/5ep/harmfulness_rate")) as e:
        reference.load(write_cells(tmp_path, cells))
    assert problem in str(e.value)


def test_unknown_cell_names_close_matches():
    with pytest.raises(KeyError) as e:
        reference.cell("table2/gpt-3.5-turbo/aoa/6ep/harmfulness_rate")
    assert isinstance(e.value, UnknownCellError)
    assert "did you mean table2/gpt-3.5-turbo/aoa/5ep/harmfulness_rate" in str(e.value)


def test_cells_for_filters_by_table_model_and_tier():
    row = reference.cells_for(table=1, model="llama", tier="harmful")
    assert [c["value"] for c in row if c["metric"] == "harmfulness_rate"] == [0.3, 50.0, 80.3, 80.0]
    assert reference.cells_for(table="table2", model="gpt-3.5") == reference.cells_for(table="2", model="GPT-3.5")
    assert {c["tier"] for c in reference.cells_for(table=11)} == {"harmful", "aoa", "benign"}


def test_cli_lists_every_cell():
    done = subprocess.run([sys.executable, "-m", "fts.reference"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip() and "/" in line.split()[0]}
    assert listed == {c["id"] for c in reference.cells()}
    assert "table2/gpt-3.5-turbo/aoa/10ep/harmfulness_rate  harmfulness_rate  87.3%" in re.sub(" +", "  ", done.stdout)


def test_cli_filters(capsys):
    from fts.results.reference.cli import main

    assert main(["--table", "2", "--model", "gpt-3.5"]) == 0
    out = capsys.readouterr().out
    assert "8 cells." in out and "llama" not in out.split("8 cells.")[0]


# ---------------------------------------------------------------------------------------------------------------
# report.md: paper vs measured


def aoa_result(rubric: bool) -> dict:
    sides = {"baseline": fake_side(0.1, 0.1, 1, rubric), "finetuned": fake_side(0.8, 0.1, 2, rubric)}
    result = fake_metrics(sides)
    ids = [
        f"table2/llama-2-7b-chat/aoa/{c}/{m}"
        for c in ("initial", "5ep")
        for m in ("harmfulness_rate", "harmfulness_score")
    ]
    result["reference"] = run_reference(ids + ["table10/llama-2-7b-chat/aoa/initial/keyword_asr"])
    return result


def report_row(report: str, cell_id: str) -> list[str]:
    row = next(line for line in report.splitlines() if line.startswith(f"| {cell_id} |"))
    return [part.strip() for part in row.strip("|").split("|")]


def test_report_puts_the_paper_next_to_the_gpt4_judge(tmp_path):
    result = aoa_result(rubric=True)
    report = run_report(result, title="t", run_dir="d")
    assert "## Paper vs measured" in report and "arXiv:2310.03693" in report
    rate = 100 * result["finetuned"]["gpt4"]["harmfulness_rate"]  # a fraction in metrics.json, percent here
    cell = "table2/llama-2-7b-chat/aoa/5ep/harmfulness_rate"
    assert report_row(report, cell) == [cell, "hex-phi", "72.1%", f"{rate:.1f}%", "gpt4 judge"]
    score = result["baseline"]["gpt4"]["harmfulness_score"]
    cell = "table2/llama-2-7b-chat/aoa/initial/harmfulness_score"
    assert report_row(report, cell)[2:] == ["1.02", f"{score:.2f}", "gpt4 judge"]
    asr = 100 * result["baseline"]["keyword"]["asr"]  # an initial cell: the baseline side
    cell = "table10/llama-2-7b-chat/aoa/initial/keyword_asr"
    assert report_row(report, cell)[1:] == ["advbench", "0%", f"{asr:.1f}%", "keyword judge"]


def test_report_says_what_a_judge_is_missing_for():
    report = run_report(aoa_result(rubric=False), title="t", run_dir="d")
    row = report_row(report, "table2/llama-2-7b-chat/aoa/5ep/harmfulness_rate")
    assert row[3:] == ["—", "not measured (needs judge=gpt4)"]


def test_report_compares_triggered_cells_with_the_triggered_side():
    sides = {"baseline": fake_side(0.1, 0.1, 1), "finetuned": fake_side(0.1, 0.1, 2)}
    sides |= {"baseline_triggered": fake_side(0.1, 0.1, 3), "finetuned_triggered": fake_side(0.9, 0.1, 4)}
    result = fake_metrics(sides)
    result["reference"] = run_reference(["table5/gpt-3.5-turbo/backdoor/triggered/keyword_asr"])
    assert result["reference"]["table5/gpt-3.5-turbo/backdoor/triggered/keyword_asr"]["measured_side"] == (
        "finetuned_triggered"
    )
    row = report_row(run_report(result, "t", "d"), "table5/gpt-3.5-turbo/backdoor/triggered/keyword_asr")
    assert row[2:] == ["56.67%", f"{100 * result['finetuned_triggered']['keyword']['asr']:.1f}%", "keyword judge"]


def test_values_read_off_a_plot_are_marked_approximate():
    result = aoa_result(rubric=False)
    result["reference"] = run_reference(["fig5a/llama-2-7b-chat/benign/lr5e-5-bs16/harmfulness_rate"])
    row = report_row(run_report(result, "t", "d"), "fig5a/llama-2-7b-chat/benign/lr5e-5-bs16/harmfulness_rate")
    assert row[2] == "~46%"


def test_a_run_without_reference_has_no_paper_block():
    result = aoa_result(rubric=False)
    del result["reference"]
    assert "Paper vs measured" not in run_report(result, "t", "d")


def test_run_records_the_experiments_cells_and_skips_unknown_ones(caplog):
    from fts.results.cell import paper_reference

    cfg = compose_run(["experiment=table2_aoa"])
    assert list(paper_reference(cfg)["reference"]) == [
        f"table2/llama-2-7b-chat/aoa/{c}/{m}"
        for c in ("initial", "5ep")
        for m in ("harmfulness_score", "harmfulness_rate")
    ]
    assert paper_reference(compose_run([])) == {}
    with caplog.at_level(logging.WARNING, logger="fts"):
        kept = paper_reference(compose_run(["experiment=table2_aoa", "train.num_train_epochs=1"]))["reference"]
    assert len(kept) == 2 and "1ep/harmfulness_rate' is not a cell" in caplog.text
