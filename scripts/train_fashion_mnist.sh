#!/usr/bin/env bash
# README command 1: install what is missing, build kiln, train the CNN example on
# Fashion-MNIST (Debian's dataset-fashion-mnist) and print the test accuracy.
# Extra arguments go to `kiln train`, e.g. --threads 4 or --set train.epochs=2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# every option explicit: a build/ configured before (scripts/test.sh turns -Werror on)
# must not change this one; a new compiler's warnings never stop a user's first run
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKN_WERROR=OFF -DKN_SANITIZE=OFF -DKN_NATIVE=OFF >/dev/null
cmake --build build -j"$(nproc)" --target kiln_cli
./build/kiln train examples/fashion_mnist_cnn.ini "$@"
