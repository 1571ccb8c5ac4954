"""A run dir belongs to one config: `fingerprint.json` binds it to the config that determines its results.

Hydra rewrites `.hydra/config.yaml` on every start, so without this a finished run dir rerun with other overrides
would return its old metrics under the new labels, and a partial one would resume under another attack. The first
start of a run dir writes the fingerprint: a hash of the resolved config without the keys that only say where and
how results are logged (paths, logger, cache, batch sizes, budgets). A later start with another fingerprint stops
with the keys that differ, before anything is loaded; `resume=force` instead moves the old results aside and starts
the cell over. `fts.report` reads each cell's config from its fingerprint, the one its numbers were computed under.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fts.core.artifacts import write_json
from fts.core.errors import ConfigError
from fts.core.secrets import REDACTED, is_secret_name, looks_like_secret

FILE = "fingerprint.json"
RESUME_CHOICES = ("auto", "force")
# Top-level keys that place or log results but do not change them.
NOT_RESULT_GROUPS = ("hydra", "paths", "logger", "cache", "task_name", "tags", "resume", "save_model", "reference")
# Leaves that change speed, memory, spending limits or logging, not the numbers (fnmatch patterns).
NOT_RESULT_KEYS = (
    "eval.batch_size",
    "eval.vllm.gpu_memory_utilization",
    "train.logging_steps",
    "train.disable_tqdm",
    "train.dataloader_num_workers",
    "train.report_to",
    "train.ddp_timeout",
    "train.poll_*",
    "train.max_poll_interval_s",
    "train.max_wait_s",
    "train.max_usd",
    "judge.*.max_concurrency",
    "judge.*.max_usd",
    "judge.*.timeout*",
    "judge.*.max_retries",
    "judge.*.backoff_s",
    "judge.*.cache_dir",
    # what decides which runs are allowed or which number is the headline, not the numbers themselves
    "peft.supports.*",
    "peft.trains",
    "train.kind",
    "eval.headline_judge",
    "mitigation.*._target_",
)


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of a plain config (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out |= flat(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config that determines a run's results, flat and sorted."""
    # Each kept node is resolved in place, so that interpolations into left-out groups (${cache.dir}) still resolve.
    kept = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg if k not in NOT_RESULT_GROUPS}  # fmt: skip
    leaves = flat(kept)
    kept_leaves = {k: v for k, v in sorted(leaves.items()) if not any(fnmatch.fnmatch(k, p) for p in NOT_RESULT_KEYS)}
    return {k: redacted(k, v) for k, v in kept_leaves.items()}


def redacted(key: str, value: Any) -> Any:
    """A key pasted into the config never reaches the fingerprint file (validation refuses secret-named keys, but a
    key in free text, e.g. a note, only looks like one)."""
    secret = is_secret_name(key.rsplit(".", 1)[-1]) and isinstance(value, str) and bool(value)
    return REDACTED if secret or looks_like_secret(str(value)) else value


def digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hydra_files(out: Path) -> dict[str, str]:
    """The `.hydra/*.yaml` of this start (secrets already redacted by fts.core.secrets.RedactSecrets)."""
    return {p.name: p.read_text() for p in sorted((out / ".hydra").glob("*.yaml"))}


def short(value: Any, most: int = 48) -> str:
    """A value as it reads in the message: a system prompt or a list is cut, not printed whole."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


def differences(old: dict[str, Any], new: dict[str, Any], most: int = 8) -> str:
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    shown = [f"{k}: {short(old.get(k, '<unset>'))} -> {short(new.get(k, '<unset>'))}" for k in keys[:most]]
    more = f" (and {len(keys) - most} more)" if len(keys) > most else ""
    return "; ".join(shown) + more


def bind(cfg: DictConfig, out: Path, write: bool = True) -> None:
    """Bind the run dir `out` to `cfg`, or stop: a run dir never returns or resumes results of another config.

    `write` is false on the non-main processes of a multi-process run: they check, the main one writes.
    """
    config = result_config(cfg)
    record = {"fingerprint": digest(config), "config": config}
    previous = read(out)
    if previous is not None and previous.get("fingerprint") != record["fingerprint"]:
        if cfg.get("resume", "auto") != "force":
            restore_hydra_files(out, previous)
            raise ConfigError(
                f"{out} holds the results of another config ({differences(previous.get('config', {}), config)}). "
                "A run dir belongs to the config that made it: give this config its own dir (hydra.run.dir=<new "
                "dir>, or for a sweep hydra.sweep.dir=<new dir>), or set resume=force to move the old results "
                "into superseded/ and run this config in this dir."
            )
        if write:
            supersede(out)
    if write and (previous is None or previous.get("fingerprint") != record["fingerprint"]):
        write_json(out / FILE, record | {"hydra": hydra_files(out)})


def read(out: Path) -> dict[str, Any] | None:
    path = out / FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{path} cannot be read ({e}): it binds the run dir to its config. Restore it, or set resume=force "
            "to move the old results aside and run again."
        ) from None


def restore_hydra_files(out: Path, previous: dict[str, Any]) -> None:
    """Hydra has already overwritten `.hydra/` with the refused config: put back the files of the dir's own."""
    for name, text in (previous.get("hydra") or {}).items():
        (out / ".hydra" / name).write_text(text)


def supersede(out: Path) -> Path:
    """Move every result of the run dir into superseded/<time>/ (nothing is deleted); `.hydra/` and the log of this
    start stay."""
    target = out / "superseded" / time.strftime("%Y-%m-%d_%H-%M-%S")
    target.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():
        if entry.name not in (".hydra", "superseded", "run.log"):
            entry.rename(target / entry.name)
    return target


def recorded_config(run_dir: Path) -> tuple[dict[str, Any], list[str]] | None:
    """(config, overrides) a run dir's results were computed under, from its fingerprint; None for a run dir
    written before fingerprints existed."""
    record = read(run_dir)
    files = (record or {}).get("hydra") or {}
    if "config.yaml" not in files:  # written by an in-process run (tests, notebooks): no Hydra files to keep
        return None
    config = OmegaConf.to_container(OmegaConf.create(files.get("config.yaml") or "{}"), resolve=False)
    overrides = OmegaConf.to_container(OmegaConf.create(files.get("overrides.yaml") or "[]"))
    return config, list(overrides or [])
