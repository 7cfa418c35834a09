#!/usr/bin/env bash
# Install the Debian packages named on the command line that are missing
# (names only: their versions are the distribution's). Ends with one summary line.
set -euo pipefail

missing=()
for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=$([[ $(id -u) == 0 ]] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "$# Debian packages present (${#missing[@]} installed now)"
