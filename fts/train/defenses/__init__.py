"""The mechanisms of the defenses against harmful fine-tuning (fts.stages.mitigation groups them by stage): one
module per defense, each a `_target_` class holding the hyper-parameters its paper reports, plus, for the ones that
train, a subclass of fts's Trainer. Built on TRL and PEFT; no framework of their own.

- alignment stage (`harden`: the aligned model -> the defended one, trained on alignment data):
  vaccine (perturbation-aware alignment), repnoise (representation noising), booster (harmful-perturbation
  attenuation)
- fine-tuning stage (`objective`: the trainer that replaces plain SFT on the user's data): lisa (bi-state
  optimisation with a proximal term), constrained_sft (token-wise constrained objective), kl_anchor (KL to the
  aligned model on alignment prompts)
- post-fine-tuning (`repair`: the fine-tuned weights changed in place): safelora (projection onto the alignment
  subspace), antidote (pruning the weights that drive harmful output)
"""

from dataclasses import dataclass, field
from typing import Any

from fts.core.records import Example


@dataclass
class Objective:
    """What a training-time defense trains with: its Trainer subclass, that trainer's settings, and the guide set
    (alignment data, already in the prompt format it is trained in) it trains on beside the user's data."""

    trainer: type
    settings: dict[str, Any] = field(default_factory=dict)
    guide: list[Example] = field(default_factory=list)
    name: str = "training"  # the defense's name: its cost is recorded under it
