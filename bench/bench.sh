#!/usr/bin/env bash
# kiln vs PyTorch on this machine, in one run (`make bench`). Installs what it needs:
#  - Debian packages: kiln's build dependencies, Debian's PyTorch (python3-torch),
#    numpy, python3-venv and Debian's optimised BLAS (libopenblas0-openmp): without it
#    python3-torch runs its linear layers on the reference BLAS, ~10x slower, which
#    would not be the PyTorch a Debian user has;
#  - PyPI's current torch (the peer a user would pick; used on the CPU only) into a
#    virtual environment, by default ~/.cache/kiln-bench/venv (KN_BENCH_VENV). It
#    is a large download (PyPI's Linux wheel depends on the CUDA libraries). If it
#    cannot be installed, the report says so and compares with Debian's PyTorch only.
# Builds kiln (Release) and bench/kiln_bench, then runs bench/report.py. Arguments are
# passed to report.py (e.g. --seconds 8, --models cnn). Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh python3-torch python3-numpy python3-venv libopenblas0-openmp
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target kiln_bench >/dev/null

venv=${KN_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-bench/venv}
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
  --torch-debian /usr/bin/python3 "$@"
