#!/usr/bin/env bash
# The `default` rows of one board made again: each METHOD with its default settings on seeds 0,
# 1 and 2, then the board rebuilt from its run folders.
#
#   benchmarks/default_boards.sh hallucination unlearn ga npo
#   DRY_RUN=1 benchmarks/default_boards.sh hallucination unlearn ga npo   # only print what is missing
#
# For when a task's data or split changes and its committed rows no longer describe today's code.
# New runs are made in benchmarks/runs/boards/TASK/ first: a run folder inside leaderboards/ must be
# published, and the board keeps its old rows until every new run exists. It is meant to be run
# again in each session (a seed is 10-20 minutes on 2 cores; the first method of a seed also
# prepares that seed's original): a finished seed is skipped, a killed one started again. Commit
# each finished seed's folder, so that a later session on a fresh machine skips it too. Once all
# are there, each METHOD's old folders are replaced by the new ones and the page, its records and
# plots are rebuilt from every run folder of the task (tuned rows included).
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/common.sh
[ $# -ge 2 ] || { echo "usage: $0 TASK METHOD..." >&2; exit 2; }
task=$1; shift
staging=${STAGING:-benchmarks/runs/boards}/$task

missing=0
for method in "$@"; do
  for seed in 0 1 2; do
    run=$staging/$task-$method-s$seed
    if ! completed "$run"; then
      missing=1
      step rm -rf "$run"
      step "$UNLEARNBENCH" run --task "$task" --method "$method" --seed "$seed" --output-dir "$staging" \
        --run-name "$task-$method-s$seed" --checkpoint-every 0
    fi
  done
done
if [ "$missing" = 1 ] && [ -n "${DRY_RUN:-}" ]; then
  echo "(then: the old folders replaced and leaderboards/$task.md rebuilt)"
  exit 0
fi
for method in "$@"; do
  for seed in 0 1 2; do
    step rm -rf "leaderboards/runs/$task/$task-$method-s$seed"
    step mv "$staging/$task-$method-s$seed" "leaderboards/runs/$task/"
  done
done
# A from-scratch rebuild: entries whose data changed do not replace the old ones' slots.
step rm -f "leaderboards/$task.md" "leaderboards/$task.records.json"
step "$UNLEARNBENCH" publish leaderboards/runs/"$task"/* --leaderboard "leaderboards/$task.md"
