#!/usr/bin/env bash
# Every full-size GPU benchmark, prepared to run in under 8 minutes on one H200; each appends its table (device,
# numbers, the command that made them) to benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu.sh              # on the GPU machine, from anywhere
#   bash benchmarks/gpu.sh --dry-run    # CPU: the same benchmarks at smoke size, tables to a temporary file
#                                       # (tests/test_benchmarks.py runs this so the script does not rot)
#
# Each benchmark runs under its own time budget (the budgets add up to 7 min 55 s), so one that hangs cannot take
# the others' time; a benchmark that fails or runs out of time leaves a line saying so in the results file and the
# script exits 1 after running the rest. Random weights of the real architectures throughout (no downloads).
#
# Adding a benchmark or a section: one `bench` line below (name, budget, how its table reaches the results file,
# full-size arguments, then -- and the smoke arguments). "append": the script appends its own table
# (--append-results); "stdout": gpu.sh appends what the script prints. Sections of an existing benchmark:
# RECONSTRUCT_SECTIONS (default "network,align"; "backends" adds pi3) and TRACK_ARGS are passed through.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=full
case "${1:-}" in
  --dry-run) mode=dry ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu.sh [--dry-run]" >&2; exit 2 ;;
esac

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ $mode == dry ]]; then
  export SPATIALCTL_RESULTS="${SPATIALCTL_RESULTS:-$(mktemp -t spatialctl-results.XXXXXX.md)}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
  if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: no CUDA device visible to torch; use --dry-run on a CPU machine" >&2
    exit 2
  fi
fi
results="${SPATIALCTL_RESULTS:-benchmarks/RESULTS.md}"
device=$(python -c 'import sys, torch; sys.path.insert(0, "benchmarks"); import harness
print(harness.device_line("cuda" if torch.cuda.is_available() else None))')
RECONSTRUCT_SECTIONS="${RECONSTRUCT_SECTIONS:-network,align}"
TRACK_ARGS="${TRACK_ARGS:-}"

{
  echo
  echo "## gpu.sh $( [[ $mode == dry ]] && echo "--dry-run (CPU, smoke sizes: not results)" ) $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(python -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")')."
} >> "$results"

status=0
started=$SECONDS

# bench NAME BUDGET_S append|stdout FULL_ARGS... -- SMOKE_ARGS...
bench() {
  local name=$1 budget=$2 how=$3
  shift 3
  local full=() smoke=() seen=0
  for a in "$@"; do
    if [[ $a == "--" ]]; then seen=1; elif (( seen )); then smoke+=("$a"); else full+=("$a"); fi
  done
  local args=("${full[@]}")
  [[ $mode == dry ]] && args=("${smoke[@]}")
  echo "== $name (budget ${budget}s): python benchmarks/$name.py ${args[*]}" >&2
  local t0=$SECONDS rc=0 log
  log=$(mktemp)
  if [[ $how == append ]]; then
    timeout --signal=INT --kill-after=10 "$budget" python "benchmarks/$name.py" "${args[@]}" --append-results || rc=$?
  else
    timeout --signal=INT --kill-after=10 "$budget" python "benchmarks/$name.py" "${args[@]}" > "$log" || rc=$?
    cat "$log"
    if (( rc == 0 )); then
      printf '\n### %s\n\nDevice: %s. Command: `python benchmarks/%s.py %s`.\n\n```\n%s\n```\n' "$name" \
        "$device" "$name" "${args[*]}" "$(cat "$log")" >> "$results"
    fi
  fi
  rm -f "$log"
  if (( rc != 0 )); then
    status=1
    local why="failed (exit $rc)"
    (( rc == 124 || rc == 130 || rc == 137 )) && why="ran out of its ${budget} s budget"
    printf '\n%s: %s; command: `python benchmarks/%s.py %s`\n' "$name" "$why" "$name" "${args[*]}" >> "$results"
    echo "== $name: $why" >&2
  else
    echo "== $name: done in $(( SECONDS - t0 )) s" >&2
  fi
}

# Full size: DUSt3R ViT-L/ViT-B 512 DPT (the default model) at 512x384, reference vs ours at equal precision;
# global alignment on 512x384 pointmaps.
bench reconstruct 160 append --full-size --device cuda --frames 8,16 --section "$RECONSTRUCT_SECTIONS" --niter 300 --repeats 3 \
  -- --smoke --section "$RECONSTRUCT_SECTIONS"
# Wan2.1-T2V-1.3B sizes at 832x480, bf16: truncated forward vs full forward + hook.
bench genfeat 90 append --full-size --device cuda --repeats 3 -- --smoke
# Qwen2.5-VL-7B-sized random weights, 32 frames of 336x336: GSM off, GSM on, and GSM on under DeepSpeed ZeRO-2
# (configs/accelerate/deepspeed_zero2.yaml, 1 GPU); tokens/s and MFU (6N model FLOPs / 989.4 TFLOP/s dense bf16
# on H100/H200). One process per variant: a 7B load is the expensive part; the step time is the median of 4 steps
# after 2 warm-up steps.
bench train_gsm 165 append --preset 7b --frames 32 --size 336 --steps 4 --warmup 2 --repeats 1 -- --smoke
# Both track backends at the released sizes (SAM 3; Grounding DINO + SAM 2.1 hiera-tiny), each run its own process.
# shellcheck disable=SC2086  # TRACK_ARGS is a list of words
bench track 60 stdout --section speed --full --device cuda --repeats 3 $TRACK_ARGS \
  -- --section speed --frames 2 --size 64x48 --repeats 1 $TRACK_ARGS

echo "gpu.sh: $(( SECONDS - started )) s in all; tables appended to $results" >&2
exit $status
