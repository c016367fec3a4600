#!/usr/bin/env bash
# Checkpoint cost: time of one checkpoint write and its share of training time at the
# default checkpoint frequency ([checkpoint] every_seconds = 300, plus "first" and one
# per epoch; "best" is a hard link), for both Fashion-MNIST examples, full default runs.
# Usage: bash bench/checkpoint.sh [--threads N] [--epochs E]   (E overrides the examples' epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKN_WERROR=OFF -DKN_SANITIZE=OFF -DKN_NATIVE=OFF >/dev/null
cmake --build build -j"$(nproc)" --target kiln_cli >/dev/null
threads=$(nproc); epochs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --epochs) epochs="--set train.epochs=$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
printf "%-26s %8s %10s %12s %12s %12s %8s\n" model writes "MB each" "ms/write" "ckpt s" "train s" share
for ex in fashion_mnist_mlp fashion_mnist_cnn; do
  ./build/kiln train examples/$ex.ini --run-dir "$out/$ex" --threads "$threads" --quiet $epochs
  size=$(stat -c %s "$out/$ex/checkpoints/first.safetensors")
  line=$(grep '"checkpoint_time"' "$out/$ex/metrics.jsonl")
  python3 - "$ex" "$size" "$line" <<'PY'
import json, sys
ex, size, ev = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
w, s, t = ev["writes"], ev["seconds"], ev["train_seconds"]
print(f"{ex:<26} {w:8d} {size/1e6:10.2f} {1000*s/max(w,1):12.2f} {s:12.3f} {t:12.1f} {100*s/t:7.2f}%")
PY
done
rm -rf "$out"
