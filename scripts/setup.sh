#!/usr/bin/env bash
# Create .venv with the project and its test tools. CPU-only torch: torch is pinned to 2.13.0,
# which pip takes from a local CPU wheel folder where one is configured (find-links); elsewhere
# the CPU build comes from PyTorch's CPU index (README, "CPU-only torch").
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null || true
.venv/bin/python -m pip install --quiet ${FLEET_PIP_ARGS:-} -e ".[test]"
