#!/usr/bin/env bash
# Install the pinned uv (scripts/uv-requirements.txt: exact version, every
# wheel's hash) into DIR, with the interpreter's own pip:
#
#   scripts/install-uv.sh DIR        ->  DIR/bin/uv
#
# PYTHON: the interpreter whose pip downloads it (default: python3).
set -euo pipefail

dir=${1:?usage: $0 DIR}
python=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)

"$python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --target "$dir/uv" -r "$root/scripts/uv-requirements.txt"
mkdir -p "$dir/bin"
ln -sf ../uv/bin/uv "$dir/bin/uv"
"$dir/bin/uv" --version
