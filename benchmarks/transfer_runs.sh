#!/usr/bin/env bash
# The transfer check: the default `unlearn` run on the two hallucination sets written for it
# (benchmarks/data/), nothing changed but --data; its results are in docs/tuning-embedded.md,
# "Defaults on other data", and its records in benchmarks/runs/transfer/.
#
#   benchmarks/transfer_runs.sh
#   DRY_RUN=1 benchmarks/transfer_runs.sh   # only print what is missing
#
# New runs are made in benchmarks/runs/transfer-pending/ first, so that the committed records stay
# until both new ones exist. Meant to be run again in each session (a run is 15-20 minutes on 2
# cores): a finished run is skipped, a killed one started again; commit each finished run's folder,
# so that a later session on a fresh machine skips it too. Then the old folders are replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/common.sh
staging=${STAGING:-benchmarks/runs/transfer-pending}
SIZES=(80 400)

missing=0
for size in "${SIZES[@]}"; do
  run=$staging/hallucination-unlearn-data$size-s0
  if ! completed "$run"; then
    missing=1
    step rm -rf "$run"
    step "$UNLEARNBENCH" run --method unlearn --task hallucination --seed 0 \
      --data "benchmarks/data/hallucination_qa_$size.jsonl" --output-dir "$staging" \
      --run-name "hallucination-unlearn-data$size-s0" --checkpoint-every 0
  fi
done
if [ "$missing" = 1 ] && [ -n "${DRY_RUN:-}" ]; then
  echo "(then: the records in benchmarks/runs/transfer/ replaced)"
  exit 0
fi
for size in "${SIZES[@]}"; do
  step rm -rf "benchmarks/runs/transfer/hallucination-unlearn-data$size-s0"
  step mv "$staging/hallucination-unlearn-data$size-s0" benchmarks/runs/transfer/
done
