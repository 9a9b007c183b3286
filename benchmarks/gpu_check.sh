#!/usr/bin/env bash
# The GPU figures, on one CUDA GPU, offline, in about 5 minutes; each printed as name=value (goal):
#   bf16_vs_fp32_steps_ratio          bf16 autocast vs fp32 (TF32 off), 4 x d2048 encoder layers   goal >= 2.0
#   llama7b_4bit_vs_fp32_bytes        a 7B Llama loaded 4-bit by the project's loader, vs fp32     goal <= 0.17
#   qlora_trainer_vs_hf_tokens_ratio  QLoRA tokens/s, the project's Trainer vs transformers.Trainer goal >= 1.0
#   sft_tokens_per_s_ratio            chat SFT tokens/s, the project's recipe vs trl.SFTTrainer (bf16) goal >= 1.0
#   gpu_tests_failed                  `pytest -m gpu` in a causal-LM + vision render               goal = 0
# Without CUDA it says so and exits 0. Needs about 15 GB of free disk under $TMPDIR (the 7B model, saved once).
# Usage: bash benchmarks/gpu_check.sh [python]   (a Python with the rendered project's dependencies)
set -euo pipefail
PYTHON="${1:-${PYTHON:-python}}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible; skipped."
    exit 0
fi
"$PYTHON" - <<'EOF'
import torch
name, (major, minor) = torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
native = torch.cuda.is_bf16_supported(including_emulation=False)
print(f"gpu_check: {name}, compute capability {major}.{minor}, native bf16 {native}, torch {torch.__version__}")
EOF

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
PROJECT="$(cd "$HERE" && "$PYTHON" -c "
from pathlib import Path
from common import render
print(render(Path('$WORK'), task='both', quantization='4bit', precision='bf16', logger='csv'))
" | tail -n 1)"

for figure in bf16 memory qlora; do
    (cd "$HERE" && TMPDIR="$WORK" "$PYTHON" gpu_figures.py "$figure" --project "$PROJECT" 2>"$WORK/$figure.err" \
        | grep -v "^Loading\|^Writing" | tail -n 3) || { echo "gpu_check: $figure failed:"; tail -n 20 "$WORK/$figure.err"; }
done
(cd "$HERE" && TMPDIR="$WORK" "$PYTHON" sft_throughput.py --device cuda --precision bf16 2>"$WORK/sft.err" | tail -n 2) \
    || { echo "gpu_check: sft failed:"; tail -n 20 "$WORK/sft.err"; }

status=0
(cd "$PROJECT" && "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider >"$WORK/pytest.log" 2>&1) || status=$?
summary="$(tail -n 1 "$WORK/pytest.log")"
failed="$(grep -o "[0-9]* failed" <<<"$summary" | grep -o "[0-9]*" || true)"
errors="$(grep -o "[0-9]* error" <<<"$summary" | grep -o "[0-9]*" || true)"
echo "pytest -m gpu: $summary"
if [ "$status" -ne 0 ] && [ -z "$failed$errors" ]; then
    tail -n 20 "$WORK/pytest.log"
    failed=1
fi
echo "gpu_tests_failed=$(( ${failed:-0} + ${errors:-0} )) (goal = 0)"
