#!/usr/bin/env bash
# Runs b3's libFuzzer targets (tests/fuzz/, built by `make fuzz` with ASan and
# UBSan): for each, first every committed input of tests/fuzz/corpus/<target>
# (seeds and regression inputs) once, then fuzzing from them.
#   scripts/fuzz.sh BUILD_DIR [--seconds N] [--runs N] [--replay-only] [TARGET...]
# --seconds N   fuzz each target for N seconds (default 60)
# --runs N      ... or stop after N executions, whichever comes first
# New inputs that reach new code go to BUILD_DIR/fuzz-work/<target>, never
# into the repository; a crash, leak, timeout or sanitizer report is saved as
# BUILD_DIR/fuzz-findings/<target>-* and makes the script exit 1. Copy a
# finding into tests/fuzz/corpus/<target>/regression-<name> once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:?usage: scripts/fuzz.sh BUILD_DIR [--seconds N] [--runs N] [--replay-only] [TARGET...]}
shift
seconds=60
runs=-1
replay_only=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --replay-only) replay_only=1; shift ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(cifar10_binary image_decode safetensors resume_checkpoint command_line torch_file
  torch_pickle)

dictionary_of() {
  case "$1" in
    safetensors | resume_checkpoint) echo "-dict=tests/fuzz/safetensors.dict" ;;
    command_line) echo "-dict=tests/fuzz/corpus/command_line.dict" ;;
    torch_file | torch_pickle) echo "-dict=tests/fuzz/torch_file.dict" ;;
    *) echo "" ;;
  esac
}

mkdir -p "$build/fuzz-work" "$build/fuzz-findings" "$build/fuzz-logs"
export TMPDIR=${TMPDIR:-/tmp}
failed=0
summary=()
for target in "${targets[@]}"; do
  binary="$build/tests/fuzz/fuzz_$target"
  seeds="tests/fuzz/corpus/$target"
  if [ ! -x "$binary" ]; then
    echo "fuzz.sh: $binary is missing: build it with make fuzz" >&2
    exit 2
  fi
  committed=$(find "$seeds" -type f | wc -l)
  log="$build/fuzz-logs/$target-replay.log"
  if ! "$binary" -runs=0 -rss_limit_mb=2048 -timeout=20 \
      -artifact_prefix="$build/fuzz-findings/$target-" "$seeds" > "$log" 2>&1; then
    echo "fuzz.sh: $target: a committed input fails; see $log" >&2
    tail -40 "$log" >&2
    failed=1
    continue
  fi
  replayed="$target: replayed $committed committed inputs"
  if [ $replay_only -eq 1 ]; then
    summary+=("$replayed")
    continue
  fi
  work="$build/fuzz-work/$target"
  mkdir -p "$work"
  log="$build/fuzz-logs/$target.log"
  start=$(date +%s)
  # shellcheck disable=SC2046
  if "$binary" "$work" "$seeds" -max_total_time="$seconds" -runs="$runs" -rss_limit_mb=2048 \
      -timeout=20 -print_final_stats=1 -artifact_prefix="$build/fuzz-findings/$target-" \
      $(dictionary_of "$target") > "$log" 2>&1; then
    status=0
  else
    status=$?
  fi
  elapsed=$(($(date +%s) - start))
  executions=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  # crash-, leak-, timeout- and oom- inputs are findings; slow-unit- ones
  # (an input that took over 10 s, e.g. a large image under ASan) are listed.
  found=$(find "$build/fuzz-findings" -name "$target-*" ! -name "$target-slow-unit-*" -type f |
    wc -l)
  slow=$(find "$build/fuzz-findings" -name "$target-slow-unit-*" -type f | wc -l)
  corpus=$(find "$work" -type f | wc -l)
  line=$(printf '%s; fuzzed %s executions in %d s; corpus %d new + %d committed; findings %d (slow inputs %d)' \
    "$replayed" "${executions:-?}" "$elapsed" "$corpus" "$committed" "$found" "$slow")
  summary+=("$line")
  if [ $status -ne 0 ] || [ "$found" -gt 0 ]; then
    echo "fuzz.sh: $target: FINDING (exit $status); see $log and $build/fuzz-findings/" >&2
    grep -E 'ERROR|SUMMARY|broken promise|==[0-9]+==' "$log" | head -20 >&2 || true
    failed=1
  fi
done
for line in "${summary[@]}"; do echo "fuzz: $line"; done
exit $failed
