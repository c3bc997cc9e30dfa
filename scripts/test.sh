#!/usr/bin/env bash
# Set up (idempotent) and run the tests.
#   bash scripts/test.sh           the fast profile: every test not marked slow (the inner loop; under
#                                  3 minutes on a quiet 2-core machine)
#   bash scripts/test.sh --all     everything, slow fidelity, learning and bridge tests included (CI runs this)
# Any other arguments go to pytest (e.g. a test file, -k NAME, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || bash scripts/setup.sh
profile=(-m "not slow")
if [ "${1:-}" = "--all" ]; then
    profile=()
    shift
fi
.venv/bin/python -m pytest -q "${profile[@]}" "$@"
