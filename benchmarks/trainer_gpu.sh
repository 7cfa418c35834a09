#!/bin/bash
# The trainer on a GPU machine, in one go (run from the repository root):
#  1. both model families (tiny random Whisper, tiny random Qwen2-Audio + LoRA) train
#     under torchrun in the default precision (bf16 on a GPU); a directive written
#     mid-run changes the LR, a second one stops the run, which must exit 0 with an export;
#  2. benchmarks/train.py against Seq2SeqTrainer at two Whisper sizes, bf16, with
#     samples/s and peak GPU memory.
# The speech comes from `python benchmarks/train.py --write-data .gpu/data` made where flite
# is installed. Wheels under .whl/ (a machine without a package index) are installed first.
# OUT: where logs and benchmark tables go. FUNCTIONAL_ONLY=1 skips the benchmarks.
set -uo pipefail
OUT=${OUT:-/tmp/trainer-gpu}; mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD/contract:$PWD/operator:$PWD/trainer:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
python3 -c "import torch,transformers,peft,pydantic;print('torch',torch.__version__,'transformers',transformers.__version__,'peft',peft.__version__,'cuda',torch.cuda.is_available())"
W=$(mktemp -d)
python3 - $W <<'EOF'
import sys; sys.path.insert(0, "benchmarks")
from train import SENTENCES
from tests.tiny_models import build_tiny_whisper, build_tiny_qwen2_audio
build_tiny_whisper(sys.argv[1] + "/whisper", SENTENCES, d_model=64, layers=2)
build_tiny_qwen2_audio(sys.argv[1] + "/qwen", SENTENCES)
EOF
M=$PWD/.gpu/data/speech.jsonl
functional() {  # family model lr
  local name=$1 model=$2 lr=$3; local out=$W/run-$name ctl=$W/ctl-$name.json
  ( while ! grep -q '"step": 25,' $out/trace/rank-0.jsonl 2>/dev/null; do sleep 0.2; done
    python3 -c "from marco_contract.formats import Directive;print(Directive(cycle=1,learning_rate=$lr/4).model_dump_json())" > $ctl.tmp && mv $ctl.tmp $ctl
    while ! grep -q '"step": 45,' $out/trace/rank-0.jsonl 2>/dev/null; do sleep 0.2; done
    python3 -c "from marco_contract.formats import Directive;print(Directive(cycle=1,learning_rate=$lr/4,stop=True).model_dump_json())" > $ctl.tmp && mv $ctl.tmp $ctl ) &
  local t0=$(date +%s.%N)
  timeout 300 python3 -m torch.distributed.run --standalone --nproc-per-node=1 -m marco_trainer train --model $model \
    --train-manifest $M --validation-manifest $M --output-dir $out --control-file $ctl --learning-rate $lr \
    --max-steps 200 --eval-every 10 --eval-samples 8 --per-device-batch-size 8 --max-new-tokens 16 --metrics-port 0 \
    > $out.log 2>&1
  echo "== $name: exit $? in $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"
  wait
  python3 - $out <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
h = json.loads((out / "evaluations.json").read_text())
print("evaluations (step, lr, wer, loss):", [(e["step"], e["lr"], e["wer"], round(e["loss"], 3)) for e in h["evaluations"]])
trace = [json.loads(l) for l in (out / "trace" / "rank-0.jsonl").read_text().splitlines()]
changes = [(t["step"], t["lr"]) for a, t in zip(trace, trace[1:]) if t["lr"] != a["lr"]]
print("steps", len(trace), "lr changes", changes, "first/last loss", round(trace[0]["loss"], 3), round(trace[-1]["loss"], 3))
print("export:", sorted(p.name for p in (out / "export").iterdir()))
print("result:", (out / "result.json").read_text() if (out / "result.json").exists() else "none")
EOF
  grep -iE "error|traceback|bf16|autocast" $out.log | head -5
}
functional whisper $W/whisper 1e-3
functional qwen $W/qwen 1e-3
cp $W/run-*.log $OUT/ 2>/dev/null
bench() { python3 benchmarks/train.py --manifest $M "$@" 2>&1 | grep -vE "train:|train_runtime|Warning|warn"; }
[ -n "${FUNCTIONAL_ONLY:-}" ] && exit 0
echo "== benchmark: Whisper-base size"
bench --d-model 512 --layers 6 --heads 8 --ffn 2048 --window 30 --batch 16 --accum 2 --steps 25 --warmup 5 --rounds 2 --precision bf16 --also-other-prefetch | tee $OUT/bench-base.txt
echo "== benchmark: Whisper-small size"
bench --d-model 768 --layers 12 --heads 12 --ffn 3072 --window 30 --batch 16 --accum 2 --steps 20 --warmup 5 --rounds 2 --precision bf16 | tee $OUT/bench-small.txt
