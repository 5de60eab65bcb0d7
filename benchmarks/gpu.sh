#!/usr/bin/env bash
# Every GPU figure of issue 10 in one run (< 8 minutes on an H100-class GPU):
#   gpu_features_per_min_vit_b16_block11 / _block6, mfu_block11   (benchmarks/optimizer.py)
#   gpu_exemplar_images_per_s                                      (benchmarks/topk.py)
# Usage: benchmarks/gpu.sh            (fails at once, exit 2, without CUDA)
#        benchmarks/gpu.sh --smoke    (tiny sizes, GPU code paths run on the CPU: checks the script)
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if [ "${1:-}" = "--smoke" ]; then
  timeout 600 "$PY" benchmarks/optimizer.py --gpu-only --smoke
  timeout 600 "$PY" benchmarks/topk.py --smoke
  exit 0
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu.sh: no CUDA device here (torch.cuda.is_available() is False): nothing measured" >&2
  exit 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"# {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
# Budgets: optimizer 2 blocks x (warm-up + 2 timed runs) at K=32 x n=8, then exemplar search
# (ViT-B/16, 8 passes over imagenet-val-1300 = 10,400 JPEGs, 3 repeats per arm).
timeout 300 "$PY" benchmarks/optimizer.py --gpu-only --gpu-features 32 --gpu-steps 50
timeout 180 "$PY" benchmarks/topk.py --device cuda --repeats 3
