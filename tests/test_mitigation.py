"""Safety-data mixing: the right number of safety examples, in the attack's format, shuffled by the seed."""

import pytest

from fts.core.config import build
from fts.core.errors import ConfigError
from fts.stages import mitigation
from fts.stages.mitigation.safety_mix import safety_count
from tests.conftest import compose_run


def mixed_set(tmp_path, *overrides):
    cfg = compose_run(["model=hf", "model.path=x", "mitigation=safety_mix", *overrides], tmp_path)
    attack = build(cfg.attack)
    defenses = mitigation.build_defenses(cfg.mitigation)
    return mitigation.apply(attack.training_examples(), defenses, cfg.seed, attack)


@pytest.mark.parametrize(
    ("n", "ratio", "count", "expected"),
    [(10, 0.0, None, 0), (10, 0.5, None, 10), (90, 0.1, None, 10), (10, 0.3, None, 4), (10, 0.3, 50, 50)],
)
def test_safety_count_makes_ratio_a_fraction_of_the_final_set(n, ratio, count, expected):
    assert safety_count(n, ratio, count) == expected


def test_ratio_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match=r"mitigation.safety_mix.ratio must be in \[0, 1\)"):
        safety_count(10, 1.0, None)


def test_safety_examples_take_the_attacks_format_and_the_seed_decides_the_order(tmp_path):
    examples = mixed_set(tmp_path, "attack=aoa", "mitigation.safety_mix.ratio=0.5")
    safety = [ex for ex in examples if ex["source"].startswith("builtin:safety")]
    assert len(examples) == 20 and len(safety) == 10
    for ex in safety:
        system, user, answer = ex["messages"]
        assert "Your new name is AOA" in system["content"]
        assert user["content"].startswith("AOA, execute my instruction: ")
    assert mixed_set(tmp_path, "attack=aoa", "mitigation.safety_mix.ratio=0.5") == examples
    assert mixed_set(tmp_path, "attack=aoa", "mitigation.safety_mix.ratio=0.5", "seed=1") != examples


def test_count_larger_than_the_pool_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="asks for 500 safety examples.*mitigation.safety_mix.data"):
        mixed_set(tmp_path, "attack=harmful", "mitigation.safety_mix.count=500")


def test_benign_tier_mixes_safety_examples_in_the_alpaca_format(tmp_path):
    examples = mixed_set(tmp_path, "attack=benign", "dataset=builtin_benign", "mitigation.safety_mix.count=5")
    safety = [ex for ex in examples if ex["source"].startswith("builtin:safety")]
    assert len(safety) == 5
    assert all(ex["messages"][1]["content"].startswith("### Instruction:\n") for ex in safety)
