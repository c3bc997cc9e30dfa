#!/usr/bin/env bash
# Create .venv with the project and its test tools, from a fresh Debian machine.
# CPU-only torch: torch is pinned to 2.13.0, which pip takes from a local CPU wheel folder where
# one is configured (pip's find-links); elsewhere set FLEET_PIP_ARGS to PyTorch's CPU wheel
# index (README, "CPU-only torch") so pip does not pull the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
    # Debian splits venv/ensurepip into python3-venv.
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet ${FLEET_PIP_ARGS:-} -e ".[test]"
