#!/usr/bin/env bash
# bash experiments/embedded_defenses.sh [overrides...]
# Issue 19's table on the embedded model: every defense x {harmful 10-shot, AOA}, plus no defense, at equal attack
# updates (the attacks' default recipes), one sweep: keyword ASR, over-refusal and QA utility of the aligned model,
# the defended one (alignment-stage defenses) and after the attack, with each defense's cost (metrics.json
# defense_cost: wall time, peak memory, passes per step). The alignment-stage defenses build their defended
# checkpoint once each (cached), shared by both attacks. Then the sweep report: sweep.md's "Defense x attack" tables,
# defense_harm_vs_utility.png. The README's "Defenses" section has the figures.
set -euo pipefail
sweep_dir=${SWEEP_DIR:-logs/embedded_defenses/multiruns/$(date +%Y-%m-%d_%H-%M-%S)}
defenses=none,vaccine,booster,repnoise,lisa,constrained_sft,kl_anchor,safelora,antidote
python -m fts.run -m mitigation=$defenses attack=harmful,aoa task_name=embedded_defenses \
  hydra.sweep.dir="$sweep_dir" hydra.sweep.subdir='${hydra:runtime.choices.mitigation}-${attack.name}' "$@"
python -m fts.report "$sweep_dir"
