#!/usr/bin/env bash
# bash experiments/openai_cost_estimate.sh [ALPACA_JSON] [extra overrides...]
# What the paper's three GPT-3.5 tiers cost to fine-tune through OpenAI's API, without spending anything: a dry run
# (train.dry_run=true: the fine-tuning set is built, checked against the API's rules and priced; no upload, no job,
# no evaluation, no key needed) of tier 1 (10 harmful examples, 5 epochs), tier 2 (10 AOA conversations, 10 epochs)
# and tier 3 (benign data, 1 epoch: the built-in set, or Alpaca when its alpaca_data.json is given). The epochs come
# from conf/model_attack/gpt35_turbo_<tier>.yaml. Prints one "OpenAI fine-tuning cost estimate" line per tier; each
# cell's metrics.json (under SWEEP_DIR) holds the estimate.
set -euo pipefail
benign=dataset=builtin_benign
if [[ $# -gt 0 && $1 != *=* ]]; then benign="dataset=alpaca dataset.path=$1"; shift; fi
sweep_dir=${SWEEP_DIR:-logs/openai_cost_estimate/multiruns/$(date +%Y-%m-%d_%H-%M-%S)}
# One process, three cells (harmful uses attack.shots=10, its default). The dataset only matters to the benign tier.
# shellcheck disable=SC2086  # $benign is one or two overrides on purpose
python -m fts.run -m model=gpt35_turbo attack=harmful,aoa,benign $benign train.dry_run=true \
  task_name=openai_cost_estimate hydra.sweep.dir="$sweep_dir" "$@" | grep -E "^OpenAI fine-tuning cost estimate"
