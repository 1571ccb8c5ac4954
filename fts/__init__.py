"""fts: how much safety does an aligned language model lose when someone fine-tunes it?"""

__version__ = "0.1.0"

import logging
import os
import sys

# oneDNN (PyTorch's bf16 CPU matmuls) caches a compiled primitive per operand shape, up to 1024 by default; training on
# batches of varying length fills it, and the safety alignment's peak RSS grew with every step (2.8 GiB after 10 steps,
# 4.2 after 60). 64 keeps every shape a step uses (4.2 -> 3.7 GiB at 60 steps, no slower). Read once, when torch's
# oneDNN first runs: set here, before fts imports torch; a value the user set wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

from omegaconf import OmegaConf  # noqa: E402 (after the environment variable above)

from fts.cli import search_name  # noqa: E402

# bitsandbytes warns at import that it cannot fetch an optional CPU kernel from the hub; fts never needs it
# (4-bit CPU paths still work), and the warning buries the run's own output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# `${fts.cwd:}`: the directory fts was started from. Hydra's `${hydra:runtime.cwd}` does not exist yet when a multirun
# resolves its sweep dir, so conf/paths uses this instead. Cached: one value per composed config, also in the pickled
# config that a submitit job receives.
OmegaConf.register_new_resolver("fts.cwd", os.getcwd, use_cache=True, replace=True)
# `${fts.search_name:}`: an adaptive search's sweep dir, named after its command line (fts.cli.search_name); cached as
# fts.cwd, so that every trial's config names the same dir.
OmegaConf.register_new_resolver("fts.search_name", search_name, use_cache=True, replace=True)


def _quiet_interrupt(kind, value, traceback) -> None:
    """Ctrl-C while a `python -m fts.<command>` is still importing its libraries (several seconds on a CPU): one
    line, not a traceback. Once the job runs, fts.cli says how to resume; Python then exits as killed by SIGINT."""
    if issubclass(kind, KeyboardInterrupt):
        print("\nfts: interrupted before the run started; nothing was written.", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, value, traceback)


_argv = getattr(sys, "orig_argv", [])
if "-m" in _argv[:-1] and _argv[_argv.index("-m") + 1].startswith("fts."):  # a command line, not a library import
    sys.excepthook = _quiet_interrupt
