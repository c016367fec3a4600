#!/usr/bin/env bash
# Install the Debian packages kiln needs to build, test and train, if any is missing.
# Usage: scripts/install-deps.sh [extra-package ...]
# python3-sklearn: scikit-learn's bundled CSV files, read by tests/test_sources.c.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libdnnl-dev libinih-dev libcjson-dev libcsv-dev zlib1g-dev dataset-fashion-mnist python3-sklearn "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "kiln: installing missing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "kiln: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
