#!/usr/bin/env bash
# bash experiments/table4_mitigation.sh <safety_only_data_Instructions.json> <100 harmful pairs JSONL> <identity-shift-aoa.jsonl> <alpaca_data_no_safety.json> [overrides...]
# Table 4 (mitigation by mixing Bianchi et al.'s safety data), GPT-3.5 Turbo, as the paper ran it: three rows, each
# with its own safety counts (random samples, run seed), then one sweep report with the paper's numbers beside ours:
#   100-shot harmful (5 epochs): 0 / 10 / 50 / 100 safety examples    experiment=table4_harmful
#   AOA (10 examples, 10 epochs): 0 / 10 / 50 / 100                    experiment=table4_aoa
#   Alpaca (1 epoch):             0 / 250 / 500 / 1000                 experiment=table4_alpaca
# Needs OPENAI_API_KEY and a fine-tunable snapshot (gpt-3.5-turbo-0613 is retired): pass model.path=<snapshot>.
# 12 fine-tuning jobs; each job's cost is estimated and checked against train.max_usd before its upload.
set -euo pipefail
safety=${1:?path to safety_only_data_Instructions.json}; harmful=${2:?path to 100 harmful pairs}
aoa=${3:?path to identity-shift-aoa.jsonl}; alpaca=${4:?path to the Alpaca JSON}; shift 4
sweep_dir=logs/table4/multiruns/$(date +%Y-%m-%d_%H-%M-%S)
common=(mitigation.safety_mix.data="$safety" hydra.sweep.dir="$sweep_dir")
python -m fts.run -m experiment=table4_harmful attack.data="$harmful" mitigation.safety_mix.count=0,10,50,100 \
  hydra.sweep.subdir='harmful_${hydra.job.num}' "${common[@]}" "$@"
python -m fts.run -m experiment=table4_aoa attack.data="$aoa" mitigation.safety_mix.count=0,10,50,100 \
  hydra.sweep.subdir='aoa_${hydra.job.num}' "${common[@]}" "$@"
python -m fts.run -m experiment=table4_alpaca dataset.path="$alpaca" mitigation.safety_mix.count=0,250,500,1000 \
  hydra.sweep.subdir='alpaca_${hydra.job.num}' "${common[@]}" "$@"
python -m fts.report "$sweep_dir"
