#!/usr/bin/env bash
# Here (no GPU needed): put what benchmarks/covid-cxr/gpu.sh needs into .gpu/ (git-ignored), in two parts that
# each fit the device tool's 64 MiB working-tree limit: .gpu/weights (DINOv2 ViT-S/14 as fp16, 43 MB; it loads
# into the fp32 model) and .gpu/data (the covid-cxr images and labels.csv, 41 MB). See README.md, "On a GPU".
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared}
mkdir -p .gpu/weights .gpu/data
.venv/bin/python - "$SHARED/weights/dinov2_vits14.safetensors" .gpu/weights/dinov2_vits14_fp16.safetensors <<'PY'
import sys

from safetensors.torch import load_file, save_file

state = load_file(sys.argv[1])
save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, sys.argv[2])
PY
rm -rf .gpu/data/covid-cxr
mkdir -p .gpu/data/covid-cxr
cp -r "$SHARED/data/covid-cxr/labels.csv" "$SHARED/data/covid-cxr/images" .gpu/data/covid-cxr/
du -sh .gpu/weights .gpu/data
