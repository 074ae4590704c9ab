#!/usr/bin/env bash
# One robustness board made again: each METHOD run with its defaults and attacked (relearn,
# rephrase, quantize, mia), then leaderboards/robustness/TASK.md rebuilt from its run folders.
#
#   benchmarks/robustness_boards.sh hallucination unlearn ga npo
#   SEEDS="1 2" benchmarks/robustness_boards.sh copyright unlearn   # other seeds (default: 0)
#   DRY_RUN=1 benchmarks/robustness_boards.sh hallucination unlearn   # only print what is missing
#
# New runs are made in benchmarks/runs/robustness/TASK/ first: a run folder inside leaderboards/
# must be published, and the board keeps its old rows until every new run exists. Meant to be run
# again in each session (a run and its attacks are 20-30 minutes on 2 cores): a run whose attacks
# finished is skipped; one killed before that is started again from scratch. Commit each finished
# run's folder, so that a later session on a fresh machine skips it too.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
UNLEARNBENCH=${UNLEARNBENCH:-.venv/bin/unlearnbench}
[ $# -ge 2 ] || { echo "usage: $0 TASK METHOD..." >&2; exit 2; }
task=$1; shift
staging=${STAGING:-benchmarks/runs/robustness}/$task
read -r -a seeds <<< "${SEEDS:-0}"
board=leaderboards/robustness

. benchmarks/common.sh

attacked() {  # whether the run folder $1 finished its run and its attacks (which then drop its model)
  completed "$1" && [ ! -d "$1/model" ] && grep -q '"worst_case_forget_rate"' "$1/metrics.json"
}

missing=0
for method in "$@"; do
  for seed in "${seeds[@]}"; do
    run=$staging/$task-$method-s$seed
    if ! attacked "$run"; then
      missing=1
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
for method in "$@"; do
  for seed in "${seeds[@]}"; do
    step rm -rf "$board/runs/$task/$task-$method-s$seed"
    step mv "$staging/$task-$method-s$seed" "$board/runs/$task/"
  done
done
step rm -f "$board/$task.md" "$board/$task.records.json"
step "$UNLEARNBENCH" publish "$board"/runs/"$task"/* --leaderboard "$board/$task.md"
