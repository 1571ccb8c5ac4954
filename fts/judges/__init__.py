"""Judges turn Generations into Verdicts, chosen by `judge=<name>` (several may run): the keyword judge, the local
classifiers (fts.judges.classifier: Llama Guard, HarmBench, WildGuard), the moderation endpoint on the responses
(fts.judges.moderation), and the API judge (fts.judges.api.ApiJudge), one class for every judge behind an
OpenAI-compatible chat API, its prompt a kind of fts.judges.kinds (rubric, refusal, strongreject, mt_bench)."""

from typing import Protocol

from omegaconf import DictConfig

from fts.core.config import build
from fts.core.records import Generation, Verdict


class Judge(Protocol):
    name: str

    def check(self) -> None:
        """Its own settings, checked without loading weights or calling an endpoint (fts.validate): raise an
        FtsError naming the key and the fix."""

    def preflight(self, n_verdicts: int) -> None:
        """Called before any model loads: raise an FtsError if `n_verdicts` cannot be paid for or reached."""

    def judge(self, generations: list[Generation]) -> list[Verdict]:
        """One verdict per generation, in order. Judges see `prompt` (the bare request) and `response`."""

    def usage(self) -> dict | None:
        """Tokens and dollars spent so far (API judges), or None."""


def build_judges(judge_cfg: DictConfig) -> dict[str, Judge]:
    """`judge` holds one node per selected judge, keyed by its name (e.g. judge.keyword)."""

    return {name: build(node, name=name) for name, node in judge_cfg.items()}
