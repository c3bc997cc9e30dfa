#!/usr/bin/env bash
# Create .venv with the project, its test tools and the optional extras (Ray, Parquet, pandas), from a fresh Debian machine.
# CPU-only torch: torch is pinned to 2.13.0, which pip takes from a local CPU wheel folder where
# one is configured (pip's find-links); elsewhere set FLEET_PIP_ARGS to PyTorch's CPU wheel
# index (README, "CPU-only torch") so pip does not pull the CUDA build.
# Data (README, "Data"): installs Debian's dataset-fashion-mnist unless its files are there already
# or FLEET_SKIP_DATA=1 (for data kept elsewhere and found through FLEET_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
apt_packages=()
# Debian splits venv/ensurepip into python3-venv.
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || apt_packages+=(python3-venv)
if [ "${FLEET_SKIP_DATA:-0}" != 1 ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    apt_packages+=(dataset-fashion-mnist)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${apt_packages[@]}"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet ${FLEET_PIP_ARGS:-} -e ".[test,ray,parquet,pandas]"
