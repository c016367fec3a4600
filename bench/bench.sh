#!/usr/bin/env bash
# kiln vs PyTorch on this machine, in one run (`make bench`). Installs what it needs:
#  - Debian packages: kiln's build dependencies, Debian's PyTorch (python3-torch),
#    numpy, python3-venv and OpenBLAS's OpenMP build (libopenblas0-openmp), the
#    fastest BLAS for python3-torch's linear layers: `apt-get install python3-torch`
#    alone gives the reference BLAS (~20x slower on the MLP). Debian's torch is run
#    with all three (OpenMP OpenBLAS, pthreads OpenBLAS, reference BLAS); the
#    acceptance points are judged against the OpenMP one;
#  - PyPI's current torch (the peer a user would pick; used on the CPU only) into a
#    virtual environment, by default ~/.cache/kiln-bench/venv (KN_BENCH_VENV). It
#    is a large download (PyPI's Linux wheel depends on the CUDA libraries). If it
#    cannot be installed, the report says so and compares with Debian's PyTorch only.
# Builds kiln (Release) and bench/kiln_bench, then runs bench/report.py. Arguments are
# passed to report.py (e.g. --seconds 8, --models cnn). Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh python3-torch python3-numpy python3-venv libopenblas0-openmp
# Debian's torch is also run with two other BLAS builds (see report.py): OpenBLAS's
# pthreads build is unpacked into the cache rather than installed, since installing it
# would switch the machine's libblas.so.3 alternative.
arch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kiln-bench
pthr=$cache/openblas-pthread
if [ ! -e "$pthr/usr/lib/$arch/openblas-pthread/libblas.so.3" ]; then
  rm -rf "$pthr" && mkdir -p "$pthr"
  if ! (cd "$pthr" && apt-get download -q libopenblas0-pthread >/dev/null 2>&1 && dpkg-deb -x libopenblas0-pthread_*.deb .); then
    echo "bench: could not fetch libopenblas0-pthread; Debian's torch runs without that BLAS variant"
  fi
fi
blas_args=(--blas-openmp "/usr/lib/$arch/openblas-openmp" --blas-reference "/usr/lib/$arch/blas"
           --blas-pthread "$pthr/usr/lib/$arch/openblas-pthread")
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKN_WERROR=OFF -DKN_SANITIZE=OFF -DKN_NATIVE=OFF >/dev/null
cmake --build build -j"$(nproc)" --target kiln_bench >/dev/null

venv=${KN_BENCH_VENV:-$cache/venv}
pypi_python=""
pypi_note=""
if [ "${KN_BENCH_NO_PYPI:-0}" = 1 ]; then
  pypi_note="skipped (KN_BENCH_NO_PYPI=1)"
else
  if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "bench: installing PyPI's torch into $venv (a large download, once)"
    if /usr/bin/python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check torch numpy; then
      :
    else
      pypi_note="pip install torch failed"
    fi
  fi
  if "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    pypi_python="$venv/bin/python"
  else
    pypi_note=${pypi_note:-"import torch fails in $venv"}
  fi
fi
exec python3 bench/report.py --kiln build/kiln_bench --torch-pypi "$pypi_python" --pypi-note "$pypi_note" \
  --torch-debian /usr/bin/python3 "${blas_args[@]}" "$@"
