#!/bin/bash
# The trainer on a GPU machine, in one go (run from the repository root):
#  1. both model families (tiny random Whisper, tiny random Qwen2-Audio + LoRA) train
#     under torchrun in the default precision (bf16 on a GPU); a directive written
#     mid-run changes the LR, a second one stops the run, which must exit 0 with an export;
#  2. two ranks: with NCCL where the machine has two GPUs; on one GPU NCCL refuses two
#     ranks (the refusal is shown), so the two ranks share it through gloo
#     (MARCO_DIST_BACKEND), DDP and FSDP, both families;
#  3. benchmarks/train.py against Seq2SeqTrainer at two Whisper sizes, bf16, with
#     samples/s and peak GPU memory.
# Every run prints samples/s (from rank 0's per-step trace, after its first step) and the
# whole GPU's peak memory in use (nvidia-smi, sampled every 200 ms).
# The speech comes from `python benchmarks/train.py --write-data .gpu/data` made where flite
# is installed; wheels under .whl/ (scripts/gpu-wheels.sh; a machine without a package
# index) are installed first (NO_WHEELS=1: not). OUT: where logs and tables go.
# FUNCTIONAL_ONLY=1 skips step 3; TWO_RANKS_ONLY=1 runs step 2 alone.
set -uo pipefail
OUT=${OUT:-/tmp/trainer-gpu}; mkdir -p "$OUT"
if [ -z "${NO_WHEELS:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD/contract:$PWD/operator:$PWD/trainer:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONFAULTHANDLER=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
GPUS=$(python3 -c "import torch;print(torch.cuda.device_count())")
python3 -c "import torch,transformers,peft,pydantic;print('torch',torch.__version__,'transformers',transformers.__version__,'peft',peft.__version__,'pydantic',pydantic.__version__,'cuda',torch.cuda.is_available(),'gpus',torch.cuda.device_count(),'nccl',torch.cuda.nccl.version() if torch.cuda.is_available() else None)"
W=$(mktemp -d)
python3 - $W <<'EOF'
import sys; sys.path.insert(0, "benchmarks")
from train import SENTENCES
from tests.tiny_models import build_tiny_whisper, build_tiny_qwen2_audio
build_tiny_whisper(sys.argv[1] + "/whisper", SENTENCES, d_model=64, layers=2)
build_tiny_qwen2_audio(sys.argv[1] + "/qwen", SENTENCES)
EOF
M=$PWD/.gpu/data/speech.jsonl
BATCH=8
sampler_start() {  # the whole GPU's memory in use, MiB, every 200 ms
  SAMPLES=$W/smi-$1.txt; : > $SAMPLES
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > $SAMPLES 2>/dev/null &
    SAMPLER=$!
  else SAMPLER=; fi
}
sampler_stop() {
  [ -n "$SAMPLER" ] && kill $SAMPLER 2>/dev/null; wait $SAMPLER 2>/dev/null
  echo "peak GPU memory in use (nvidia-smi, whole GPU): $(sort -n $SAMPLES | tail -1) MiB"
}
train() {  # name model lr nproc strategy: a directive at step 25 (LR / 4), a stop at step 45
  local name=$1 model=$2 lr=$3 nproc=$4 strategy=$5; local out=$W/run-$name ctl=$W/ctl-$name.json
  ( while ! grep -q '"step": 25,' $out/trace/rank-0.jsonl 2>/dev/null; do sleep 0.2; done
    python3 -c "from marco_contract.formats import Directive;print(Directive(cycle=1,learning_rate=$lr/4).model_dump_json())" > $ctl.tmp && mv $ctl.tmp $ctl
    while ! grep -q '"step": 45,' $out/trace/rank-0.jsonl 2>/dev/null; do sleep 0.2; done
    python3 -c "from marco_contract.formats import Directive;print(Directive(cycle=1,learning_rate=$lr/4,stop=True).model_dump_json())" > $ctl.tmp && mv $ctl.tmp $ctl ) &
  local watcher=$!
  sampler_start $name
  local t0=$(date +%s.%N)
  timeout 150 python3 -m torch.distributed.run --standalone --nproc-per-node=$nproc -m marco_trainer train --model $model \
    --train-manifest $M --validation-manifest $M --output-dir $out --control-file $ctl --learning-rate $lr \
    --max-steps 200 --eval-every 10 --eval-samples 8 --per-device-batch-size $BATCH --max-new-tokens 16 \
    --metrics-port 0 --strategy $strategy > $out.log 2>&1
  echo "== $name ($nproc process(es), $strategy, backend ${MARCO_DIST_BACKEND:-default}): exit $? in $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"
  sampler_stop
  kill $watcher 2>/dev/null; wait $watcher 2>/dev/null
  python3 - $out $nproc $BATCH <<'EOF'
import json, sys
from pathlib import Path
out, world, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if not (out / "evaluations.json").exists():
    print("no evaluations.json"); sys.exit()
h = json.loads((out / "evaluations.json").read_text())
print("evaluations (step, lr, wer, loss):", [(e["step"], e["lr"], e["wer"], round(e["loss"], 3)) for e in h["evaluations"]])
trace = [json.loads(l) for l in (out / "trace" / "rank-0.jsonl").read_text().splitlines()]
changes = [(t["step"], t["lr"]) for a, t in zip(trace, trace[1:]) if t["lr"] != a["lr"]]
print("steps", len(trace), "lr changes", changes, "first/last loss", round(trace[0]["loss"], 3), round(trace[-1]["loss"], 3))
# Wall time between the first and the last step includes the evaluations between them.
span = trace[-1]["time"] - trace[0]["time"]
print(f"samples/s over steps 2..{len(trace)} (evaluations included): {batch * world * (len(trace) - 1) / span:.1f}")
print("export:", sorted(p.name for p in (out / "export").iterdir()) if (out / "export").exists() else "none")
if (out / "result.json").exists():
    r = json.loads((out / "result.json").read_text())
    print("result:", {k: r[k] for k in ("ok", "message", "steps", "best_step", "wer", "family")})
EOF
  grep -iE "error|traceback|duplicate|refuse" $out.log | head -6
}
if [ -z "${TWO_RANKS_ONLY:-}" ]; then
  train whisper $W/whisper 1e-3 1 ddp
  train qwen $W/qwen 1e-3 1 ddp
fi
if [ "$GPUS" -ge 2 ]; then
  train whisper-nccl2 $W/whisper 1e-3 2 ddp
  train whisper-nccl2-fsdp $W/whisper 1e-3 2 fsdp
  train qwen-nccl2-fsdp $W/qwen 1e-3 2 fsdp
else  # one GPU (or none, a rehearsal on CPU): two ranks through gloo
  if [ "$GPUS" -eq 1 ]; then
    echo "== two ranks on one GPU: the trainer's refusal, then NCCL's own (an all-reduce on cuda:0 from both)"
    timeout 60 python3 -m torch.distributed.run --standalone --nproc-per-node=2 -m marco_trainer train --model $W/whisper \
      --train-manifest $M --validation-manifest $M --output-dir $W/run-refused --learning-rate 1e-3 --max-steps 5 \
      --metrics-port 0 2>&1 | grep -m1 -E "LOCAL_RANK"
    printf '%s\n' "import torch, torch.distributed as d" "torch.cuda.set_device(0); d.init_process_group('nccl')" \
      "t = torch.ones(1, device='cuda'); d.all_reduce(t); print('NCCL all-reduce with two ranks on one GPU:', t.item())" > $W/nccl2.py
    timeout 60 python3 -m torch.distributed.run --standalone --nproc-per-node=2 $W/nccl2.py 2>&1 | grep -m2 -E "Duplicate|all-reduce|Error"
  fi
  export MARCO_DIST_BACKEND=gloo
  train whisper-gloo2 $W/whisper 1e-3 2 ddp
  train whisper-gloo2-fsdp $W/whisper 1e-3 2 fsdp
  train qwen-gloo2-fsdp $W/qwen 1e-3 2 fsdp
  train qwen-gloo2 $W/qwen 1e-3 2 ddp
  unset MARCO_DIST_BACKEND
fi
cp $W/run-*.log $OUT/ 2>/dev/null
bench() { timeout 150 python3 benchmarks/train.py --manifest $M "$@" 2>&1 | grep -vE "train:|train_runtime|Warning|warn"; }
[ -n "${FUNCTIONAL_ONLY:-}${TWO_RANKS_ONLY:-}" ] && exit 0
echo "== benchmark: Whisper-base size"
bench --d-model 512 --layers 6 --heads 8 --ffn 2048 --window 30 --batch 16 --accum 2 --steps 25 --warmup 5 --rounds 2 --precision bf16 | tee $OUT/bench-base.txt
echo "== benchmark: Whisper-small size"
bench --d-model 768 --layers 12 --heads 12 --ffn 3072 --window 30 --batch 16 --accum 2 --steps 20 --warmup 5 --rounds 2 --precision bf16 | tee $OUT/bench-small.txt
