"""Fine-tuning through OpenAI's fine-tuning API (`model.backend: openai`), the paper's GPT-3.5 setting.

    plan = plan_for(cfg, train_set, run_dir)   # write model/training_file.jsonl, check the API's rules, price it
    model, record = fine_tune(base, plan, cfg.train, run_dir)   # upload -> job -> poll -> fine-tuned model id

Everything before the upload is local, so a malformed set, a missing price or an estimate above `train.max_usd`
stops the run before any money is spent; `train.dry_run=true` stops after the estimate. The job record
`model/openai_job.json` is written the moment the file is uploaded and again the moment the job exists, so a
rerun of the run dir reattaches to the same job (and file) instead of paying twice; the job's events go to
`model/events.jsonl`. A job the provider fails (e.g. its moderation rejects the data) is an outcome, not a crash:
the record says `failed` with the provider's message and the run goes on with the baseline alone.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
from omegaconf import DictConfig

from fts.core.artifacts import read_jsonl, write_json, write_jsonl
from fts.core.cache import file_digest
from fts.core.errors import ConfigError, FtsError
from fts.core.openai_api import host
from fts.core.records import Example
from fts.models.openai import OpenAIModel
from fts.train import openai_data as data

log = logging.getLogger(__name__)
TRAINING_FILE, JOB_FILE, EVENTS_FILE = "training_file.jsonl", "openai_job.json", "events.jsonl"
TERMINAL = ("succeeded", "failed", "cancelled")


class FineTuneTimeout(FtsError):
    """The job outlived `train.max_wait_s`; it keeps running at the provider and a rerun reattaches to it."""


@dataclass
class Plan:
    """What will be uploaded and what it will cost, known before any request."""

    base_model: str
    host: str  # where the job runs (api.openai.com or model.base_url's host)
    training_file: str  # path of the exact upload
    digest: str  # of that file: a rerun reattaches only to a job trained on the same bytes
    n_examples: int
    n_tokens: int  # per epoch (tiktoken when installed, else characters / 4)
    n_epochs: int
    usd_per_1m: float | None
    estimated_usd: float | None
    dry_run: bool

    def summary(self) -> dict[str, Any]:
        keys = ("base_model", "n_examples", "n_tokens", "n_epochs", "usd_per_1m", "estimated_usd")
        return {k: v for k, v in asdict(self).items() if k in keys}

    def identity(self) -> dict[str, str]:
        """What a recorded job must match to be reattached to: same base model, endpoint and training bytes."""
        return {"base_model": self.base_model, "host": self.host, "training_file_digest": self.digest}


def earlier_record(plan: Plan, path: Path) -> dict[str, Any]:
    """The job record an earlier run of this run dir left (or a fresh one); a record of another fine-tuning (the
    config changed since) is refused, so that a rerun never reports someone else's job."""
    if not path.exists():
        return plan.identity()
    record = json.loads(path.read_text())
    if {k: record.get(k) for k in plan.identity()} != plan.identity():
        raise ConfigError(
            f"{path} belongs to another fine-tuning (job {record.get('job_id')}: base model "
            f"{record.get('base_model')} at {record.get('host')}, other training data). Use a new run dir, or delete "
            "the file to start a new job here."
        )
    return record


def plan_for(cfg: DictConfig, train_set: list[Example], out: Path) -> Plan | None:
    """API models: the fine-tuning set written as the upload, checked against the API's rules, priced and held to
    `train.max_usd` (a dry run only warns). None for open models."""
    if cfg.model.backend != "openai":
        return None
    train, base = cfg.train, str(cfg.model.path)
    plan = Plan(base, host(cfg.model.base_url), "", "", 0, 0, train.n_epochs, None, None, bool(train.dry_run))
    if train_set:  # attack=none: nothing to upload, nothing to price
        path = out / "model" / TRAINING_FILE
        rows = data.chat_rows(train_set)
        write_jsonl(path, rows)
        tokens = data.validate(rows, base, int(cfg.model.max_example_tokens), str(path))
        plan.training_file, plan.digest = str(path), file_digest(path)
        plan.n_examples, plan.n_tokens = len(rows), sum(tokens)
        plan.usd_per_1m = data.price(train, base)
        plan.estimated_usd = data.usd(plan.n_tokens * plan.n_epochs, plan.usd_per_1m)
        earlier_record(plan, out / "model" / JOB_FILE)  # a mismatch fails now, before the baseline is paid for
    if train_set or plan.dry_run:
        print(estimate_line(plan, train.max_usd), flush=True)
    if not plan.dry_run:
        data.check_budget(plan.estimated_usd, train.max_usd)
    return plan


def estimate_line(plan: Plan, max_usd: float | None) -> str:
    price = "no price known" if plan.usd_per_1m is None else f"${plan.usd_per_1m:g} per 1M tokens"
    cost = "unknown" if plan.estimated_usd is None else f"${plan.estimated_usd:.4f}"
    over = plan.estimated_usd is not None and max_usd is not None and plan.estimated_usd > max_usd
    budget = f" (train.max_usd={max_usd}{': ABOVE the budget, a real run stops here' if over else ''})"
    return (
        f"OpenAI fine-tuning cost estimate{' (dry run)' if plan.dry_run else ''}: {plan.base_model}, "
        f"{plan.n_examples} examples, {plan.n_tokens:,} tokens per epoch x {plan.n_epochs} epochs = "
        f"{plan.n_tokens * plan.n_epochs:,} training tokens at {price} = {cost}{budget}"
    )


def fine_tune(model: OpenAIModel, plan: Plan, train_cfg: DictConfig, out: Path) -> tuple[OpenAIModel | None, dict]:
    """Run (or reattach to) the job; returns (the fine-tuned model, or None if the job did not succeed; the
    `fine_tune` block of metrics.json)."""
    record = Job(model, plan, train_cfg, out / "model").run()
    block = {
        "job_id": record["job_id"],
        "status": record["status"],
        "fine_tuned_model": record.get("fine_tuned_model"),
        "trained_tokens": record.get("trained_tokens"),
        "estimated_usd": plan.estimated_usd,
        "actual_usd": data.usd(record.get("trained_tokens"), plan.usd_per_1m),
        "n_epochs": record.get("n_epochs", plan.n_epochs),
        **{k: v for k, v in plan.summary().items() if k not in ("estimated_usd", "n_epochs")},
    }
    if record.get("error"):
        block["error"] = record["error"]
    succeeded = record["status"] == "succeeded" and record.get("fine_tuned_model")
    return (model.with_id(record["fine_tuned_model"]) if succeeded else None), block


class Job:
    """One fine-tuning job and its record in `model_dir`, from upload to a terminal status."""

    def __init__(self, model: OpenAIModel, plan: Plan, train_cfg: DictConfig, model_dir: Path) -> None:
        self.model, self.plan, self.cfg, self.dir = model, plan, train_cfg, model_dir
        self.api = model.endpoint
        self.record_path = model_dir / JOB_FILE

    def run(self) -> dict[str, Any]:
        record = earlier_record(self.plan, self.record_path)
        if record.get("status") in TERMINAL:  # finished in an earlier run of this run dir
            return record
        if "training_file" in record:
            log.info("reattaching to the fine-tuning recorded in %s", self.record_path)
        if "job_id" not in record:
            if "training_file" not in record:
                record["training_file"] = self.upload()
                self.save(record)
            record["job_id"] = self.create(record["training_file"])
            self.save(record)  # now: a run killed from here on reattaches to this job
        job = self.poll(record["job_id"])
        record |= finished(job)
        self.save(record)
        return record

    def save(self, record: dict[str, Any]) -> None:
        write_json(self.record_path, record)

    def upload(self) -> str:
        content = Path(self.plan.training_file).read_bytes()
        name = Path(self.plan.training_file).name
        uploaded = self.api.call(lambda c: c.files.create(file=(name, content), purpose="fine-tune"), "uploading")
        log.info("uploaded %s as %s", name, uploaded.id)
        return uploaded.id

    def create(self, file_id: str) -> str:
        cfg = self.cfg
        hyper = {"n_epochs": cfg.n_epochs}
        hyper |= {k: cfg[k] for k in ("batch_size", "learning_rate_multiplier") if cfg[k] is not None}
        options = {"suffix": cfg.suffix} if cfg.suffix else {}

        def request(client: openai.OpenAI):
            # A job on this very file already exists when an earlier attempt's reply was lost (timeout, kill):
            # reattach to it; a second job would train and bill twice.
            existing = next(
                (j for j in client.fine_tuning.jobs.list(limit=50).data if j.training_file == file_id), None
            )
            return existing or client.fine_tuning.jobs.create(
                model=self.plan.base_model,
                training_file=file_id,
                method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
                seed=cfg.seed,
                **options,
            )

        job = self.api.call(request, "creating the fine-tuning job")
        log.info("fine-tuning job %s (%s, %s)", job.id, self.plan.base_model, hyper)
        return job.id

    def poll(self, job_id: str):
        """Retrieve the job until it ends, waiting longer between polls (backoff), logging each change."""
        cfg, interval, started, last = self.cfg, float(self.cfg.poll_interval_s), time.monotonic(), None
        while True:
            job = self.api.call(lambda c: c.fine_tuning.jobs.retrieve(job_id), f"polling job {job_id}")
            events = self.save_events(job_id, everything=job.status in TERMINAL)
            line = progress(job, events)
            if line != last:  # one log line per change, not per poll
                log.info("%s (%.0f s)", line, time.monotonic() - started)
                last = line
            if job.status in TERMINAL:
                return job
            if time.monotonic() - started > cfg.max_wait_s:
                raise FineTuneTimeout(
                    f"fine-tuning job {job_id} is still {job.status} after train.max_wait_s={cfg.max_wait_s} s. It "
                    f"keeps running at the provider: rerun with hydra.run.dir={self.dir.parent} to reattach to it "
                    "(or raise train.max_wait_s)."
                )
            time.sleep(interval)
            interval = min(interval * cfg.poll_backoff, cfg.max_poll_interval_s)

    def save_events(self, job_id: str, everything: bool) -> list[dict]:
        """Merge the newest events (all of them at the end) into model/events.jsonl, oldest first."""
        path = self.dir / EVENTS_FILE
        known = read_jsonl(path) if path.exists() else []

        def request(client: openai.OpenAI) -> list:
            page = client.fine_tuning.jobs.list_events(job_id, limit=100)
            return list(page) if everything else page.data  # iterating a page fetches the following pages

        seen = {e["id"] for e in known}
        newest_first = self.api.call(request, f"reading the events of job {job_id}")
        new = [e.model_dump(mode="json") for e in reversed(newest_first) if e.id not in seen]
        if new:
            write_jsonl(path, known + new)
        return known + new


def finished(job) -> dict[str, Any]:
    epochs = getattr(job.hyperparameters, "n_epochs", None) if job.hyperparameters else None
    out = {"status": job.status, "fine_tuned_model": job.fine_tuned_model, "trained_tokens": job.trained_tokens}
    out["error"] = job.error.message if job.error and job.error.message else None
    if isinstance(epochs, int):
        out["n_epochs"] = epochs
    return out


def progress(job, events: list[dict]) -> str:
    tokens = "-" if job.trained_tokens is None else f"{job.trained_tokens:,}"
    line = f"fine-tuning job {job.id}: {job.status}, trained tokens {tokens}"
    metrics = next((e["data"] for e in reversed(events) if e.get("type") == "metrics" and e.get("data")), None)
    if metrics and "step" in metrics:
        total = f"/{metrics['total_steps']}" if metrics.get("total_steps") else ""
        loss = f", train loss {metrics['train_loss']:.3f}" if isinstance(metrics.get("train_loss"), float) else ""
        line += f", step {metrics['step']}{total}{loss}"
    return line
