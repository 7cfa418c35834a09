#!/usr/bin/env bash
# The one Python install of marco-asr, from the lock (uv.lock): `make` (CI and
# developers), Dockerfile.operator and Dockerfile.trainer all run this, so an
# image holds what the tests tested.
#
#   scripts/install-python.sh EXTRAS [--editable]
#
# EXTRAS: comma-separated extras, e.g. `operator`, `trainer`, `operator,trainer,dev`.
# VENV:   the environment to create or bring in line with the lock (default: .venv
#         in the checkout); packages the lock does not list for EXTRAS are removed.
# PYTHON: the interpreter to build it from (default: python3).
# UV:     the uv binary (default: the pinned one, installed into .tools on first use).
#
# Nothing is resolved here: `uv sync --locked` installs the exact versions and
# hashes in uv.lock and fails when the lock no longer matches pyproject.toml
# (run `make lock`). It prints one summary line; the details go to stderr.
set -euo pipefail

usage="usage: $0 EXTRAS [--editable]   (EXTRAS e.g. operator or operator,trainer,dev)"
extras=${1:?$usage}
mode=${2:-}
python=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}

if [[ ! $extras =~ ^[a-z]+(,[a-z]+)*$ ]]; then
    echo "install-python.sh: EXTRAS must be comma-separated names, got '$extras'" >&2
    exit 2
fi
# --compile-bytecode: pip writes .pyc files at install time and uv does not; where
# PYTHONDONTWRITEBYTECODE is set (containers, CI) every process would otherwise
# compile transformers and peft afresh, which doubles the test suite's time.
args=(sync --locked --compile-bytecode --project "$root" --python "$python")
case "$mode" in
    "") args+=(--no-editable) ;;
    --editable) ;;
    *) echo "install-python.sh: unknown option '$mode'; $usage" >&2; exit 2 ;;
esac
for extra in ${extras//,/ }; do
    args+=(--extra "$extra")
done

uv=${UV:-}
if [[ -z $uv ]]; then
    uv=$root/.tools/bin/uv
    [[ -x $uv ]] || PYTHON=$python "$root/scripts/install-uv.sh" "$root/.tools" >&2
fi

# uv must use this machine's interpreter, never download one.
UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$venv "$uv" "${args[@]}" >&2
count=$("$uv" pip list --python "$venv/bin/python" --format freeze 2>/dev/null | wc -l)
version=$("$venv/bin/python" -c 'import platform; print(platform.python_version())')
echo "$count packages from uv.lock ($extras) in $venv, Python $version"
