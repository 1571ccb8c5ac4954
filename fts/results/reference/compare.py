"""The paper's cells a run reproduces (its config's `reference:` ids) next to what the run measured.

`run_reference` puts the cells into metrics.json ("reference": {id: {metric, value, unit, measured_side,
benchmark}}), so that report.md can be rebuilt from metrics.json alone; `paper_lines` is report.md's
"Paper vs measured" block. Rates in metrics.json are fractions 0-1; the paper, and this block, print percent.
"""

import logging
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fts.core.errors import FtsError
from fts.core.records import BASELINE, FINETUNED, TRIGGERED
from fts.results import reference

log = logging.getLogger("fts")
RUBRIC_METRICS = ("harmfulness_rate", "harmfulness_score")


def measured_side(cell: dict[str, Any]) -> str:
    """The metrics.json side to compare a cell with: baseline for the paper's initial model, finetuned after; the
    backdoor's triggered prompts are the *_triggered sides."""
    side = BASELINE if cell["side"] == "initial" else FINETUNED
    return side + (TRIGGERED if cell["setting"].get("prompts") == "triggered" else "")


def entry(cell: dict[str, Any]) -> dict[str, Any]:
    out = {"metric": cell["metric"], "value": cell["value"], "unit": reference.unit(cell["metric"])}
    out |= {"measured_side": measured_side(cell), "benchmark": cell["setting"].get("benchmark", "hex-phi")}
    return out | ({"approximate": True} if cell.get("approximate") else {})


def run_reference(ids: Any) -> dict[str, dict[str, Any]]:
    """{id: entry} of a run's `reference:` ids. An id that does not resolve or is not a cell is logged and left
    out: a finished run must not fail on its reference (e.g. a sweep reaching a column the paper has not)."""
    try:
        ids = OmegaConf.to_container(ids, resolve=True) if OmegaConf.is_config(ids) else list(ids or [])
    except OmegaConfBaseException as e:
        log.warning("reference: cannot resolve the paper cell ids (%s); report.md has no paper column", e)
        return {}
    found = {}
    for cell_id in ids:
        try:
            found[cell_id] = entry(reference.cell(cell_id))
        except FtsError as e:
            log.warning("reference: %s", e)
    return found


def rubric_judge(side: dict[str, Any], metric: str) -> str | None:
    """The judge that measured a harmfulness score/rate: gpt4 (the paper's), else another rubric judge."""
    judges = [k for k, v in side.items() if isinstance(v, dict) and v.get(metric) is not None]
    return "gpt4" if "gpt4" in judges else next(iter(judges), None)


def measured(item: dict[str, Any], metrics: dict[str, Any]) -> tuple[float | None, str]:
    """(the run's value of the cell's metric, in the paper's unit; which judge) or (None, why not)."""
    side = metrics.get(item["measured_side"])
    if not side:
        return None, f"not measured (no {item['measured_side']} side)"
    metric = item["metric"]
    if metric == "keyword_asr":
        value = side.get("keyword", {}).get("asr")
        return (None, "not measured (needs judge=keyword)") if value is None else (100 * value, "keyword judge")
    if metric in RUBRIC_METRICS:
        judge = rubric_judge(side, metric)
        if judge is None:
            return None, "not measured (needs judge=gpt4)"
        value = side[judge][metric]
        return (100 * value if metric == "harmfulness_rate" else value), f"{judge} judge"
    if metric == "mt_bench":
        value = side.get("utility", {}).get("mt_bench", {}).get("score")
        return (None, "not measured (needs eval.mt_bench)") if value is None else (value, "MT-Bench")
    return None, "not measured by fts"


def shown(value: float, unit: str) -> str:
    return f"{value:.1f}%" if unit == "percent" else f"{value:.2f}"


def paper_value(item: dict[str, Any]) -> str:
    """As printed: percents keep the paper's precision (7.3, 7.27); ~ marks a value read off a plot."""
    text = f"{item['value']}%" if item["unit"] == "percent" else f"{item['value']:.2f}"
    return "~" + text if item.get("approximate") else text


def paper_lines(items: dict[str, dict[str, Any]], metrics: dict[str, Any]) -> list[str]:
    """report.md's "Paper vs measured" table, one row per cell."""
    lines = ["## Paper vs measured", "", f"Paper: {reference.cite()}", ""]
    lines += ["| paper cell | paper benchmark | paper | measured | measured by |", "|---|---|---|---|---|"]
    for cell_id, item in items.items():
        value, how = measured(item, metrics)
        mine = "—" if value is None else shown(value, item["unit"])
        lines.append(f"| {cell_id} | {item['benchmark']} | {paper_value(item)} | {mine} | {how} |")
    note = "Measured: this run's benchmark (eval.benchmark), baseline side for the paper's initial model."
    return lines + ["", note]


def paper_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """The paper's values of a run's reference cells as sweep.csv columns `paper/<side>/<metric>` (the paper's unit,
    percent for rates), so that sweep.md shows them beside the measured ones."""
    return {
        f"paper/{item['measured_side']}/{item['metric']}": item["value"]
        for item in metrics.get("reference", {}).values()
    }
