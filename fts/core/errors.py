"""Errors a user can cause. Each message names the file or config key and says how to fix it."""


class FtsError(Exception):
    """Base class: caught by `fts.run.main`, printed as one paragraph, exit code 2."""


class ConfigError(FtsError):
    """A config value is missing, mistyped or inconsistent with another one."""


class DataError(FtsError):
    """A data file is missing or malformed (the message names the file and line)."""


class ModelError(FtsError):
    """A model cannot be found or loaded (missing package, gated hub id, bad path)."""


class ArtifactError(FtsError):
    """A run-dir or cache file cannot be written (disk full, no permission, read-only file system)."""
