#!/usr/bin/env bash
# GPU check of the vllm generation backend.
#
# For a machine with a CUDA GPU and vLLM installed (pip install 'unlearnbench[vllm]'):
#   scripts/gpu_check.sh [MODEL]          MODEL: embedded name, hub id or local folder (default smollm2-135m)
#
# 1. unlearnbench check-backends --backend vllm: HF batched vs vLLM, greedy, on the same prompts;
# 2. the weight hand-over: weights changed after the engine was built reach it (in place), and
#    give the same outputs as an engine built from those weights;
# 3. a short run: unlearnbench run --backend vllm --steps 5 --limit 16.
# Then PASS or FAIL from the exit codes and the identical-output fraction of step 1.
#
# Creates nothing global: everything goes to a fresh temp folder (or $GPU_CHECK_DIR), including the
# model cache unless UNLEARNBENCH_CACHE is set. Environment: UNLEARNBENCH (the command; default
# `unlearnbench` on PATH, else .venv/bin/unlearnbench), PYTHON (the interpreter that has unlearnbench),
# MIN_IDENTICAL (default 0.9: bf16 kernels differ between HF and vLLM, so a few outputs may part late),
# LIMIT (prompts for step 1, default 32).
set -euo pipefail

model="${1:-smollm2-135m}"
min_identical="${MIN_IDENTICAL:-0.9}"
limit="${LIMIT:-32}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${UNLEARNBENCH:-}" ]]; then
    bin="$UNLEARNBENCH"
elif command -v unlearnbench >/dev/null 2>&1; then
    bin="$(command -v unlearnbench)"
else
    bin="$here/.venv/bin/unlearnbench"
fi
python="${PYTHON:-$(dirname "$bin")/python}"
[[ -x "$python" ]] || python="python3"
work="${GPU_CHECK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/unlearnbench-gpu-check.XXXXXX")}"
mkdir -p "$work"
export UNLEARNBENCH_CACHE="${UNLEARNBENCH_CACHE:-$work/cache}"
echo "gpu check: model $model, results in $work"

echo "== 1/3 check-backends --backend vllm"
check_rc=0
"$bin" check-backends --backend vllm --model "$model" --limit "$limit" --min-identical "$min_identical" \
    --output "$work/check.json" || check_rc=$?

echo "== 2/3 weight hand-over (in place vs a fresh engine)"
sync_rc=0
"$python" - "$model" "$work/sync.json" <<'PY' || sync_rc=$?
import json, sys

import torch

from unlearnbench import models
from unlearnbench.batching import Template
from unlearnbench.generation import GenerationConfig
from unlearnbench.generation.vllm import VLLMGenerator, release_engine

spec, report_path = sys.argv[1], sys.argv[2]
loaded = models.load(spec)
template = Template(loaded.tokenizer, "auto")
prompts = [template.prompt(q) for q in ("What is the capital of France?", "Name a primary colour.",
                                        "Who wrote Romeo and Juliet?", "What is 2 + 2?")]
config = GenerationConfig(max_new_tokens=24, add_special_tokens=template.adds_special_tokens)
first = VLLMGenerator()
first.load_weights(loaded.model, loaded.tokenizer)
before = first.generate(prompts, config)
torch.manual_seed(0)
with torch.no_grad():  # stands in for unlearning: every weight moves
    for parameter in loaded.model.parameters():
        parameter.add_(torch.randn_like(parameter) * parameter.std() * 0.2)
synced = VLLMGenerator()
synced.load_weights(loaded.model, loaded.tokenizer)
after_in_place = synced.generate(prompts, config)
route = synced.weight_sync
free_with_engine = torch.cuda.mem_get_info()[0]
release_engine()
free_after_release = torch.cuda.mem_get_info()[0]  # should grow by about the engine's share of the card
print(f"free GPU memory: {free_with_engine / 2**30:.1f} GiB with the engine, {free_after_release / 2**30:.1f} GiB after release")
fresh = VLLMGenerator()
fresh.load_weights(loaded.model, loaded.tokenizer)
after_fresh = fresh.generate(prompts, config)
fresh.release()
report = {"route": route, "changed": before != after_in_place, "in_place_equals_fresh": after_in_place == after_fresh,
          "free_gib_with_engine": free_with_engine / 2**30, "free_gib_after_release": free_after_release / 2**30,
          "before": before, "after_in_place": after_in_place, "after_fresh": after_fresh}
json.dump(report, open(report_path, "w"), indent=2)
print(f"weight sync route: {route}; outputs changed: {report['changed']}; "
      f"in place == fresh engine: {report['in_place_equals_fresh']}")
sys.exit(0 if report["changed"] and report["in_place_equals_fresh"] and route.startswith("in place") else 1)
PY

echo "== 3/3 run --backend vllm --steps 5 --limit 16"
run_rc=0
"$bin" run --backend vllm --model "$model" --steps 5 --limit 16 --original base --checkpoint-every 0 \
    --output-dir "$work/runs" --run-name gpu-check || run_rc=$?

identical="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["identical_fraction"])' "$work/check.json" 2>/dev/null || echo none)"
fraction_ok="$("$python" -c 'import sys; v=sys.argv[1]; print("yes" if v != "none" and float(v) >= float(sys.argv[2]) else "no")' "$identical" "$min_identical")"
echo "check-backends exit $check_rc (identical fraction $identical, need >= $min_identical), weight sync exit $sync_rc, run exit $run_rc"
if [[ $check_rc -eq 0 && $sync_rc -eq 0 && $run_rc -eq 0 && $fraction_ok == yes ]]; then
    echo "PASS"
else
    echo "FAIL"
    exit 1
fi
