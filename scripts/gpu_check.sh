#!/usr/bin/env bash
# Every GPU figure of aevae in one table (scripts/gpu_check.py); --dry, or no GPU: the CPU dry pass.
#   bash scripts/gpu_check.sh [--dry] [--out DIR]       (a relative --out is below where you run it)
set -euo pipefail
here=$(pwd)
cd "$(dirname "$0")/.."
python="${PYTHON:-$(command -v python || command -v python3 || true)}"
[ -n "$python" ] || { echo "gpu_check.sh: no python on PATH (activate the venv, or set PYTHON)" >&2; exit 2; }
args=()
while [ $# -gt 0 ]; do  # --out DIR relative to the caller's folder, not the repo's
  case "$1" in
    --out) args+=("--out" "$(cd "$here" && realpath -m "$2")"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
exec "$python" scripts/gpu_check.py "${args[@]}"
