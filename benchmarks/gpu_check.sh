#!/usr/bin/env bash
# One GPU check, no network, < 5 minutes on one GPU: every lesson in smoke mode (the library picks CUDA by
# itself), then the real-path code on ViT-B-32 with random weights (benchmarks/gpu_check.py).
set -euo pipefail
export HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
time python -m fmcls_lib course --set smoke --out "${OUT:-/tmp}/gpu_smoke"
time python benchmarks/gpu_check.py
