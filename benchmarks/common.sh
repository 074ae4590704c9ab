# Sourced by the board scripts: what they share.

export HF_HUB_OFFLINE=1
UNLEARNBENCH=${UNLEARNBENCH:-.venv/bin/unlearnbench}

step() {  # print the command; run it unless DRY_RUN is set
  echo "+ $*"
  [ -n "${DRY_RUN:-}" ] || "$@"
}

completed() {  # whether the run folder $1 holds a finished run
  [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"
}
