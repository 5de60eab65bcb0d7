#!/usr/bin/env bash
# Every GPU figure of issue 10 in one prepared run (< 8 minutes on an H100-class GPU):
#   gpu_features_per_min_vit_b16_block11 / _block6, mfu_block11   (benchmarks/optimizer.py)
#   gpu_exemplar_images_per_s                                      (benchmarks/topk.py)
# Usage: benchmarks/gpu.sh [optimizer|exemplars|all]   (default all; exit 2 without CUDA)
#        benchmarks/gpu.sh --smoke [part]              (tiny sizes, GPU code paths on the CPU)
# Environment:
#   PYTHON        the interpreter (default: .venv/bin/python if present, else python3)
#   VITVIZ_DATA   the data root holding imagenet-val-1300 (default: ../shared/data via vitviz)
#   GPU_K         features per optimizer batch (default 32, x 8 copies = batch 256)
#   GPU_COMPILE=1 also time optimize_features(compile=True) (adds compile time)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
PART="${1:-all}"
case "$PART" in optimizer|exemplars|all) ;; *)
  echo "gpu.sh: unknown part '$PART' (optimizer|exemplars|all)" >&2; exit 2 ;; esac
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -n "${VITVIZ_DATA:-}" ]; then export VITVIZ_DATA; fi
run_opt()  { timeout "$1" "$PY" benchmarks/optimizer.py --gpu-only "${@:2}"; }
run_topk() { timeout "$1" "$PY" benchmarks/topk.py "${@:2}"; }
if [ "$SMOKE" = 1 ]; then
  if [ "$PART" != exemplars ]; then run_opt 600 --smoke; fi
  if [ "$PART" != optimizer ]; then run_topk 600 --smoke; fi
  exit 0
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu.sh: no CUDA device here (torch.cuda.is_available() is False): nothing measured" >&2
  exit 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"# {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
date -u +"# start %H:%M:%S UTC"
# Budgets: optimizer 2 blocks x (warm-up at K + 2 timed runs, 50 timed steps) at K=32 x n=8,
# about 2 minutes on an H100; exemplar search: ViT-B/16, 8 passes over imagenet-val-1300
# (10,400 JPEGs), 3 repeats per arm, about 3 minutes, decoding-bound on 16 CPUs.
if [ "$PART" != exemplars ]; then
  run_opt 240 --gpu-features "${GPU_K:-32}" --gpu-steps 50 --gpu-warmup 5
  if [ "${GPU_COMPILE:-0}" = 1 ]; then
    run_opt 240 --gpu-features "${GPU_K:-32}" --gpu-steps 50 --gpu-warmup 5 --gpu-compile --gpu-layers 11
  fi
fi
if [ "$PART" != optimizer ]; then
  run_topk 220 --device cuda --repeats 3
fi
date -u +"# end %H:%M:%S UTC"
