#!/usr/bin/env bash
# bash experiments/table4_mitigation_smoke.sh [extra overrides...]
# Table 4 (mitigation by mixing safety data) in miniature on the embedded model, CPU: the tier-1 (10-shot) and AOA
# attacks with 0 / 30% / 50% of the fine-tuning set made of built-in safety examples, 20 updates each (so that the
# ratio, not the number of steps, differs), then the sweep report
# (sweep.csv, sweep.md, asr_vs_mix_ratio.png, per_category.png, harm_vs_over_refusal.png in the sweep dir).
# Rerunning with the same SWEEP_DIR skips finished cells.
set -euo pipefail
sweep_dir=${SWEEP_DIR:-logs/table4_smoke/multiruns/$(date +%Y-%m-%d_%H-%M-%S)}
# one thread per cell: submitit_local runs the cells side by side, and OpenMP spinning across them is slow
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m fts.run -m hydra/launcher=submitit_local attack=harmful,aoa train.max_steps=20 \
  mitigation=safety_mix mitigation.safety_mix.ratio=0,0.3,0.5 eval.max_per_category=5 eval.max_benign=10 \
  task_name=table4_smoke hydra.sweep.dir="$sweep_dir" "$@"
python -m fts.report "$sweep_dir"
