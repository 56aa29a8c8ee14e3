#!/usr/bin/env bash
# bench_workers.sh — images/hour of one job set run with `sdbatch run --workers 1` and `--workers 2`
# side by side, on the same threads (default 2), the same model and the same jobs: the median over
# --reps runs of each, the two interleaved (1, 2, 1, 2, ...) so that a machine whose speed drifts
# affects both alike. Each run starts from an empty output folder and is timed whole (model load
# included, as a real night's run). It also checks that both give byte-identical images.
#
#   tools/bench_workers.sh [MODEL_DIR] [--size 512] [--steps 20] [--jobs 2] [--reps 1]
#                          [--threads 2] [--workers "1 2"] [--keep]
#
# MODEL_DIR: any model sdbatch loads (default /work/sdmodels/sd15-random, our team machine's full-size
# random SD 1.5 inpainting weights: build/sdbatch-make-random-model DIR --size full makes one).
# Duration: a 512x512 20-step image takes about 5.3 min on 2 AVX2 cores, so the default set of 2 jobs
# takes about 11 min per configuration, ~22 min for the whole script; --reps N multiplies that.
# SDBATCH=/path/to/sdbatch overrides the binary (default: build/sdbatch beside this script).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
model=/work/sdmodels/sd15-random
size=512 steps=20 jobs=2 reps=1 threads=2 workers="1 2" keep=0
sdbatch="${SDBATCH:-$here/build/sdbatch}"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "bench_workers.sh: unknown option $1" >&2; usage 2 >&2 ;;
    *) model="$1"; shift ;;
  esac
done
for v in "$size" "$steps" "$jobs" "$reps" "$threads"; do
  case "$v" in ''|*[!0-9]*) echo "bench_workers.sh: '$v' is not a whole number" >&2; exit 2 ;; esac
done
[ -x "$sdbatch" ] || { echo "bench_workers.sh: no sdbatch binary at $sdbatch (build first, or set SDBATCH)" >&2; exit 2; }
[ -e "$model" ] || { echo "bench_workers.sh: no model at $model" >&2; exit 2; }
model="$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"

work="$(mktemp -d "${TMPDIR:-/tmp}/sdb-bench-workers.XXXXXX")"
cleanup() { if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

# the job set: the bundled demo picture and mask, resized to SIZE, one prompt and seed per job
{
  echo "version: 1"
  echo "model: $model"
  echo "output_dir: out"
  echo "defaults:"
  echo "  image: $here/tests/data/demo.png"
  echo "  mask: $here/tests/data/demo-mask.png"
  echo "  width: $size"
  echo "  height: $size"
  echo "  steps: $steps"
  echo "  guidance_scale: 7.5"
  echo "jobs:"
  for i in $(seq 0 $((jobs - 1))); do
    echo "  - id: job$i"
    echo "    prompt: \"a stone cottage in a meadow, variant $i\""
    echo "    seed: $((1000 + i))"
  done
} > "$work/jobs.yaml"

echo "bench_workers: $jobs job(s) of ${size}x${size}, $steps steps, $threads thread(s), workers: $workers, $reps rep(s)"
echo "  model $model"
"$sdbatch" --version | sed -n 's/^ *\(blas: .*\)/  \1/p'
echo "  CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) CPU(s) available"

calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
declare -A secs
for rep in $(seq 1 "$reps"); do
  for k in $workers; do
    rm -rf "$work/out"
    t0=$(date +%s.%N)
    if ! OMP_WAIT_POLICY=PASSIVE "$sdbatch" run "$work/jobs.yaml" --workers "$k" --threads "$threads" --no-progress \
         > "$work/run-$k-$rep.log" 2>&1; then
      echo "bench_workers.sh: the run with --workers $k failed:" >&2
      cat "$work/run-$k-$rep.log" >&2
      exit 1
    fi
    t1=$(date +%s.%N)
    s=$(calc "$t1 - $t0")
    secs[$k]="${secs[$k]:-} $s"
    n=$(ls "$work/out"/*.png | wc -l)
    [ "$n" -eq "$jobs" ] || { echo "bench_workers.sh: --workers $k wrote $n of $jobs images" >&2; exit 1; }
    (cd "$work/out" && sha256sum ./*.png) > "$work/sums-$k-$rep"
    printf '  rep %d, --workers %d: %8.1f s, %6.1f images/hour\n' "$rep" "$k" "$s" "$(calc "$jobs * 3600 / $s")"
  done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
first="" base_iph=""
echo
printf '  %-10s %-14s %12s %14s %10s\n' workers "threads each" "median s" "images/hour" "vs first"
for k in $workers; do
  m=$(echo "${secs[$k]}" | median)
  iph=$(calc "$jobs * 3600 / $m")
  [ -n "$base_iph" ] || base_iph=$iph
  each=$((threads / k)); [ "$each" -ge 1 ] || each=1
  printf '  %-10s %-14s %12.1f %14.2f %9.2fx\n' "$k" "$each" "$m" "$iph" "$(calc "$iph / $base_iph")"
  if [ -z "$first" ]; then first=$k
  elif ! cmp -s "$work/sums-$first-1" "$work/sums-$k-1"; then
    echo "bench_workers.sh: --workers $k gave other images than --workers $first" >&2; exit 1
  fi
done
echo "  images identical for every --workers value"
