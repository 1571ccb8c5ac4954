"""The runs of a sweep as data: find run dirs, load config + overrides + metrics.json, one table row per run.

A run dir is any folder with a `metrics.json` or a `.hydra/config.yaml` (a job that has not finished yet is listed
as unfinished). The config axes are the overrides (`.hydra/overrides.yaml`) whose values differ between runs.
`fts.report` turns this into sweep.csv, sweep.md and plots (`python -m fts.report <multirun dir>`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, TextIO

from omegaconf import OmegaConf

from fts.core import fingerprint
from fts.core.errors import FtsError
from fts.core.records import BASELINE, DELTA, FINETUNED
from fts.core.secrets import is_secret_name, looks_like_secret
from fts.results.metrics import SIDE_BLOCKS
from fts.results.reference.compare import paper_columns
from fts.results.schema import HEADLINE_JUDGE, SIDES, VARIANTS, flatten, headline_judge, judge_order

# Headline numbers per judge (CSV columns), in this order; CI bounds follow their metric.
JUDGE_METRICS = ("asr", "harmfulness_rate", "harmfulness_score", "strongreject_score", "unscored")
NOT_JUDGES = set(SIDE_BLOCKS)  # dict-valued keys of a side that are not a judge's metrics
SKIP_DIRS = {"superseded", ".hydra", "wandb", "model", "checkpoints", "generations", ".submitit"}
PLOTS = ("asr_vs_mix_ratio.png", "per_category.png", "harm_vs_over_refusal.png", "harm_vs_utility.png")
# Utility columns of sweep.csv: column -> (path in a side of metrics.json, path in its delta)
UTILITY_COLUMNS = {
    "utility/qa_accuracy": (("utility", "qa", "accuracy"), ("utility", "qa_accuracy")),
    "utility/mt_bench_score": (("utility", "mt_bench", "score"), ("utility", "mt_bench_score")),
}

# The fine-tuning job of an API model (metrics.json "fine_tune"), as sweep.csv columns fine_tune/<key>
FINE_TUNE_COLUMNS = ("status", "job_id", "fine_tuned_model", "trained_tokens", "estimated_usd", "actual_usd", "error")


@dataclass
class Run:
    """One run of a sweep: where it is, its config and overrides, and its metrics.json (None: unfinished)."""

    path: str
    metrics: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A config value by dotted key (raw, as saved by Hydra)."""
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def attack(self) -> str:
        return str(self.overrides.get("attack") or self.get("attack.name") or "run")

    @property
    def ratio(self) -> float:  # the safety mix ratio (`mitigation.ratio` in run dirs of fts before defenses)
        try:
            return float(self.get("mitigation.safety_mix.ratio") or self.get("mitigation.ratio") or 0)
        except (TypeError, ValueError):
            return 0.0

    @property
    def defense(self) -> str:
        """The run's conf/mitigation/ options joined by '+', or 'none' (older run dirs: `mitigation.name`)."""
        mitigation = self.get("mitigation") or {}
        return str(mitigation["name"]) if isinstance(mitigation.get("name"), str) else "+".join(mitigation) or "none"

    @property
    def seed(self) -> Any:
        return self.get("seed")


# Finding and loading runs.


def natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def is_run_dir(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_run_dirs(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        if not root.is_dir():
            raise FtsError(f"{root} is not a directory: pass a multirun dir or run dirs (folders with metrics.json).")
        for dirpath, dirnames, _ in os.walk(root):
            if is_run_dir(Path(dirpath)):
                found.append(Path(dirpath))
                dirnames.clear()  # no runs inside a run
            else:
                dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
    return sorted(set(found), key=lambda p: natural_key(str(p)))


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """`mitigation.safety_mix.ratio=0.1`, `+x=1`, `~y` -> {key: value}; hydra.* and secret overrides are left out."""
    out = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra.") or is_secret_name(key) or looks_like_secret(value):
            continue
        out[key] = value
    return out


def load_run(path: Path) -> Run:
    """A run dir's metrics with the config they were computed under: the one its fingerprint recorded (Hydra
    rewrites `.hydra/` on every start, also one that fts then refuses), else `.hydra/` of an older run dir."""
    hydra_dir = path / ".hydra"
    config, overrides = {}, {}
    recorded = fingerprint.recorded_config(path)
    if recorded is not None:
        config, override_list = recorded
        overrides = parse_overrides(override_list)
    else:
        if (hydra_dir / "config.yaml").is_file():
            config = OmegaConf.to_container(OmegaConf.load(hydra_dir / "config.yaml"), resolve=False)
        if (hydra_dir / "overrides.yaml").is_file():
            overrides = parse_overrides(OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml")) or [])
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else None
    return Run(path=str(path), metrics=metrics, config=config, overrides=overrides)


def load_runs(paths: list[str | Path]) -> list[Run]:
    return [load_run(p) for p in find_run_dirs([Path(p) for p in paths])]


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `fts.results.tracking.flatten` (W&B summary keys -> the metrics.json layout)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        bound = re.fullmatch(r"(.+_ci95)_(lo|hi)", leaf)
        if bound:
            node.setdefault(bound[1], [None, None])[0 if bound[2] == "lo" else 1] = value
        else:
            node[leaf] = value
    return out


def load_wandb_runs(project: str) -> list[Run]:
    """Runs of a W&B project (`entity/project`) logged by `fts.results.tracking`, as if read from run dirs."""
    import wandb

    try:
        api_runs = list(wandb.Api().runs(project))
    except Exception as e:  # no key, no network, no such project: one readable line
        raise FtsError(f"--wandb-project {project}: cannot read runs from W&B ({e}). Set WANDB_API_KEY.") from None
    axes = ("seed", "mitigation.safety_mix.ratio", "attack.shots", "train.learning_rate", "train.num_train_epochs")
    runs = []
    for r in api_runs:
        flat = {k: v for k, v in dict(r.summary).items() if k.split("/")[0].startswith(SIDES)}
        run = Run(path=f"wandb:{r.path[-1]} ({r.name})", metrics=unflatten(flat) or None, config=dict(r.config))
        run.overrides = {k: str(v) for k, v in (run.config.get("choices") or {}).items() if v is not None}
        run.overrides |= {k: str(run.get(k)) for k in axes if run.get(k) is not None}
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# The table: one row per run, config axes then metrics.


def sweep_axes(runs: list[Run]) -> list[str]:
    """Override keys whose values differ between runs (all overrides when there is a single run)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    if len(runs) == 1:
        return keys
    return [k for k in keys if len({axis_value(r, k) for r in runs}) > 1]


def axis_value(run: Run, key: str) -> str:
    if key in run.overrides:
        return run.overrides[key]
    value = run.get(key)
    if isinstance(value, dict):  # a config group left at its default: its name
        value = value.get("name")
    return "" if value is None else str(value)


def metric_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a run as flat `side/judge/metric` columns (see JUDGE_METRICS)."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        for side in SIDES:
            values = metrics.get(side + variant)
            if not values:
                continue
            flat = flatten({k: v for k, v in values.items() if k not in NOT_JUDGES}, side + variant)
            judges = sorted(
                (k for k, v in values.items() if isinstance(v, dict) and k not in NOT_JUDGES), key=judge_order
            )
            for judge in judges:
                for m in JUDGE_METRICS:
                    for suffix in ("", "_ci95_lo", "_ci95_hi"):
                        key = f"{side}{variant}/{judge}/{m}{suffix}"
                        if key in flat:
                            out[key] = flat[key]
            for key in ("over_refusal_rate", "over_refusal_ci95_lo", "over_refusal_ci95_hi", "over_refusal_unscored"):
                if f"{side}{variant}/{key}" in flat:
                    out[f"{side}{variant}/{key}"] = flat[f"{side}{variant}/{key}"]
            for column, (path, delta_path) in utility_columns(metrics, variant).items():
                value = dig(values, delta_path if side == DELTA else path)
                if value is not None:
                    out[f"{side}{variant}/{column}"] = value
    job = metrics.get("fine_tune") or {}  # API models: the fine-tuning job (fts.train.openai)
    out |= {f"fine_tune/{k}": job[k] for k in FINE_TUNE_COLUMNS if job.get(k) is not None}
    return out


def utility_columns(metrics: dict[str, Any], variant: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """UTILITY_COLUMNS and the XSTest over-refusal column of the run's over-refusal judge (its benign one)."""
    judge = (metrics.get(FINETUNED + variant) or metrics.get(BASELINE + variant) or {}).get("over_refusal_judge")
    judge = judge or HEADLINE_JUDGE
    xstest = ("over_refusal", "xstest_safe", judge)
    return UTILITY_COLUMNS | {f"over_refusal/xstest_safe/{judge}": ((*xstest, "rate"), xstest)}


def dig(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def table(runs: list[Run], root: Path | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of sweep.csv."""
    axes = sweep_axes(runs)
    rows = []
    for r in runs:
        path = os.path.relpath(r.path, root) if root and not r.path.startswith("wandb:") else r.path
        row = {"run": path, "status": "finished" if r.metrics else "unfinished"}
        row |= {k: axis_value(r, k) for k in axes}
        row |= metric_columns(r.metrics or {}) | paper_columns(r.metrics or {})  # and the paper's, where it has them
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, rows


def write_csv(stream: TextIO, columns: list[str], rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(stream, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)


# ---------------------------------------------------------------------------------------------------------------
# Aggregation for the plots.


def main_judge(side: dict[str, Any]) -> str | None:
    """The judge whose ASR the plots show: the headline judge (eval.headline_judge; keyword, the paper's ASR, in
    metrics.json that does not record one) when it has an ASR, else the first with one."""
    judges = sorted((k for k, v in side.items() if isinstance(v, dict) and "asr" in v), key=judge_order)
    return headline_judge(side, judges) if judges else None


def asr(side: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(ASR, CI low, CI high) of a side (or of a per-category entry) by its main judge."""
    judge = main_judge(side or {})
    if judge is None:
        return None
    m = side[judge]
    lo, hi = m.get("asr_ci95") or (m["asr"], m["asr"])
    return m["asr"], lo, hi


def mean_asr(sides: list[dict[str, Any] | None]) -> tuple[float, float, float] | None:
    """Mean ASR over runs (seeds), with the runs' interval bounds averaged."""
    values = [v for v in map(asr, sides) if v is not None]
    return tuple(mean(v[i] for v in values) for i in range(3)) if values else None


def grouped(runs: list[Run], key) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = defaultdict(list)
    for r in runs:
        groups[key(r)].append(r)
    try:
        return dict(sorted(groups.items()))
    except TypeError:  # keys of mixed types
        return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))
