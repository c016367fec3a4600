#!/usr/bin/env bash
# Fuzz kiln's readers with libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer
# (tests/fuzz/, docs/FUZZING.md): builds the harnesses with clang in build-fuzz/, runs
# every committed seed and crash input once (regression), then fuzzes each harness.
#   scripts/fuzz.sh                  each harness 60 s (what CI runs)
#   KN_FUZZ_SECONDS=600 scripts/fuzz.sh [config idx ckpt csv npy]   longer, or some harnesses only
# A finding stops the script with exit status 1 and leaves the input in
# build-fuzz/findings/<harness>/ (add it to tests/fuzz/regress/<harness>/ once fixed).
# Environment: KN_FUZZ_SECONDS (default 60), KN_FUZZ_JOBS (harnesses run at once,
# default 1), KN_FUZZ_RSS_MB (default 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh clang libclang-rt-14-dev libomp-dev
secs=${KN_FUZZ_SECONDS:-60}
jobs=${KN_FUZZ_JOBS:-1}
rss=${KN_FUZZ_RSS_MB:-2048}
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(config idx ckpt csv npy)
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKN_SANITIZE=ON -DKN_FUZZ=ON >/dev/null
targets=()
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# the harnesses write their inputs to scratch files: in memory where possible
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm/kiln-fuzz-$$; else export TMPDIR="$PWD/build-fuzz/tmp"; fi
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
run_one() {
  local h=$1 bin=build-fuzz/tests/fuzz/fuzz_$1 work=build-fuzz/corpus/$1 out=build-fuzz/findings/$1
  mkdir -p "$work" "$out"
  # regression: every seed and every crash input found so far, once
  "$bin" -runs=0 -rss_limit_mb="$rss" tests/fuzz/corpus/"$h" tests/fuzz/regress/"$h" >"build-fuzz/$h.regress.log" 2>&1 ||
    { echo "kiln: fuzz_$h fails on a committed input: see build-fuzz/$h.regress.log" >&2; return 1; }
  # the library must be instrumented: a harness that sees only its own few edges fuzzes
  # blind (67 counters when it was not; the smallest instrumented harness, idx, has ~1,300)
  local counters
  counters=$(sed -n 's/^INFO: Loaded [0-9]* modules *(\([0-9]*\) inline 8-bit counters.*/\1/p' "build-fuzz/$h.regress.log" | head -1)
  if [ -z "$counters" ] || [ "$counters" -lt 500 ]; then
    echo "kiln: fuzz_$h has ${counters:-no} coverage counters: the library is not instrumented (tests/fuzz/CMakeLists.txt)" >&2
    return 1
  fi
  # fuzzing: new inputs go to build-fuzz/corpus/<h> (the committed corpus is read only)
  "$bin" -max_total_time="$secs" -rss_limit_mb="$rss" -max_len=8192 -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$out/" "$work" tests/fuzz/corpus/"$h" tests/fuzz/regress/"$h" >"build-fuzz/$h.log" 2>&1 ||
    { echo "kiln: fuzz_$h found a problem: see build-fuzz/$h.log and $out/" >&2; return 1; }
  local done_line execs rssmb
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "build-fuzz/$h.log" | tail -1 | tr -s '[:space:]' ' ')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "build-fuzz/$h.log")
  rssmb=$(sed -n 's/^stat::peak_rss_mb: *//p' "build-fuzz/$h.log")
  echo "fuzz_$h: ${secs} s, 0 findings, ${execs} executions, peak RSS ${rssmb} MB; final: ${done_line}"
}
pids=() fail=0
for h in "${harnesses[@]}"; do
  run_one "$h" & pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || fail=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
exit $fail
