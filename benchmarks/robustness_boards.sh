#!/usr/bin/env bash
# One robustness board made again: each METHOD run with its defaults and attacked (relearn,
# rephrase, quantize, mia), then leaderboards/robustness/TASK.md rebuilt from its run folders.
#
#   benchmarks/robustness_boards.sh hallucination unlearn ga npo
#   SEEDS=0 benchmarks/robustness_boards.sh copyright unlearn   # some seeds only (default: 0 1 2)
#   DRY_RUN=1 benchmarks/robustness_boards.sh hallucination unlearn   # only print what is missing
#
# New runs are made in benchmarks/runs/robustness/TASK/ first: a run folder inside leaderboards/
# must be published, and the board keeps its old rows until every new run exists. Meant to be run
# again in each session (a run and its attacks are 20-30 minutes on 2 cores): a run whose attacks
# finished is skipped; one killed during its attacks, with its model still on this machine, has
# them continued by `unlearnbench attack` (each finished attack unit is kept); any other is started
# again from scratch. Commit each finished run's folder (its model is dropped once attacked), so
# that a later session on a fresh machine skips it too. Seeds added to a board's
# existing rows should come from the same kind of machine: a row shows one machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/common.sh
[ $# -ge 2 ] || { echo "usage: $0 TASK METHOD..." >&2; exit 2; }
task=$1; shift
staging=${STAGING:-benchmarks/runs/robustness}/$task
read -r -a seeds <<< "${SEEDS:-0 1 2}"
for seed in "${seeds[@]}"; do
  [[ $seed =~ ^[0-9]+$ ]] || { echo "SEEDS takes seeds separated by spaces, like \"0 1 2\"; got '$SEEDS'" >&2; exit 2; }
done
[ ${#seeds[@]} -gt 0 ] || { echo "SEEDS names no seed" >&2; exit 2; }
board=leaderboards/robustness

attacked() {  # whether the run folder $1 finished its run and its attacks (which then drop its model)
  completed "$1" && [ ! -d "$1/model" ] && python3 - "$1/metrics.json" <<'PY'
import json, sys
# The record is saved after every attack unit; mia runs last, so its last unit (or its skip) ends the attacks.
mia = json.load(open(sys.argv[1])).get("attacks", {}).get("results", {}).get("mia", {})
sys.exit(0 if "unlearned" in mia or "skipped" in mia else 1)
PY
}

missing=0
for method in "$@"; do
  for seed in "${seeds[@]}"; do
    run=$staging/$task-$method-s$seed
    if attacked "$run"; then
      continue
    fi
    missing=1
    if completed "$run" && [ -f "$run/model/config.json" ]; then
      step "$UNLEARNBENCH" attack "$run" --attacks relearn,rephrase,quantize,mia  # then drops the model
    else
      step rm -rf "$run"
      step "$UNLEARNBENCH" run --task "$task" --method "$method" --seed "$seed" --output-dir "$staging" \
        --run-name "$task-$method-s$seed" --checkpoint-every 0 --attacks relearn,rephrase,quantize,mia
    fi
  done
done
if [ "$missing" = 1 ] && [ -n "${DRY_RUN:-}" ]; then
  echo "(then: the old folders replaced and $board/$task.md rebuilt)"
  exit 0
fi
step mkdir -p "$board/runs/$task"
for method in "$@"; do
  for seed in "${seeds[@]}"; do
    step rm -rf "$board/runs/$task/$task-$method-s$seed"
    step mv "$staging/$task-$method-s$seed" "$board/runs/$task/"
  done
done
step rm -f "$board/$task.md" "$board/$task.records.json"
step "$UNLEARNBENCH" publish "$board"/runs/"$task"/* --leaderboard "$board/$task.md"
