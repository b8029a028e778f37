#!/usr/bin/env bash
# The project's test command (README, .ci/run): set up or refresh .venv, lint, then run the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh test/model -x`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PAGE4D_VENV:-$repo/.venv}"

bash "$repo/scripts/setup_env.sh"
cd "$repo"
echo "[test] ruff check"
"$venv/bin/ruff" check .
echo "[test] pytest"
exec "$venv/bin/python" -m pytest "$@"
