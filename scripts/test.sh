#!/usr/bin/env bash
# README command 2: install what is missing, build kiln twice (Release, and with
# AddressSanitizer + UndefinedBehaviorSanitizer) and run the whole test suite in both.
# KN_SKIP_SANITIZE=1 skips the sanitizer build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh python3 python3-venv
jobs=$(nproc)
# Python packages for the reference tests (the real safetensors reader), in a venv
if [ ! -x build/pyenv/bin/python ] || ! build/pyenv/bin/python -c "import safetensors, numpy" 2>/dev/null; then
  rm -rf build/pyenv
  mkdir -p build
  python3 -m venv build/pyenv
  build/pyenv/bin/pip install -q --disable-pip-version-check safetensors numpy
fi
export KN_PYTHON="$PWD/build/pyenv/bin/python" KN_REQUIRE_PY=1
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKN_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j1)
if [ "${KN_SKIP_SANITIZE:-0}" != 1 ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKN_SANITIZE=ON -DKN_WERROR=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  # leaks are errors; oneDNN's JIT code is fine under ASan
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     KN_SANITIZED=1 ctest --output-on-failure -j1 -LE slow)
fi
