#!/usr/bin/env bash
# The one Python install of marco-asr: `make` (CI and developers), Dockerfile.operator
# and Dockerfile.trainer all run this, so an image holds what the tests tested.
#
#   scripts/install-python.sh EXTRAS [--editable]
#
# EXTRAS: comma-separated extras, e.g. `operator`, `trainer`, `operator,trainer,dev`.
# PYTHON: the interpreter to install into (default: python3).
set -euo pipefail

usage="usage: $0 EXTRAS [--editable]   (EXTRAS e.g. operator or operator,trainer,dev)"
extras=${1:?$usage}
mode=${2:-}
python=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)

if [[ ! $extras =~ ^[a-z]+(,[a-z]+)*$ ]]; then
    echo "install-python.sh: EXTRAS must be comma-separated names, got '$extras'" >&2
    exit 2
fi
case "$mode" in
    "") target=("$root[$extras]") ;;
    --editable) target=(-e "$root[$extras]") ;;
    *) echo "install-python.sh: unknown option '$mode'; $usage" >&2; exit 2 ;;
esac

"$python" -m pip install --quiet --upgrade pip
if [[ ,$extras, == *,trainer,* ]]; then
    # torch first, pinned: the CUDA build from PyPI is the one torchaudio 2.11 works
    # with; resolving it inside the extras could pick another build.
    "$python" -m pip install --quiet 'torch==2.11.*' 'torchaudio==2.11.*'
fi
"$python" -m pip install --quiet "${target[@]}"
