"""`-m hydra/sweeper=attack_search`: an adaptive attacker. Hydra's Optuna sweeper (TPE) searches the attack's
fine-tuning settings for the most harmful model (conf/hydra/sweeper/attack_search.yaml: ranges, trials, sampler).

The study lives in `<sweep dir>/study.db` (SQLite), and the sweep dir is named after the command's overrides
(`fts.cli.search_name`), so rerunning the same command resumes the study. Three changes to the stock sweeper make
that safe:

- a trial's job dir is its Optuna trial number, so that a resumed study's new trials never land in the run dir of an
  older trial (a run dir refuses another config, fts.core.fingerprint);
- the study's trials with a result count toward n_trials, and a trial that a killed sweep left RUNNING is marked
  failed and its settings are asked again (one sweep process per study: at the start, nothing else is running it);
- the sampler's seed is offset by the trials the study already has, so that a resumed search draws new settings,
  not again the ones its seed drew for trial 0.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.experimental.callback import Callback
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import DictConfig
from optuna.trial import TrialState

from fts import cli
from fts.core.secrets import config_secrets

log = logging.getLogger("fts")
WITH_RESULT = (TrialState.COMPLETE, TrialState.PRUNED)


class AttackSearch(OptunaSweeperImpl):
    """Hydra's Optuna sweeper with a resumable study (see the module docstring)."""

    def __init__(self, search_dir: str, **optuna_sweeper: Any) -> None:
        # search_dir is where conf/hydra/default.yaml puts the sweep dir of a search; Hydra has placed it already.
        super().__init__(**optuna_sweeper)

    def sweep(self, arguments: list[str]) -> None:
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, directions=self._get_directions(), load_if_exists=True
        )
        interrupted = ask_again(study)
        done = sum(t.state in WITH_RESULT for t in study.trials)
        if done or interrupted:
            log.info(
                "Resuming study %s: %d trials with a result, %d to go; settings asked again of interrupted trials: %s",
                self.study_name, done, max(self.n_trials - done, 0), interrupted or "none",
            )  # fmt: skip
        self.n_trials = max(self.n_trials - done, 0)
        self.sampler = seeded(self.sampler, len(study.trials))
        super().sweep(arguments)

    def _configure_trials(self, trials: list, search_space_distributions: dict, fixed_params: dict) -> Sequence:
        numbers = [t.number for t in trials]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            raise RuntimeError(
                f"trials {numbers} of {self.study_name} are not consecutive: is another sweep running it?"
            )
        self.job_idx = numbers[0]  # the launcher numbers its jobs from here: job dir = trial number
        return super()._configure_trials(trials, search_space_distributions, fixed_params)


def ask_again(study: optuna.Study) -> list[int]:
    """Mark the trials a killed sweep left RUNNING as failed and queue their settings for the next trials; returns
    their numbers. A failed trial has no result and does not count toward n_trials."""
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        with warnings.catch_warnings():  # enqueue_trial is "experimental" in Optuna 2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(trial.params)
        numbers.append(trial.number)
    return numbers


def seeded(sampler: Any, offset: int) -> Any:
    """Build a `_partial_` sampler with its seed offset by the trials the study has (a seeded sampler would otherwise
    repeat, on a resumed study, the settings it drew first). A grid sampler is left to the stock sweeper."""
    if not isinstance(sampler, functools.partial) or sampler.func is optuna.samplers.GridSampler:
        return sampler
    seed = sampler.keywords.get("seed")
    return sampler(seed=None if seed is None else seed + offset)


class SearchChecks(Callback):
    """Hydra callback of an attack search (conf/hydra/sweeper/attack_search.yaml). Hydra builds it before the
    sweeper, so importing this module registers the sweeper first (below). It stops a search with a key on its
    command line: the sweeper stores every fixed override in study.db with each trial, where it cannot be redacted."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        found = config_secrets(list(config.hydra.overrides.task))
        if found:
            cli.fail(
                f"{', '.join(sorted(found))}: a key on the command line of an attack search is stored in "
                "<sweep dir>/study.db with every trial, where it cannot be redacted; nothing was run. Export it in "
                "the environment instead (the api_key_env setting names the variable)."
            )


# Hydra builds a sweeper only from the `hydra_plugins` namespace (hydra.core.plugins: the class registered under a
# name there, which it then imports). fts's lives in fts/ (the repository's top level is fixed), so this module
# takes that name too, the one conf/hydra/sweeper/attack_search.yaml uses.
PLUGIN_MODULE = "hydra_plugins.fts_attack_search"
sys.modules[PLUGIN_MODULE] = sys.modules[__name__]
AttackSearch.__module__ = PLUGIN_MODULE
Plugins.instance().register(AttackSearch)
logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's SQL storage imports it: one line per plugin
