#!/usr/bin/env bash
# The README's main job: set up .venv if needed, then run page4d-demo (synthetic recording -> the real node over
# DDS with the shipped small model -> recorded MCAP outputs -> report.png and metrics). Output folder: $1 or
# ./page4d_demo. Extra arguments go to page4d-demo (see `.venv/bin/page4d-demo --help`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PAGE4D_VENV:-$repo/.venv}"
out="${1:-$repo/page4d_demo}"
shift || true

bash "$repo/scripts/setup_env.sh"
exec "$venv/bin/page4d-demo" --out "$out" "$@"
