"""The command line around `python -m fts.run`: what a user sees when something goes wrong before, around or
after the job, where fts's own error handling (`fts.run.main`) cannot reach.

- Hydra's own failures before any job starts (a config group that does not exist, an override it cannot parse) are
  user errors: exit code 2, as for every fts error, not Hydra's 1.
- Ctrl-C ends in one line that says how to resume, not a KeyboardInterrupt traceback.
- An output dir that cannot be written is found before Hydra configures its log file there (Hydra would stop with a
  logging traceback, "Unable to configure handler 'file'").
"""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fts.core.secrets import is_secret_name, looks_like_secret

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
job_started = False  # set by fts.run.main: a failure after this point is the job's own, reported by fts


def fail(message: str) -> None:
    """One paragraph on stderr and exit 2 (Hydra turns an exception raised in a callback into a warning)."""
    print(f"\nfts: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def interrupted(where: str | None) -> None:
    """What to do after Ctrl-C: every finished stage is on disk, and the same run dir resumes after it."""
    if where:
        hint = f"rerun the same command with {where} to resume where it stopped (finished stages are kept)"
    else:  # in Hydra's own code: before the first job, or between the jobs of a sweep
        hint = "rerun the same command (a sweep: with hydra.sweep.dir=<its dir>, to keep the cells it finished)"
    print(f"\nfts: interrupted; {hint}.", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INTERRUPTED)


def resume_hint(cfg: DictConfig) -> str:
    """`hydra.run.dir=<dir>` for a run, `-m ... hydra.sweep.dir=<dir>` for a sweep: the override that resumes it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():  # in-process (tests, notebooks): the run dir is all there is
        return f"hydra.run.dir={cfg.paths.output_dir}"
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return f"-m and hydra.sweep.dir={hydra.sweep.dir}"
    return f"hydra.run.dir={hydra.run.dir}"


def guarded(entry: Callable[[], Any]) -> None:
    """Run the Hydra entry point `entry` with fts's exit codes around it."""
    try:
        entry()
    except KeyboardInterrupt:  # before the job (composing, importing) or in Hydra's own code after it
        interrupted(None)
    except SystemExit as e:
        if e.code == 1 and not job_started:  # Hydra printed its one-line reason (bad group, bad override syntax)
            print("fts: see `python -m fts.run --help` for the config groups and examples.", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        raise


def search_name(argv: list[str] | None = None) -> str:
    """The folder of an adaptive search (`${fts.search_name:}`, conf/hydra/sweeper/attack_search.yaml): the task
    overrides of its command line, sorted, so that rerunning the same command finds its study and resumes it.

    Read from the command line, not from the config: a trial's config holds that trial's values, and every trial must
    land in the same sweep dir (the resolver is cached, and Hydra copies the cache into every job's config). Hydra's
    own overrides and secrets are left out; characters a shell would glob or split on are dropped or replaced.
    """
    from hydra._internal.utils import get_args_parser  # Hydra's own parser of its command line

    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    kept = []
    for override in sorted(args.overrides):
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if not key.startswith("hydra") and not is_secret_name(key) and not looks_like_secret(value):
            kept.append(override)
    name = re.sub(r"[^\w.=+,@-]", "_", re.sub(r"[\[\]()'\" ]", "", ",".join(kept))) or "default"
    if len(name) > 100:  # a long command (paths, lists): a readable head and a hash of the whole
        name = f"{name[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


def writable_dir_problem(path: Path) -> str | None:
    """None when `path` (created if missing) takes a file; else why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fts-write-check-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


class CheckOutputDir(Callback):
    """Hydra callback: the run dir (or the sweep dir) must be writable before Hydra puts its files and log there."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")

    @staticmethod
    def check(path: Path, key: str) -> None:
        problem = writable_dir_problem(path.absolute())
        if problem is not None:
            fail(
                f"{key}: cannot write into {path.absolute()} ({problem}). Point {key}=<a writable dir> at another "
                "place (or set FTS_ROOT=<writable dir>: run dirs go under $FTS_ROOT/logs), or fix the permissions."
            )
