#!/usr/bin/env bash
# On a CUDA machine: fp16/bf16 against fp32 training throughput (the rendered MLP, through the
# project's Precision) and the 8-/4-bit load footprints (the rendered loader). Without CUDA it
# says so and exits 0. Usage: bash benchmarks/gpu_check.sh [python]
set -euo pipefail
PYTHON="${1:-${PYTHON:-python}}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible; skipped."
    exit 0
fi
"$PYTHON" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
BF16=$("$PYTHON" -c "import torch; print('fp16,bf16' if torch.cuda.is_bf16_supported() else 'fp16')")
"$PYTHON" "$HERE/precision_speed.py" --device cuda --steps 200 --modes "$BF16" | tail -n 2
"$PYTHON" "$HERE/memory.py" --device cuda | tail -n 4
