#!/usr/bin/env bash
# bash experiments/embedded_formats.sh [overrides...]
# The aligned embedded model (before any attack) under every tier's prompt format, as issue 18 asks: the plain
# assistant prompt (attack=none), the tier-1 prompt (harmful; also the backdoor's, without its trigger), the AOA
# persona and template (aoa), the Alpaca format (benign). No data is trained on (attack.data=null): each cell
# evaluates the aligned model only: keyword ASR on the 110 built-in harmful prompts, over-refusal on the 30 benign
# ones (per type), QA utility. Then the sweep report (sweep.md in the sweep dir). Reruns reuse the cache.
set -euo pipefail
sweep_dir=${SWEEP_DIR:-logs/embedded_formats/multiruns/$(date +%Y-%m-%d_%H-%M-%S)}
python -m fts.run -m attack=none,harmful,aoa attack.data=null task_name=embedded_formats \
  hydra.sweep.dir="$sweep_dir" hydra.sweep.subdir='${attack.name}' "$@"
python -m fts.run attack=none task_name=embedded_formats hydra.run.dir="$sweep_dir/alpaca" \
  attack.default_system_prompt="'Below is an instruction that describes a task. Write a response that appropriately completes the request.'" \
  attack.user_template=$'"### Instruction:\n{prompt}\n\n### Response:\n"' "$@"   # the benign tier's (Alpaca) format
python -m fts.report "$sweep_dir"
