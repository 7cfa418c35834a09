#!/usr/bin/env bash
# combined.md, beside this script, is `--report-only` over a work folder of every row of
# the chain of 6c2db3a (code 7bfd79a..ae950c6) and the HF rows, which no marco change
# touches.
#   bash benchmarks/results/adaptation/seed-two/combine.sh WORK
#   python benchmarks/adaptation.py --report-only --work WORK --seeds 0,1,2 \
#       --scenarios car,voip,meeting,radio
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: combine.sh WORK}
mkdir -p "$work/runs"
copy() { mkdir -p "$work/runs/$2"; cp "$here/$1/runs/$2/row.json" "$work/runs/$2/"; }
cp -r "$here/one-equaliser/runs/." "$work/runs/"
# six-voices: car's HF row of seed 0, voip's FT and HF of seeds 1 and 2 and HF of seed 0
# (not its ftda-target rows: 3ea8a34's per-copy equaliser)
copy six-voices car/seed0/hf
copy six-voices voip/seed0/hf
for seed in 1 2; do for system in ft hf; do copy six-voices "voip/seed$seed/$system"; done; done
for folder in seed-one radio-seed-one seed-two; do cp -r "$here/$folder/runs/." "$work/runs/"; done
