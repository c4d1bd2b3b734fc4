#!/usr/bin/env bash
# Every GPU figure of aevae in one table (scripts/gpu_check.py); --dry, or no GPU: the CPU dry pass.
#   bash scripts/gpu_check.sh [--dry] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-$(command -v python)}"
exec "$python" scripts/gpu_check.py "$@"
