#!/usr/bin/env bash
# The GPU check, on one CUDA GPU, offline, within 8 minutes on an H100; each figure printed as name=value (goal):
#   bf16_vs_fp32_steps_ratio          bf16 autocast vs fp32 (TF32 off), 4 x d2048 encoder layers   goal >= 2.0
#   bf16_vs_fp32_tf32_steps_ratio     bf16 vs fp32 with TF32 on (precision.allow_tf32=true)         reported
#   llama7b_4bit_vs_fp32_bytes        a 7B Llama loaded 4-bit by the project's loader, vs fp32     goal <= 0.17
#   llama7b_4bit_*allocated*/peak     the same from the CUDA allocator (max_memory_allocated)      reported
#   qlora_trainer_vs_hf_tokens_ratio  QLoRA tokens/s, the project's Trainer vs transformers.Trainer goal >= 1.0
#                                     (interleaved repeats, medians)
#   spill_*_quantized_layers_off_gpu  4-bit + device_map=auto past max_memory: where each layer is  dict: goal = 0
#   sft_tokens_per_s_ratio            chat SFT tokens/s, the project's recipe vs trl.SFTTrainer (bf16) goal >= 1.0
#   gpu_tests_failed                  `pytest -m gpu` in a causal-LM + vision render               goal = 0
#   make_test_failed                  `make test` in that render, on this GPU machine               goal = 0
# The timed figures run alone first; the rest run beside `make test`. Each step has its own timeout,
# and all of them share GPU_CHECK_BUDGET_S (default 470 s). Logs (pytest's included) are kept in
# GPU_CHECK_LOGS (default ./gpu_check_logs). Without CUDA it says so and exits 0.
# Missing packages (cookiecutter, hydra, transformers, peft, bitsandbytes, pytest...) are installed into a
# fresh venv that sees this Python's packages (its CUDA torch); offline, point pip at wheels with
# PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder>. Needs about 15 GB of free disk under $TMPDIR (the 7B model).
# Usage: bash benchmarks/gpu_check.sh [python]
set -uo pipefail
PYTHON="${1:-${PYTHON:-python3}}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUDGET="${GPU_CHECK_BUDGET_S:-470}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1

left() { echo $(( BUDGET - SECONDS )); }
# limit WANTED: the smaller of WANTED and what is left of the budget (at least 1: timeout 0 would never stop)
limit() { local l; l=$(left); (( l < $1 )) && echo $(( l > 1 ? l : 1 )) || echo "$1"; }

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible; skipped."
    exit 0
fi

LOGS="$(mkdir -p "${GPU_CHECK_LOGS:-gpu_check_logs}" && cd "${GPU_CHECK_LOGS:-gpu_check_logs}" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
NEEDED="cookiecutter hydra omegaconf transformers peft accelerate bitsandbytes safetensors tokenizers timm torchvision datasets trl sklearn matplotlib pytest submitit optuna"
missing="$("$PYTHON" - $NEEDED <<'EOF'
import importlib.util, sys
print(" ".join(name for name in sys.argv[1:] if importlib.util.find_spec(name) is None))
EOF
)"
if [ -n "$missing" ]; then
    echo "gpu_check: missing $missing: installing into a fresh venv ($WORK/venv) over $PYTHON's packages"
    "$PYTHON" -m venv --system-site-packages "$WORK/venv" && PYTHON="$WORK/venv/bin/python"
    timeout "$(limit 150)" "$PYTHON" -m pip install -q cookiecutter pytest pytest-xdist trl >"$LOGS/pip.log" 2>&1 \
        || { echo "gpu_check: pip install failed:"; tail -n 5 "$LOGS/pip.log"; }
fi

"$PYTHON" - <<'EOF'
import torch
name, (major, minor) = torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
native = torch.cuda.is_bf16_supported(including_emulation=False)
print(f"gpu_check: {name}, compute capability {major}.{minor}, native bf16 {native}, torch {torch.__version__}")
EOF

PROJECT="$(cd "$HERE" && "$PYTHON" -c "
from pathlib import Path
from common import render
print(render(Path('$WORK'), task='both', quantization='4bit', precision='bf16', logger='csv'))
" 2>"$LOGS/render.log" | tail -n 1)"
if [ ! -d "$PROJECT" ]; then
    echo "gpu_check: rendering failed:"; tail -n 20 "$LOGS/render.log"; exit 1
fi
if [ -n "$missing" ]; then  # the render's own dependencies (torch is already there)
    timeout "$(limit 150)" "$PYTHON" -m pip install -q -e "$PROJECT" >>"$LOGS/pip.log" 2>&1 \
        || { echo "gpu_check: pip install of the render failed:"; tail -n 5 "$LOGS/pip.log"; }
fi

figure() {  # figure NAME SECONDS: one figure under its own timeout, its figures printed, its log kept
    local name=$1 seconds status=0
    seconds=$(limit "$2")
    (cd "$HERE" && TMPDIR="$WORK" timeout --kill-after=10 "$seconds" "$PYTHON" gpu_figures.py "$name" \
        --project "$PROJECT" >"$LOGS/$name.log" 2>&1) || status=$?
    grep -E "^[a-z0-9_]+=|tokens/s|steps/s|GB|layers|device" "$LOGS/$name.log" | grep -v "^Loading\|^Writing" | tail -n 14
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "gpu_check: $name timed out after ${seconds} s (log: $LOGS/$name.log)"
    elif [ "$status" -ne 0 ]; then
        echo "gpu_check: $name failed ($status):"; tail -n 15 "$LOGS/$name.log"
    fi
}

failures() {  # failures LOG: failed + errors of a pytest log's summary line
    local summary failed errors
    summary="$(grep -E "(passed|failed|error|skipped|no tests ran)" "$1" | tail -n 1)"
    failed="$(grep -o "[0-9]* failed" <<<"$summary" | grep -o "[0-9]*" || true)"
    errors="$(grep -o "[0-9]* error" <<<"$summary" | grep -o "[0-9]*" || true)"
    echo $(( ${failed:-0} + ${errors:-0} ))
}

verdict() {  # verdict TITLE FIGURE LOG STATUS: pytest's summary line and FIGURE=<failed + errors> (goal = 0)
    local failed
    echo "$1: $(grep -E "(passed|failed|error|no tests ran)" "$3" | tail -n 1)"
    failed=$(failures "$3")
    if [ "$4" -eq 124 ] || [ "$4" -eq 137 ]; then
        echo "gpu_check: $1 ran out of time (budget ${BUDGET} s): see $3"; failed=1
    elif [ "$4" -ne 0 ] && [ "$failed" -eq 0 ]; then
        tail -n 20 "$3"; failed=1
    fi
    echo "$2=$failed (goal = 0)"
}

# The timed figures, alone on the GPU.
figure bf16 75
figure qlora 150
status=0  # chat SFT tokens/s against trl.SFTTrainer
(cd "$HERE" && TMPDIR="$WORK" timeout --kill-after=10 "$(limit 90)" "$PYTHON" sft_throughput.py --device cuda \
    --precision bf16 >"$LOGS/sft.log" 2>&1) || status=$?
grep -E "^sft_" "$LOGS/sft.log" || { echo "gpu_check: sft failed ($status):"; tail -n 15 "$LOGS/sft.log"; }
GPUS="$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")"
if [ "$GPUS" -ge 2 ]; then  # FSDP against DDP on every GPU (NCCL): per-rank bytes and step time
    (cd "$HERE" && TMPDIR="$WORK" timeout --kill-after=10 "$(limit 120)" "$PYTHON" fsdp.py --nproc "$GPUS" \
        --hidden 1024 --layers 8 >"$LOGS/fsdp.log" 2>&1) || true
    grep -E "^fsdp_|step time|ratio=" "$LOGS/fsdp.log" || { echo "gpu_check: fsdp failed:"; tail -n 15 "$LOGS/fsdp.log"; }
else
    echo "gpu_check: fsdp needs 2 GPUs or more (found $GPUS): benchmarks/fsdp.py --nproc 2 measures it on gloo"
fi

# `make test` (every test, GPU ones included) beside the untimed figures.
XDIST=""
"$PYTHON" -c "import xdist" 2>/dev/null && XDIST="-n 8"
(cd "$PROJECT" && timeout --kill-after=10 "$(limit 600)" make test PYTHON="$PYTHON" \
    ARGS="-q -p no:cacheprovider $XDIST" >"$LOGS/make_test.log" 2>&1; echo $? >"$LOGS/make_test.status") &
MAKE_TEST=$!

figure memory 130
figure spill 60
status=0
(cd "$PROJECT" && timeout --kill-after=10 "$(limit 150)" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider \
    >"$LOGS/pytest_gpu.log" 2>&1) || status=$?
verdict "pytest -m gpu" gpu_tests_failed "$LOGS/pytest_gpu.log" "$status"

wait "$MAKE_TEST"
verdict "make test" make_test_failed "$LOGS/make_test.log" "$(cat "$LOGS/make_test.status" 2>/dev/null || echo 1)"
echo "gpu_check: ${SECONDS} s; logs in $LOGS"
