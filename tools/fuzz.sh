#!/bin/bash
# tools/fuzz.sh NAME [SECONDS] [libFuzzer flags...] — runs the libFuzzer harness fuzz/fuzz_NAME.c
# for SECONDS (default 600; 0: no time limit, e.g. with FUZZ_RUNS=10000000) under `nice -n 19` (other
# work on the machine goes first), then minimises the committed seed corpus fuzz/corpus/NAME/
# with libFuzzer's -merge=1: the named seeds (hand-made ones, regress-*) are all kept, and of the
# hash-named inputs, old and new, only those that add coverage beyond them.
#
# Builds build-fuzz/ with clang (-DSDB_FUZZ=ON: ASan + UBSan + libFuzzer; asserts on) when needed.
# Crashes, leaks and timeouts (> 1 s per input) are written to build-fuzz/artifacts/NAME/; replay
# one with build-fuzz/fuzz_NAME FILE. The run's log is build-fuzz/logs/NAME.log; the last line
# printed gives executions, edges covered (cov:) and features (ft:).
# Harnesses: safetensors config manifest tokenizer image png_text store (fuzz/fuzz_*.c).
# Each has a default -max_len suited to its format (below); flags given here override it:
#   tools/fuzz.sh image 60 -max_len=65536        FUZZ_RUNS=10000000 tools/fuzz.sh safetensors 0
# FUZZ_RUNS=N stops after N executions (whichever of the two limits comes first; SECONDS 0: none).
# Stopping the fuzzer by hand (kill -INT PID of build-fuzz/fuzz_NAME) ends the run as a time limit
# would: its corpus is minimised. FUZZ_TIMEOUT (seconds, default 1) is the per-input limit; on a loaded machine a "timeout" can be
# the scheduler's doing: such an input is re-timed alone and, when it is fast, the run goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: tools/fuzz.sh NAME [SECONDS] [libFuzzer flags...]}"
secs="${2:-600}"
shift $(( $# >= 2 ? 2 : 1 ))
[ -f "fuzz/fuzz_$name.c" ] || { echo "fuzz.sh: no harness fuzz/fuzz_$name.c" >&2; exit 2; }
command -v clang >/dev/null || { echo "fuzz.sh: needs clang (tools/install-deps.sh installs it)" >&2; exit 2; }
export SDB_TEST_DATA="${SDB_TEST_DATA:-$(cd .. && pwd)/shared}"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g" -DSDB_FUZZ=ON >/dev/null
fi
cmake --build build-fuzz -j"$(nproc)" --target "fuzz_$name" >/dev/null

seeds="fuzz/corpus/$name"
work="build-fuzz/work/$name"
art="build-fuzz/artifacts/$name"
mkdir -p "$seeds" "$work" "$art" build-fuzz/logs
dict=()
[ -f "fuzz/dict/$name.dict" ] && dict=(-dict="fuzz/dict/$name.dict")
# the largest input worth trying: a format's headers and a few small records (bigger inputs cost
# time per execution without reaching other code); a state database needs its pages
case "$name" in
  store) maxlen=65536 ;; image|png_text) maxlen=16384 ;; tokenizer) maxlen=2048 ;; *) maxlen=4096 ;;
esac
limits=(-max_len="$maxlen")
[ "$secs" -gt 0 ] && limits+=(-max_total_time="$secs")

# ASan: leaks are errors; UBSan: stop at the first report (a crash libFuzzer saves)
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
runs="${FUZZ_RUNS:-0}"
echo "fuzz.sh: fuzz_$name for ${secs}s (0: no limit), $runs executions (0: no limit); log build-fuzz/logs/$name.log"
# A loaded machine can stall a nice-19 process past the 1 s timeout: a "timeout" input that runs
# in under 500 ms alone is logged as the scheduler's (kept as $art/scheduler-*) and the run goes
# on from its corpus with what is left of its executions and time; a real one stops it.
t0=$(date +%s) total=0 seg=0 rc=0
: >"build-fuzz/logs/$name.log"
while :; do
  seg=$((seg + 1))
  left=()
  [ "$runs" -gt 0 ] && left+=(-runs=$((runs - total)))
  if [ "$secs" -gt 0 ]; then
    rem=$((secs - ($(date +%s) - t0)))
    [ "$rem" -le 0 ] && break
    left+=(-max_total_time="$rem")
  fi
  set +e
  nice -n 19 "build-fuzz/fuzz_$name" "${dict[@]}" "${limits[@]}" "${left[@]}" -timeout="${FUZZ_TIMEOUT:-1}" \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$art/" "$@" "$work" "$seeds" \
    >"build-fuzz/logs/$name.seg.log" 2>&1
  rc=$?
  set -e
  cat "build-fuzz/logs/$name.seg.log" >>"build-fuzz/logs/$name.log"
  n=$(grep -oE "^stat::number_of_executed_units: *[0-9]+" "build-fuzz/logs/$name.seg.log" | grep -oE "[0-9]+$" || true)
  [ -z "$n" ] && n=$(grep -oE "^#[0-9]+" "build-fuzz/logs/$name.seg.log" | tail -n 1 | tr -d "#" || true)
  total=$((total + ${n:-0}))
  [ "$rc" -eq 0 ] && break
  # 72: libFuzzer's exit on SIGINT/SIGTERM (Ctrl-C, `kill`): a campaign stopped by hand is not a
  # finding; its corpus is still minimised below
  if [ "$rc" -eq 72 ] && grep -q "libFuzzer: run interrupted" "build-fuzz/logs/$name.seg.log"; then
    echo "fuzz.sh: segment $seg: interrupted (SIGINT/SIGTERM): stopping here" | tee -a "build-fuzz/logs/$name.log"
    rc=0; break
  fi
  grep -q "ERROR: libFuzzer: timeout" "build-fuzz/logs/$name.seg.log" || break
  unit=$(grep -oE "Test unit written to [^ ]+" "build-fuzz/logs/$name.seg.log" | awk '{print $5}' | tail -n 1)
  [ -f "$unit" ] || break
  ms=$("build-fuzz/fuzz_$name" "$unit" 2>&1 | grep -oE "in [0-9]+ ms" | grep -oE "[0-9]+" || echo 99999)
  [ "$ms" -ge 500 ] && break
  echo "fuzz.sh: segment $seg: a 'timeout' that runs in $ms ms alone (the scheduler's): going on" | tee -a "build-fuzz/logs/$name.log"
  mv "$unit" "$art/scheduler-$(basename "$unit")"
  rc=0
  [ "$runs" -gt 0 ] && [ "$total" -ge "$runs" ] && break
done
el=$(($(date +%s) - t0))
echo "fuzz.sh: fuzz_$name: $total executions in ${el}s ($((total / (el > 0 ? el : 1))) exec/s), $seg segment(s)" | tee -a "build-fuzz/logs/$name.log"
grep -E "^#[0-9]+.*(DONE|pulse|NEW|REDUCE)" "build-fuzz/logs/$name.log" | tail -n 1 || true
if [ "$rc" -ne 0 ]; then
  echo "fuzz.sh: fuzz_$name stopped with a finding (exit $rc); see build-fuzz/logs/$name.log and $art/" >&2
  grep -E "ERROR|SUMMARY|runtime error|Test unit written" "build-fuzz/logs/$name.seg.log" | head -n 8 >&2 || true
  exit "$rc"
fi
# minimise: the named seeds first (all kept), then the hash-named inputs (committed and new) that
# add coverage beyond them; the result replaces fuzz/corpus/NAME/
min="build-fuzz/merge/$name"
rm -rf "$min" "$min.rest"
mkdir -p "$min" "$min.rest"
for f in "$seeds"/*; do
  if [[ "$(basename "$f")" =~ ^[0-9a-f]{40}$ ]]; then cp "$f" "$min.rest/"; else cp "$f" "$min/"; fi
done
nice -n 19 "build-fuzz/fuzz_$name" -merge=1 -max_len="$maxlen" -timeout="${FUZZ_TIMEOUT:-1}" -rss_limit_mb=2048 \
  "$min" "$min.rest" "$work" >"build-fuzz/logs/$name.merge.log" 2>&1
rm -rf "$seeds" && mv "$min" "$seeds" && rm -rf "$min.rest"
echo "fuzz.sh: fuzz/corpus/$name now holds $(ls "$seeds" | wc -l) inputs ($(du -sh "$seeds" | cut -f1))"
