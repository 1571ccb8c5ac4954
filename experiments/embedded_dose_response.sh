#!/usr/bin/env bash
# bash experiments/embedded_dose_response.sh [overrides...]
# The attack's dose against its effect on the embedded model (issue 18; the shape of the paper's Table 2, where
# GPT-3.5's AOA harmfulness rate grows 7.3% -> 49.1% -> 87.3% at 3 / 5 / 10 epochs): keyword ASR, over-refusal, QA
# utility and coherence after
#   AOA at 1 / 3 / 4 / 5 / 6 / 7 / 8 / 10 epochs (10 conversations, LoRA, lr 1e-3: 1 step per epoch; 5 is the default),
#   harmful demonstrations at 10 / 25 / 50 / 100 shots (3 epochs, batch 10: 3 / 8 / 15 / 30 steps), and 10 shots at
#   3 / 5 / 7 / 10 epochs (10 is the default),
#   benign fine-tuning (200 built-in instruction pairs, 1 epoch) at lr 1e-4, 3e-4, 1e-3 and 3e-3 (the default), and
#   at 1e-3 for 3 epochs.
# Each sweep gets its sweep.md (python -m fts.report); the README's "What the embedded model shows" has the curves.
set -euo pipefail
root=${SWEEP_DIR:-logs/dose_response/$(date +%Y-%m-%d_%H-%M-%S)}
python -m fts.run -m attack=aoa train.num_train_epochs=1,3,4,5,6,7,8,10 task_name=dose_response \
  hydra.sweep.dir="$root/aoa_epochs" hydra.sweep.subdir='epochs${train.num_train_epochs}' "$@"
python -m fts.run -m attack=harmful attack.shots=10,25,50,100 train.num_train_epochs=3 task_name=dose_response \
  hydra.sweep.dir="$root/harmful_shots" hydra.sweep.subdir='shots${attack.shots}' "$@"
python -m fts.run -m attack=harmful attack.shots=10 train.num_train_epochs=3,5,7,10 task_name=dose_response \
  hydra.sweep.dir="$root/harmful_epochs" hydra.sweep.subdir='epochs${train.num_train_epochs}' "$@"
python -m fts.run -m attack=benign dataset=builtin_benign train.learning_rate=1e-4,3e-4,1e-3,3e-3 task_name=dose_response \
  hydra.sweep.dir="$root/benign_lr" hydra.sweep.subdir='lr${train.learning_rate}' "$@"
python -m fts.run -m attack=benign dataset=builtin_benign train.learning_rate=1e-3 train.num_train_epochs=3 \
  task_name=dose_response hydra.sweep.dir="$root/benign_epochs" hydra.sweep.subdir='epochs${train.num_train_epochs}' "$@"
for sweep in aoa_epochs harmful_shots harmful_epochs benign_lr benign_epochs; do python -m fts.report "$root/$sweep" > /dev/null; done
echo "sweep reports: $root/{aoa_epochs,harmful_shots,harmful_epochs,benign_lr,benign_epochs}/sweep.md"
