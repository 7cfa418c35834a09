#!/bin/bash
# Wheels for benchmarks/trainer_gpu.sh on a GPU machine that has torch (2.11, CUDA) but no
# package index: the trainer's dependencies that its image lacks, or has at other versions
# than uv.lock's, for CPython 3.12 on x86-64, into .whl/ (git-ignored; carried to the machine).
# The versions are uv.lock's; torch, numpy, scipy, matplotlib and the CUDA libraries are the
# image's own.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="transformers huggingface-hub tokenizers peft pydantic pydantic-core annotated-types
typing-inspection typing-extensions cffi pycparser soundfile soxr jiwer rapidfuzz
whisper-normalizer indic-numtowords text2num more-itertools httpx2 httpcore2 truststore pyloudnorm"
pins=$(.tools/bin/uv export --frozen --no-hashes --extra trainer --no-emit-project --no-default-groups \
  | sed -n 's/^\([a-z0-9._-]*==[^ ;]*\).*/\1/p')
wanted=()
for name in $PACKAGES; do
  pin=$(grep -m1 "^$name==" <<<"$pins") || { echo "$name is not in uv.lock's trainer set" >&2; exit 1; }
  wanted+=("$pin")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wanted[@]}"
du -sh .whl
