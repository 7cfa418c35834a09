#!/usr/bin/env bash
# combined.md, beside this script, is `--report-only` over every row of seed-two/combine.sh
# with meeting's FT + DA rows replaced by this folder's (augmentation.babbleTalkers: 3,
# the one scenario whose target has talkers behind the transcribed one) and the ceiling
# rows of ../ceiling/ (meeting seeds 1 and 2, car and voip seed 1) added to seed 0's of
# each scenario (six-voices/).
#   bash benchmarks/results/adaptation/source-babble/combine.sh WORK
#   python benchmarks/adaptation.py --report-only --work WORK --seeds 0,1,2 \
#       --scenarios car,voip,meeting,radio --systems baseline,hf,hf-aug,ft,ftda,ftda-target,ft-oracle
# Car's and voip's rows with babble (seed 0, what it does where the target has none) are
# under runs/ too but not copied: the report would read them as those scenarios' FT + DA.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: combine.sh WORK}
bash "$here/seed-two/combine.sh" "$work"
cp -r "$here/source-babble/runs/meeting/." "$work/runs/meeting/"
cp -r "$here/ceiling/runs/." "$work/runs/"
# The ceiling at seed 0 of every tuning scenario (the report's "ceiling" needs all three).
for scenario in car voip meeting; do
  mkdir -p "$work/runs/$scenario/seed0/ft-oracle"
  cp "$here/six-voices/runs/$scenario/seed0/ft-oracle/row.json" "$work/runs/$scenario/seed0/ft-oracle/"
done
# Voip's FT at seeds 1 and 2 again (../voip-ft/), with the dev readings the averaging rule
# needs; six-voices/'s rows of them predate those readings.
cp -r "$here/voip-ft/runs/." "$work/runs/"
