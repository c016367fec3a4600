#!/usr/bin/env bash
# Guard overhead: time per training step with the non-finite guard on (default) and off,
# same config, same steps, for both Fashion-MNIST examples. Runs alternate on/off for
# ROUNDS rounds and the fastest of each is kept (least disturbed by other load).
# Usage: bash bench/guard.sh [--threads N] [--steps S] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKN_WERROR=OFF -DKN_SANITIZE=OFF -DKN_NATIVE=OFF >/dev/null
cmake --build build -j"$(nproc)" --target kiln_cli >/dev/null
threads=$(nproc); steps=600; rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
printf "%-20s %8s %14s %14s %10s\n" model steps "off ms/step" "on ms/step" overhead
for ex in fashion_mnist_mlp fashion_mnist_cnn; do
  best_on=""; best_off=""
  for r in $(seq "$rounds"); do
    for g in false true; do
      d="$out/$ex-$g-$r"
      ./build/kiln train examples/$ex.ini --run-dir "$d" --threads "$threads" --quiet \
        --set train.max_steps="$steps" --set guard.enabled=$g --set data.limit_test=1000 >/dev/null
      t=$(python3 -c "import json,sys; [print(json.loads(l)['train_seconds']) for l in open(sys.argv[1]) if '\"checkpoint_time\"' in l]" "$d/metrics.jsonl")
      if [ $g = true ]; then best_on=$(python3 -c "print(min(float('$t'), float('${best_on:-1e9}')))"); else best_off=$(python3 -c "print(min(float('$t'), float('${best_off:-1e9}')))"); fi
    done
  done
  python3 -c "
on, off, s = $best_on, $best_off, $steps
print(f'{\"$ex\":<20} {s:8d} {1000*off/s:14.3f} {1000*on/s:14.3f} {100*(on-off)/off:9.2f}%')"
done
rm -rf "$out"
