#!/usr/bin/env bash
# The GPU check: about 5 minutes on one GPU. Run from the repository root after
# `make setup` (or with PY/BYZ pointing at an environment with byzance):
#   bash benchmarks/gpu_check.sh
# It runs the CUDA tests, the rules and the simulated step on CUDA against their
# floors, a short simulated ResNet-20 run on CIFAR-shaped synthetic data, and a
# 2-process robust_step over NCCL, then prints one table (also in $OUT/table.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BYZ=${BYZ:-.venv/bin/byzance}
OUT=${OUT:-${TMPDIR:-/tmp}/byzance_gpu_check}
mkdir -p "$OUT"
status() { if [ "$1" -eq 0 ]; then echo ok; else echo "FAILED ($1)"; fi; }

gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${gpu:-none found}" | tee "$OUT/gpu.txt"

"$PY" -m pytest -q -m cuda tests > "$OUT/tests.txt" 2>&1
tests=$(status $?)

"$BYZ" bench rules --device cuda --n 20 --n 100 --d 1000000 --d 10000000 --repeat 5 \
    > "$OUT/bench_rules.txt" 2>&1
rules=$(status $?)

"$BYZ" bench sim --device cuda --n 20 --repeat 5 > "$OUT/bench_sim.txt" 2>&1
sim=$(status $?)

"$PY" - "$OUT/cifar_like.npz" <<'PYEOF'
import sys
import numpy as np
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (6000, 3, 32, 32), dtype=np.uint8)
y = rng.integers(0, 10, 6000)
x[np.arange(6000), y % 3, :8, :8] = 255  # a learnable mark per class
np.savez(sys.argv[1], x=x, y=y)
PYEOF
start=$(date +%s)
"$BYZ" train --dataset npz --dataset-params "{path = \"$OUT/cifar_like.npz\"}" \
    --model resnet20 --workers 10 --byzantine 2 --aggregator median --attack alie \
    --steps 60 --eval-every 30 --batch-size 32 --lr 0.05 --device cuda \
    --out-dir "$OUT/resnet" --overwrite > "$OUT/resnet.txt" 2>&1
resnet=$(status $?)
resnet_s=$(( $(date +%s) - start ))

"$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
    benchmarks/gpu_robust_step.py > "$OUT/nccl.txt" 2>&1
nccl=$(status $?)

{
  echo "| check | result | details |"
  echo "| --- | --- | --- |"
  echo "| GPU | ${gpu:-none} | |"
  echo "| CUDA tests (pytest -m cuda) | $tests | $(tail -1 "$OUT/tests.txt") |"
  echo "| bench rules --device cuda | $rules | $OUT/bench_rules.txt |"
  echo "| bench sim --device cuda | $sim | $OUT/bench_sim.txt |"
  echo "| ResNet-20, 10 workers, 60 steps | $resnet | ${resnet_s} s; $(grep -o 'final accuracy | [0-9.]*' "$OUT/resnet/summary.md" 2>/dev/null) |"
  echo "| robust_step over NCCL, 2 processes | $nccl | $(tail -1 "$OUT/nccl.txt") |"
} | tee "$OUT/table.md"
echo
cat "$OUT/bench_rules.txt" "$OUT/bench_sim.txt"
