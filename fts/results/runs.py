"""The runs of a sweep as data: find run dirs, load each one's config, overrides and metrics.json (or a W&B
project's runs, as if read from run dirs).

A run dir is any folder with a `metrics.json` or a `.hydra/config.yaml` (a job that has not finished yet is listed
as unfinished). fts.results.sweep makes the table of them; `fts.report` the files and plots.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fts.core import fingerprint
from fts.core.errors import FtsError
from fts.core.secrets import is_secret_name, looks_like_secret
from fts.results.schema import SIDES

SKIP_DIRS = {"superseded", ".hydra", "wandb", "model", "checkpoints", "generations", ".submitit"}


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
        """The run's defenses: the names of its mitigations, sorted and joined with `+`, `none` without one. Reads
        either layout of the mitigation group: keyed nodes (`mitigation.<name>.<key>`, several at once) or the one
        flat node of fts before defenses (`mitigation.name`); a run without its config (W&B) falls back to the
        `mitigation=` override."""
        node = self.get("mitigation")
        if isinstance(node, dict) and "_target_" in node:  # the flat layout: one mitigation
            names = [str(node.get("name"))]
        elif isinstance(node, dict):  # keyed: one node per mitigation
            names = list(node)
        else:
            names = [n.strip() for n in self.overrides.get("mitigation", "").strip("[]").split(",")]
        return "+".join(sorted(n for n in names if n and n != "none")) or "none"

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


def grouped(runs: list[Run], key) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = defaultdict(list)
    for r in runs:
        groups[key(r)].append(r)
    try:
        return dict(sorted(groups.items()))
    except TypeError:  # keys of mixed types
        return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))
