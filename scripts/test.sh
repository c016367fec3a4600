#!/usr/bin/env bash
# README command 2: install what is missing, build kiln twice (Release, and with
# AddressSanitizer + UndefinedBehaviorSanitizer) and run the whole test suite in both;
# on a CPU with AVX-512 the Release suite runs a second time with kiln's and oneDNN's
# instruction set capped to AVX2 (KN_MAX_ISA=avx2), the path of an AVX2-only machine.
# KN_SKIP_SANITIZE=1 skips the sanitizer build, KN_SKIP_CAPPED=1 the capped run.
# Every build option is passed explicitly, so that whatever configured build/ before
# (README command 1, an older checkout) does not change this build.
set -euo pipefail
cd "$(dirname "$0")/.."
# cheap source checks first: op identity through flags only (scripts/check_op_identity.sh)
bash scripts/check_op_identity.sh
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
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKN_WERROR=ON -DKN_SANITIZE=OFF -DKN_NATIVE=OFF >/dev/null
cmake --build build -j"$jobs"
echo "ISA path: $(./build/kiln --version | sed -n 's/^isa: //p')"
(cd build && ctest --output-on-failure -j1)
if [ "${KN_SKIP_CAPPED:-0}" != 1 ]; then
  if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    echo "ISA path: $(KN_MAX_ISA=avx2 ./build/kiln --version | sed -n 's/^isa: //p')"
    (cd build && KN_MAX_ISA=avx2 ctest --output-on-failure -j1)
  else
    echo "this CPU has no AVX-512: the suite above ran the AVX2 (or baseline) path; no capped run"
  fi
fi
if [ "${KN_SKIP_SANITIZE:-0}" != 1 ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKN_SANITIZE=ON -DKN_WERROR=ON -DKN_NATIVE=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  # leaks are errors; oneDNN's JIT code is fine under ASan
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     KN_SANITIZED=1 ctest --output-on-failure -j1 -LE slow)
fi
