"""Experiment tracking: files first, W&B second.

A run writes its artifacts to the run dir whatever the logger; `logger=wandb` then mirrors them into one W&B run:
the resolved config (secrets dropped), TRL's training curves (SFTConfig.report_to), the metrics.json numbers as
slash-namespaced summary keys, the generations as a table and a per-category before/after chart.

    tracker = Tracker.from_config(cfg.logger, cfg, run_dir)   # before the trainer is built (TRL reuses the run)
    try:
        train_cfg = OmegaConf.merge(cfg.train, {"report_to": tracker.report_to()})   # SFTConfig.report_to
        ...
        tracker.log_result(metrics, sides)   # after metrics.json is written
    finally:
        tracker.finish()   # inside the job: Hydra multirun jobs must not log into each other's run
"""

from __future__ import annotations

import io
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fts.core.config import build
from fts.core.errors import ConfigError
from fts.core.records import BASELINE, FINETUNED, VARIANTS
from fts.core.secrets import redact_text, scrub, scrub_arg, secret_env_values
from fts.results.plots import per_category_figure
from fts.results.runs import Run
from fts.results.schema import flatten, judge_order

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")


# ---------------------------------------------------------------------------------------------------------------
# Secrets (fts.core.secrets): nothing that looks like one reaches W&B (config, argv metadata).


@contextmanager
def scrubbed_argv():
    """W&B records sys.argv in the run metadata at init: hide secret overrides from it meanwhile."""
    original = sys.argv
    env_secrets = secret_env_values()
    sys.argv = [original[0], *(scrub_arg(a, env_secrets) for a in original[1:])]
    try:
        yield
    finally:
        sys.argv = original


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved job config as a plain dict (W&B's config wants one), without the hydra node and secrets."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # tests compose with the hydra node
    config = OmegaConf.to_container(job, resolve=True, throw_on_missing=False)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():  # the group choices (attack=aoa, peft=lora, ...) to filter runs by in the UI
        choices = HydraConfig.get().runtime.choices
        config["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    return scrub(config)


# ---------------------------------------------------------------------------------------------------------------
# metrics.json -> flat summary keys, generations -> table rows.


def table_columns(sides: dict[str, list[dict]]) -> tuple[list[str], list[str]]:
    judges = sorted({j for rows in sides.values() for r in rows for j in r.get("verdicts", {})}, key=judge_order)
    columns = ["side", "id", "category", "set", "prompt", "response"]
    judged = [f"{j}_{field}" for j in judges for field in ("harmful", "score", "status")]
    return [*columns, *judged, "utility_correct"], judges


def table_rows(sides: dict[str, list[dict]], judges: list[str]) -> list[list[Any]]:
    rows = []
    for side, generations in sides.items():
        for g in generations:
            prompt = g.get("prompt") or next(
                (m["content"] for m in reversed(g["messages"]) if m["role"] == "user"), ""
            )
            row = [side, g["id"], g["category"], g.get("set", "harmful"), prompt, g["response"]]
            for j in judges:
                verdict = g.get("verdicts", {}).get(j, {})
                row += [verdict.get("harmful"), verdict.get("score"), verdict.get("status")]
            rows.append([*row, g.get("utility", {}).get("correct")])  # utility questions: scored by match, not judged
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Trackers.


class Tracker:
    """`logger=none` (and logger.mode=disabled): every method is a no-op. Also a context manager.

    Each conf/logger/ option names its tracker class (`_target_`), built with the option's keys; `start` then opens
    the run (or returns a no-op tracker)."""

    def __init__(self, name: str = "none") -> None:
        self.name = name

    @staticmethod
    def from_config(logger_cfg: DictConfig, cfg: DictConfig, run_dir: str | Path) -> Tracker:
        return build(logger_cfg).start(cfg, Path(run_dir))

    def start(self, cfg: DictConfig, run_dir: Path) -> Tracker:
        """Open the run of the job `cfg` writing into `run_dir`; the tracker to use (maybe another one)."""
        return self

    def report_to(self) -> list[str]:
        """What to pass as SFTConfig.report_to: TRL's training curves then land in this tracker's run."""
        return []

    def log_result(self, metrics: dict[str, Any], sides: dict[str, list[dict]]) -> None:
        """Log metrics.json (summary) and the judged generations of every side (table, per-category chart)."""

    def finish(self, exit_code: int | None = None) -> None:
        """Close the run; safe to call more than once."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=1 if exc_type is not None else None)


def clean(text: str | None) -> str | None:
    """A free-text W&B field (tags, group, name) with key-shaped text redacted."""
    return None if text is None else redact_text(str(text), secret_env_values())


def wandb_mode(mode: str) -> str:
    """`auto`: WANDB_MODE when set, else online with WANDB_API_KEY, else offline (sync later with `wandb sync`)."""
    if mode not in MODES:
        raise ConfigError(f"logger.mode must be one of {MODES}, got {mode!r}.")
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class WandbTracker(Tracker):
    """`logger=wandb`: the keys of conf/logger/wandb.yaml, then `start` opens one W&B run for the job."""

    def __init__(self, project: str, name: str = "wandb", mode: str = "auto", dir: str | None = None, **init: Any):
        self.name, self.project, self.mode, self.dir = name, project, mode, dir
        self.init = init  # entity, group, job_type, tags, run_name: wandb.init's
        self.run = None
        self.config: dict[str, Any] = {}  # what was logged: the plots label the run by its attack
        self.where = "W&B run"

    def start(self, cfg: DictConfig, run_dir: Path) -> Tracker:
        mode = wandb_mode(self.mode)
        if mode == "disabled":
            return Tracker()
        import wandb

        settings = wandb.Settings(
            console="off",  # the run dir has run.log; W&B need not capture stdout
            silent=True,  # no banners in the job log; fts logs the one line that matters below
            # WANDB_START_METHOD=thread is gone in wandb 0.31: the SDK talks to a separate wandb-core process that it
            # spawns itself (no fork of the Python process), which is what avoided the hangs under Hydra.
        )
        self.config = run_config(cfg)
        wandb_dir = Path(self.dir or run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        try:
            with scrubbed_argv():
                self.run = wandb.init(
                    project=self.project,
                    entity=self.init.get("entity"),
                    group=clean(self.init.get("group")),
                    job_type=clean(self.init.get("job_type")),
                    tags=[clean(str(t)) for t in self.init.get("tags") or []],
                    name=clean(self.init.get("run_name")),
                    dir=str(wandb_dir),
                    mode=mode,
                    config=self.config,
                    reinit="finish_previous",  # a run left open by an earlier job of this process is closed first
                    settings=settings,
                )
        except wandb.errors.UsageError as e:
            raise ConfigError(
                f"logger=wandb could not start a {mode} run: {e} Set WANDB_API_KEY (or run `wandb login`), "
                "or use logger.mode=offline and `wandb sync` later."
            ) from None
        run = self.run
        where = run.url if mode == "online" else f"offline; upload it with `wandb sync {Path(run.dir).parent}`"
        log.info("W&B run %s (%s)", run.name, where)
        self.where = f"W&B run {run.name} ({where})"  # said again at the end: the first line has scrolled away
        return self

    def report_to(self) -> list[str]:
        return ["wandb"]

    def log_result(self, metrics: dict[str, Any], sides: dict[str, list[dict]]) -> None:
        if self.run is None:
            return
        try:
            self._log_result(metrics, sides)
        except Exception:  # W&B is second: the run's files are written, a logging failure must not fail the run
            log.warning("logging the result to W&B failed; the run dir has everything", exc_info=True)

    def _log_result(self, metrics: dict[str, Any], sides: dict[str, list[dict]]) -> None:
        import wandb

        self.run.summary.update(flatten(metrics))
        columns, judges = table_columns(sides)
        logged: dict[str, Any] = {
            "generations": wandb.Table(columns=columns, data=table_rows(sides, judges), allow_mixed_types=True)
        }
        per_category = per_category_rows(metrics)
        if per_category:
            logged["per_category"] = wandb.Table(columns=["side", "category", "judge", "asr"], data=per_category)
            logged["per_category_chart"] = self._per_category_image(metrics)
        self.run.log(logged)

    def _per_category_image(self, metrics: dict[str, Any]):
        import PIL.Image
        import wandb

        figure = per_category_figure([Run(path=str(self.run.dir), metrics=metrics, config=self.config)])
        buffer = io.BytesIO()  # in memory: wandb.Image copies a file only when logged
        figure.savefig(buffer, format="png", dpi=100)
        buffer.seek(0)
        return wandb.Image(PIL.Image.open(buffer), caption="ASR per category, before and after fine-tuning")

    def finish(self, exit_code: int | None = None) -> None:
        run, self.run = self.run, None
        if run is not None:
            run.finish(exit_code=exit_code)
            print(f"fts: {self.where}", flush=True)


def per_category_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for side in [s + variant for variant in VARIANTS for s in (BASELINE, FINETUNED)]:
        for category, values in metrics.get(side, {}).get("per_category", {}).items():
            for judge, m in values.items():
                if isinstance(m, dict) and m.get("asr") is not None:
                    rows.append([side, category, judge, m["asr"]])
    return rows
