#!/usr/bin/env bash
# One GPU check, no network (the GPU box has none either): the real-path lane — every lesson in smoke mode on the
# same-architecture stand-ins (open_clip ViT at 224 px, CIFAR-10 -> STL-10, sd-turbo's pipeline classes, timm DINO;
# random weights) on CUDA and on the CPU, with each lesson's time and the CPU/GPU ratio; then the embedded smoke
# course on CUDA; then the real-size code (ViT-B-32, random weights) timed on both (benchmarks/gpu_check.py).
# Runs from a plain copy of the repository: python3, no editable install needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python3 -c "import fmcls_lib, open_clip, timm, diffusers, transformers, papermill, ipykernel" 2>/dev/null || python3 -m pip install -q . || python3 -m pip install -q -e .
time python3 benchmarks/real_path_lane.py --out "$OUT/real_path_lane"
time python3 -m fmcls_lib course --set smoke --out "$OUT/gpu_smoke"
time python3 benchmarks/gpu_check.py
