#!/usr/bin/env bash
# The `tuned` rows of the leaderboards: every method tuned on every task it applies to, with the
# same budget, then its selection run on seeds 0, 1 and 2 and published.
#
#   benchmarks/tuned_boards.sh                 # everything still missing, in order
#   benchmarks/tuned_boards.sh harmful:unlearn # one pair (TASK:METHOD), or several
#   DRY_RUN=1 benchmarks/tuned_boards.sh       # only print what is missing
#
# It is meant to be run again in each session until it prints "nothing left": a finished study or
# seed is skipped (its records exist), a killed `tune` continues its study, and a seed whose run
# was killed is started again from nothing (a seed is about 8 minutes on 2 cores; a study of 12
# trials about an hour). Publishing waits until all three seeds of a pair exist.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/common.sh

# The budget every method gets (issue 17's protocol, sized for 2 CPU cores).
TRIALS=12
STEPS=80
EVAL_LIMIT=48

# Harmful first: it is the paper's RLHF comparison. sft_safe needs safe answers (harmful only).
# Hallucination after copyright: its default rows are made again first (default_boards.sh).
PAIRS=(
  harmful:npo harmful:ga harmful:unlearn harmful:sft_safe
  copyright:unlearn copyright:ga copyright:npo
  hallucination:unlearn hallucination:ga hallucination:npo
  harmful:graddiff harmful:simnpo harmful:rmu harmful:dpo_refusal harmful:wga
  hallucination:graddiff hallucination:simnpo hallucination:rmu hallucination:dpo_refusal hallucination:wga
  copyright:graddiff copyright:simnpo copyright:rmu copyright:dpo_refusal copyright:wga
)
[ $# -gt 0 ] && PAIRS=("$@")

left=0
for pair in "${PAIRS[@]}"; do
  task=${pair%%:*} method=${pair#*:}
  study=leaderboards/tuning/tune-$task-$method-s0
  completed=0  # trials a study has finished, from its tune.json
  [ -f "$study/tune.json" ] && completed=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['trials'])" "$study/tune.json")
  if [ "$completed" -lt "$TRIALS" ]; then
    left=1
    step "$UNLEARNBENCH" tune --method "$method" --task "$task" --trials "$TRIALS" --steps "$STEPS" \
      --limit 32 --eval-limit "$EVAL_LIMIT" --output-dir leaderboards/tuning
  fi
  published=1
  for seed in 0 1 2; do
    run=leaderboards/runs/$task/$task-$method-tuned-s$seed
    if ! completed "$run"; then
      left=1 published=0
      step rm -rf "$run"
      step "$UNLEARNBENCH" run --task "$task" --method "$method" --from-tune "$study" --seed "$seed" \
        --output-dir "leaderboards/runs/$task" --run-name "$task-$method-tuned-s$seed" --checkpoint-every 0
    fi
  done
  if [ "$published" = 0 ] || ! grep -q "\"$task-$method-tuned-s2\"" "leaderboards/$task.records.json"; then
    left=1
    step "$UNLEARNBENCH" publish leaderboards/runs/"$task"/"$task-$method"-tuned-s{0,1,2} \
      --leaderboard "leaderboards/$task.md"
  fi
done
[ "$left" = 0 ] && echo "nothing left: every tuned row is published"
exit 0
