"""Stage 1 of a cell: the fine-tuning set, i.e. the attack tier's data, then the mitigation's changes."""

from pathlib import Path

from omegaconf import DictConfig

from fts.core.artifacts import write_jsonl
from fts.core.config import build
from fts.core.manifest import Manifest
from fts.core.records import Example
from fts.data.lengths import check_example_chars
from fts.stages import mitigation
from fts.stages.attacks import Attack


def build_training_set(
    cfg: DictConfig,
    out: Path | None = None,
    manifest: Manifest | None = None,
    defenses: mitigation.Defenses | None = None,
) -> tuple[Attack, list[Example]]:
    """(the attack, its fine-tuning set). With `out` (the main process) the set is written to train.jsonl before
    any training, and the manifest counts it; the other processes of a multi-process run build the same set.
    `defenses`: the run's, built from cfg.mitigation when not given."""
    attack = build(cfg.attack)
    defenses = defenses if defenses is not None else mitigation.build_defenses(cfg.mitigation)
    train_set = mitigation.apply(attack.training_examples(), defenses, cfg.seed, attack, out)
    if cfg.train.get("max_length") is not None:  # a huge example stops here, before any tokenizer sees it
        train_set = check_example_chars(train_set, cfg.train.max_length, cfg.train.get("too_long", "warn"))
    if out is not None and manifest is not None:
        write_jsonl(out / "train.jsonl", train_set)
        manifest.record(train_examples=len(train_set), attack_stats=getattr(attack, "stats", {}))
    return attack, train_set
