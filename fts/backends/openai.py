"""Models behind the OpenAI fine-tuning API: no weights here, a handle (`fts.models.openai`). The fine-tuning set
is checked against the API's rules and priced before anything is sent; the provider trains it as a job
(`fts.train.openai`) and the chat completions endpoint generates (`fts.generate.openai`)."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fts.core.cache import Cache
from fts.core.manifest import Manifest
from fts.models import generation_key
from fts.models.openai import OpenAIModel, open_model
from fts.train import openai as api_training


class OpenAIBackend:
    tokenizer = None  # the provider renders and tokenizes
    identity: dict[str, Any] | None = None

    def __init__(self, cfg: DictConfig, cache: Cache, out: Path, manifest: Manifest | None) -> None:
        self.cfg, self.out, self.manifest = cfg, out, manifest
        self.job_plan: api_training.Plan | None = None
        self.model: OpenAIModel | None = None
        self.trained: OpenAIModel | None = None
        self.costs: dict[str, dict] = {}  # the provider's training: its cost is the job's record (metrics fine_tune)

    def engine(self) -> None:
        return None

    def plan(self, train_set: list) -> dict[str, Any] | None:
        """The upload written, checked and priced (held to train.max_usd); for train.dry_run the estimate, which
        ends the run: nothing is sent, nothing evaluated."""
        self.job_plan = api_training.plan_for(self.cfg, train_set, self.out)
        return self.job_plan.summary() if self.job_plan.dry_run else None

    def open(self) -> None:
        """The handle of model.path; key and endpoint are checked, no request is made."""
        self.model = open_model(self.cfg.model)
        self.identity = self.model.identity()
        if self.manifest is not None:
            self.manifest.record(model_identity=self.identity, model_commit=None)

    def fit(self, train_set: list) -> list:
        return train_set  # the API's own rules were checked by plan()

    def fit_prompts(self, eval_sets: dict[str, list]) -> int:
        return 0  # the provider's context is the provider's: it answers with an error, which is reported

    def baseline_key(self) -> dict[str, Any]:
        return generation_key(self.cfg.model, self.identity, None)

    def source(self, trained: bool) -> OpenAIModel | None:
        return self.trained if trained else self.model

    def defend(self, defenses: list) -> dict[str, Any]:
        return {}  # the provider's weights are out of reach: validation allows no alignment-stage defense here

    def fine_tune(self, train_set: list, report_to: list, objective=None) -> dict[str, Any]:
        """Run (or reattach to) the job; its record is the `fine_tune` block of metrics.json. A job the provider
        fails leaves `trained` None: the baseline stands alone. (`objective`: validation allows none here.)"""
        self.trained, job = api_training.fine_tune(self.model, self.job_plan, self.cfg.train, self.out)
        return job

    def repair(self, defenses: list) -> dict[str, Any]:
        return {}  # no weights to repair: validation allows no post-fine-tuning defense here
