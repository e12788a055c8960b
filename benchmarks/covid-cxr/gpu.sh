#!/usr/bin/env bash
# On the device machine (one GPU), from the repository root, after the weights were copied to $WEIGHTS by an
# earlier call (README.md, "On a GPU"): the baselines of benchmarks/plans/covid-cxr-gpu.yaml at 518 px, bf16,
# 10 epochs, one seed. Runs start only within BUDGET_S seconds, so the call ends inside the device's 10 minutes.
# Results: $OUT/results-gpu.tgz (the plan's records, tables and figures) and $OUT/gpu.log.
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/covid-gpu-out}
WEIGHTS=${WEIGHTS:-/root/fptplus/dinov2_vits14_fp16.safetensors}
mkdir -p "$OUT"
{
  nvidia-smi -L
  python3 -c "import torch, timm, peft, accelerate; print('torch', torch.__version__, 'timm', timm.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
  python3 -m fptplus.cli bench plan benchmarks/plans/covid-cxr-gpu.yaml --data .gpu/data/covid-cxr/labels.csv \
    --weights "$WEIGHTS" --runs /tmp/covid-cxr-gpu --results /tmp/results-gpu --budget-s "${BUDGET_S:-360}"
} 2>&1 | tee "$OUT/gpu.log"
rc=${PIPESTATUS[0]}
tar czf "$OUT/results-gpu.tgz" -C /tmp results-gpu 2>/dev/null || true
exit "$rc"
