"""Secrets: nothing that looks like a key reaches a run dir, a log, W&B or an error message.

Keys belong in the environment (`api_key_env`), but a user may still type one on the command line
(`+judge.gpt4.api_key=sk-...`) or paste one into a notes field. Hydra saves the composed config and the overrides
into `.hydra/` before fts's code runs, so the `RedactSecrets` callback (conf/hydra/default.yaml) rewrites those files
as the job starts, and filters the job's log handlers. W&B gets a scrubbed config (`scrub`, `scrub_arg`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("fts")

REDACTED = "<redacted>"
# A key is a secret when its last word is one of these (api_key, hf_token, client_secret, db_password), or when it
# names an API key or secret anywhere (openai_api_key_env). `max_new_tokens`, `keywords`, `pad_token_id` are kept.
SECRET_LAST_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
SECRET_ANYWHERE = re.compile(r"api_?key|secret|password", re.IGNORECASE)
# Values that look like credentials: OpenAI/Anthropic `sk-...`, HF `hf_...`, GitHub, Slack, AWS, Google, GitLab.
SECRET_VALUE = re.compile(
    r"\b(sk-[\w-]{6,}|sk_(live|test)_\w+|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w+"
    r"|xox[abprs]-[\w-]+|AKIA[0-9A-Z]{16}|AIza[\w-]{35}|glpat-[\w-]{20,})"
)
# `api_key_env: OPENAI_API_KEY` names a variable; its value is not the secret.
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
MIN_SECRET_CHARS = 8  # shorter values would redact ordinary words everywhere


def is_secret_name(name: str) -> bool:
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    parts = [p for p in re.split(r"[^a-z0-9]+", words) if p]
    return (bool(parts) and parts[-1] in SECRET_LAST_WORDS) or bool(SECRET_ANYWHERE.search(str(name)))


def secret_env_values() -> set[str]:
    """Values of environment variables with secret names (OPENAI_API_KEY, HF_TOKEN, ...)."""
    return {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_CHARS}


def looks_like_secret(value: Any, env_secrets: set[str] | None = None) -> bool:
    if not isinstance(value, str):
        return False
    env_secrets = secret_env_values() if env_secrets is None else env_secrets
    return bool(SECRET_VALUE.search(value)) or any(s in value for s in env_secrets)


def scrub(obj: Any, env_secrets: set[str] | None = None) -> Any:
    """A copy of a plain config without secret-named keys and without secret-looking values (for W&B)."""
    env_secrets = secret_env_values() if env_secrets is None else env_secrets
    if isinstance(obj, dict):
        return {
            k: scrub(v, env_secrets)
            for k, v in obj.items()
            if not is_secret_name(k) and not looks_like_secret(v, env_secrets)
        }
    if isinstance(obj, list | tuple):
        return [scrub(v, env_secrets) for v in obj if not looks_like_secret(v, env_secrets)]
    return obj


def scrub_arg(arg: str, env_secrets: set[str]) -> str:
    """A command-line argument with its value redacted when it is a secret (`judge.x.api_key=sk-...`)."""
    key, sep, _ = arg.partition("=")
    if (sep and is_secret_name(key.lstrip("+~"))) or looks_like_secret(arg, env_secrets):
        return f"{key}={REDACTED}" if sep else REDACTED
    return arg


def is_secret_value(name: str, value: Any) -> bool:
    """A string under a secret name that is not just the name of an environment variable."""
    return isinstance(value, str) and is_secret_name(name) and bool(value) and not ENV_NAME.match(value)


def config_secrets(obj: Any, path: str = "") -> dict[str, str]:
    """{dotted key: value} of every secret-named string in a plain config (or override list)."""
    found: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{path}.{k}" if path else str(k)
            found |= {key: v} if is_secret_value(str(k), v) else config_secrets(v, key)
    elif isinstance(obj, list | tuple):
        for item in obj:
            name, sep, value = item.partition("=") if isinstance(item, str) else ("", "", "")
            if sep and is_secret_value(name.lstrip("+~").split(".")[-1], value):
                found[name.lstrip("+~")] = value
            elif not isinstance(item, str):
                found |= config_secrets(item, path)
    return found


def redact_text(text: str, secrets: set[str]) -> str:
    """`text` with every known secret (longest first) and every key-shaped token replaced by REDACTED."""
    for secret in sorted((s for s in secrets if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return SECRET_VALUE.sub(REDACTED, text)


def redact_tree(obj: Any, secrets: set[str]) -> Any:
    """A plain config with secret-named values and secret-looking text redacted (keys and structure kept)."""
    if isinstance(obj, dict):
        return {k: REDACTED if is_secret_value(str(k), v) else redact_tree(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_arg(v, secrets) if isinstance(v, str) else redact_tree(v, secrets) for v in obj]
    return redact_text(obj, secrets) if isinstance(obj, str) else obj


def redact_yaml(path: Path, secrets: set[str]) -> bool:
    """Rewrite a YAML file saved by Hydra with secrets redacted (atomically); True when something changed."""
    from fts.core.artifacts import write_text

    if not path.is_file():
        return False
    plain = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = redact_tree(plain, secrets)
    if clean == plain:
        return False
    write_text(path, OmegaConf.to_yaml(OmegaConf.create(clean)))
    return True


def known_secrets(config: DictConfig | dict | list) -> set[str]:
    """The secrets one job knows about: secret-named values of its config and overrides, and the environment's."""
    plain = OmegaConf.to_container(config, resolve=False) if OmegaConf.is_config(config) else config
    return set(config_secrets(plain).values()) | secret_env_values()


class RedactingFilter(logging.Filter):
    """Redacts secrets from every record a handler writes (run.log, the console)."""

    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class RedactSecrets(Callback):
    """Hydra callback: redact secrets from `.hydra/*.yaml` (and the sweep's multirun.yaml) as the job starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """The submitit launchers pickle every job's config and overrides into <sweep dir>/.submitit/ before any job
        starts, out of this callback's reach: a key in either stops the sweep before anything is submitted."""
        if "submitit" not in str(config.hydra.launcher.get("_target_", "")):
            return
        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        found = config_secrets(OmegaConf.to_container(task, resolve=False))
        found |= config_secrets(list(config.hydra.overrides.task))
        if found:
            # Hydra turns an exception raised in a callback into a warning and goes on: exit instead.
            print(
                f"\nfts: error: {', '.join(sorted(found))}: a key in the config or on the command line of a submitit "
                "sweep is pickled into <sweep dir>/.submitit/ with every job, where it cannot be redacted; nothing "
                "was submitted. Export it in the environment instead (the api_key_env setting names the variable).",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        found = config_secrets(OmegaConf.to_container(task, resolve=False))
        found |= config_secrets(list(hydra.overrides.task))
        for key in sorted(found):
            log.warning(
                "%s looks like a secret: it was redacted from the run dir. Keys belong in the environment "
                "(the api_key_env setting names the variable), never in a config or on the command line.",
                key,
            )
        secrets = set(found.values()) | secret_env_values()
        files = []
        if hydra.output_subdir is not None:
            files += sorted((Path(hydra.runtime.output_dir) / hydra.output_subdir).glob("*.yaml"))
        if hydra.mode == RunMode.MULTIRUN:
            files.append(Path(hydra.sweep.dir) / "multirun.yaml")
        for path in files:
            redact_yaml(path, secrets)
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter(secrets))
