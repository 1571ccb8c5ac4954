"""Mitigations: defenses against harmful fine-tuning, each acting at the stage a model provider controls.

`mitigation` holds one node per selected option of conf/mitigation/, keyed by name (several at once:
'mitigation=[safety_mix,safelora]'), each built from its `_target_` and declaring its `stage`:

- `alignment`: the provider hardens the aligned model before any user fine-tunes it (vaccine, repnoise, booster).
  The result is a defended checkpoint, cached by content hash and reused by every cell of a sweep; the user's
  fine-tuning starts from it. Such a defense has `material()` (what decides the checkpoint) and `harden(...)`.
- `fine_tuning`: the provider controls the fine-tuning API. Either the data changes (safety_mix, moderation:
  `apply(examples, attack, seed, out)` returns the set to train on) or the objective does (lisa, constrained_sft,
  kl_anchor: `objective(guide)` returns the trainer to use; at most one per run, they all replace the loss).
- `post_fine_tuning`: repair after the fact (safelora, antidote): `repair(model, ...)` changes the fine-tuned
  weights in place.

The mechanisms live in fts.train.defenses (training and weights); this module only groups them by stage, runs the
data-changing ones and puts their alignment ("guide") data into the attack's format.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fts.core.config import build
from fts.core.errors import ConfigError
from fts.core.records import Example
from fts.stages.attacks import Attack

STAGES = ("alignment", "fine_tuning", "post_fine_tuning")


@dataclass
class Defenses:
    """The run's defenses, built and grouped by stage, in the order they were selected."""

    alignment: list[Any] = field(default_factory=list)
    data: list[Any] = field(default_factory=list)
    objective: Any | None = None
    post: list[Any] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        objective = [self.objective] if self.objective is not None else []
        return [d.name for d in [*self.alignment, *self.data, *objective, *self.post]]


def build_defenses(mitigation_cfg: DictConfig) -> Defenses:
    """Every selected mitigation, built (leaf objects only: nothing loads) and grouped by stage."""
    defenses = Defenses()
    for name, node in mitigation_cfg.items():
        defense = build(node, name=name)
        stage = defense.stage
        if stage == "alignment":
            defenses.alignment.append(defense)
        elif stage == "post_fine_tuning":
            defenses.post.append(defense)
        elif stage == "fine_tuning" and hasattr(defense, "apply"):
            defenses.data.append(defense)
        elif stage == "fine_tuning":
            if defenses.objective is not None:  # validation says so first; this guards in-process callers
                raise ConfigError(f"mitigation: {defenses.objective.name} and {name} both replace the loss.")
            defenses.objective = defense
        else:
            raise ConfigError(f"mitigation.{name}.stage must be one of {', '.join(STAGES)}, got {stage!r}.")
    return defenses


def apply(
    examples: list[Example], defenses: Defenses, seed: int, attack: Attack, out: Path | None = None
) -> list[Example]:
    """The fine-tuning set after the data-changing defenses, in the order selected; `out` (the run dir) receives
    what they record (moderation.json)."""
    for defense in defenses.data:
        examples = defense.apply(examples, attack=attack, seed=seed, out=out)
    return examples


def objective(defenses: Defenses, attack: Attack) -> Any | None:
    """What the fine-tuning trains with: the fine-tuning-stage defense's objective (fts.train.defenses.Objective),
    its guide data (the provider's alignment data: harmful request -> refusal, ...) put in the attack's own
    training format, as the provider would mix it into the user's job; None = plain SFT."""
    if defenses.objective is None:
        return None
    guide = [{**attack.as_training_example(ex), "source": ex["source"]} for ex in defenses.objective.guide()]
    return defenses.objective.objective(guide)
