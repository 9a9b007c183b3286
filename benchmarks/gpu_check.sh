#!/usr/bin/env bash
# The GPU check, on one CUDA GPU with no network, unattended; each figure printed as name=value (goal):
#   bf16_vs_fp32_steps_ratio             bf16 autocast vs fp32 (TF32 off), 4 x d2048 encoder layers   goal >= 2.0
#   bf16_vs_fp32_tf32_steps_ratio        bf16 vs fp32 with TF32 on (precision.allow_tf32=true)         reported
#   fp32_tf32_vs_fp32_steps_ratio        what TF32 alone gives                                          reported
#   qlora_trainer_vs_hf_tokens_ratio     QLoRA tokens/s, the project's Trainer vs transformers.Trainer goal >= 1.0
#   sft_tokens_per_s_ratio               chat SFT tokens/s, the recipe vs trl.SFTTrainer (bf16), gradient
#                                        checkpointing off on both sides                                goal >= 1.0
#   sft_tokens_per_s_ratio_checkpointing the same with gradient checkpointing on on both sides         reported
#   llama7b_4bit_vs_fp32_bytes           a 7B Llama loaded 4-bit by the project's loader, vs fp32     goal <= 0.17
#   llama7b_4bit_*allocated*/peak        the same from the CUDA allocator (max_memory_allocated)      reported
#   spill_*_quantized_layers_off_gpu     4-bit + device_map=auto past max_memory: where each layer is  dict: goal = 0
#   gpu_tests_failed                     `pytest -m gpu` in a causal-LM + vision render, alone          goal = 0
#   make_test_failed                     the render's other tests (`make test`, -m "not gpu")          goal = 0
#
# It runs the python3 it finds (PYTHON=... or the first argument picks another) with its own torch. What
# that Python lacks comes as wheels from the folder GPU_CHECK_WHEELS (default .whl beside benchmarks/,
# made by `make gpu-wheels` on a machine with a network), installed offline with
# `pip install --no-index --no-deps --target` into a folder put on PYTHONPATH.
#
# Steps, in order, each under its own cap (seconds; GPU_CHECK_CAP_<STEP>=N changes one):
#   packages 30   install the wheels, import everything the check uses
#   render   15   render the template (task=both, 4bit, bf16, csv)
#   bf16 40, qlora 100, sft 110   the timed figures, alone on the GPU
#   pytest_gpu 50                 the render's GPU tests, alone
#   memory 95, spill 40           untimed figures, beside make_test (its cap: theirs together)
# The caps add up to the budget, GPU_CHECK_BUDGET_S (default 480 s: with a machine's start, 10 minutes
# of a 15-minute lease, which leaves time to rerun a step); the check refuses a plan whose caps exceed it. A step that reaches its cap is
# reported as timed out, its figures as NAME=timeout. --only STEP,STEP runs some steps again (packages
# and render always run). --dry-run runs on a machine without CUDA everything but the GPU steps (the
# template's tests/test_gpu_check.py does so, in a venv made like the GPU image).
# Logs (pytest's included) are kept in GPU_CHECK_LOGS (default ./gpu_check_logs). Needs about 15 GB of
# free disk under $TMPDIR (the 7B model). Exit status: 0 when every figure it ran came.
# Usage: bash benchmarks/gpu_check.sh [--dry-run] [--only STEP,...] [python]
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --only) ONLY="${2:-}"; shift ;;
        -h|--help) sed -n '2,/^# Usage/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) PYTHON="$1" ;;
    esac
    shift
done
BUDGET="${GPU_CHECK_BUDGET_S:-480}"
WHEELS="${GPU_CHECK_WHEELS:-$HERE/../.whl}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1

STEPS="packages render bf16 qlora sft pytest_gpu memory spill"
GPU_STEPS="bf16 qlora sft memory spill"
declare -A CAP=([packages]=30 [render]=15 [bf16]=40 [qlora]=100 [sft]=110 [pytest_gpu]=50 [memory]=95 [spill]=40)
declare -A FIGURES=(
    [bf16]="bf16_vs_fp32_steps_ratio bf16_vs_fp32_tf32_steps_ratio fp32_tf32_vs_fp32_steps_ratio"
    [qlora]="qlora_trainer_vs_hf_tokens_ratio"
    [sft]="sft_tokens_per_s_ratio sft_tokens_per_s_ratio_checkpointing"
    [memory]="llama7b_4bit_vs_fp32_bytes llama7b_4bit_allocated_vs_fp32_bytes llama7b_4bit_load_peak_vs_fp32_bytes"
    [spill]="spill_auto_quantized_layers_off_gpu spill_dict_quantized_layers_off_gpu"
)
for step in $STEPS; do
    override="GPU_CHECK_CAP_${step^^}"
    CAP[$step]="${!override:-${CAP[$step]}}"
done
CAP[make_test]="${GPU_CHECK_CAP_MAKE_TEST:-$(( CAP[memory] + CAP[spill] ))}"

wanted() {  # wanted STEP: whether this run includes STEP
    [ "$1" = packages ] || [ "$1" = render ] || [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]
}
gpu_step() { [[ " $GPU_STEPS " == *" $1 "* ]]; }

planned=0
for step in $STEPS; do wanted "$step" && planned=$(( planned + CAP[$step] )); done
beside=0  # make_test runs beside memory and spill: only what it takes beyond them counts
for step in memory spill; do wanted "$step" && beside=$(( beside + CAP[$step] )); done
wanted make_test && (( CAP[make_test] > beside )) && planned=$(( planned + CAP[make_test] - beside ))
if (( planned > BUDGET )); then
    echo "gpu_check: the steps' caps add up to ${planned} s, over the ${BUDGET} s budget: lower GPU_CHECK_CAP_<STEP> or raise GPU_CHECK_BUDGET_S"
    exit 2
fi
for step in ${ONLY//,/ }; do
    if [[ " $STEPS make_test " != *" $step "* ]]; then
        echo "gpu_check: no step named '$step'; the steps: $STEPS make_test"; exit 2
    fi
done

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PYTHON has no torch: run it with the Python that holds the GPU's PyTorch (PYTHON=...)"; exit 2
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    if [ "$DRY_RUN" = 0 ]; then
        echo "gpu_check: no CUDA device visible; skipped (--dry-run runs the steps that need no GPU)."
        exit 0
    fi
fi

LOGS="$(mkdir -p "${GPU_CHECK_LOGS:-gpu_check_logs}" && cd "${GPU_CHECK_LOGS:-gpu_check_logs}" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
MISSING_FIGURES=""
plan="$(for s in $STEPS; do wanted "$s" && printf '%s=%ss ' "$s" "${CAP[$s]}"; done)"
wanted make_test && plan+="make_test=${CAP[make_test]}s (beside memory and spill) "
echo "gpu_check: plan ${plan}(${planned} s of the ${BUDGET} s budget)"

run_capped() {  # run_capped STEP LOG COMMAND...: COMMAND under STEP's cap; its status, 124 on a timeout
    local step=$1 log=$2 status=0
    shift 2
    timeout --kill-after=5 "${CAP[$step]}" "$@" >"$log" 2>&1 || status=$?
    (( status == 137 )) && status=124
    return "$status"
}

report() {  # report STEP LOG STATUS: each of STEP's figures from LOG, or why it did not come
    local step=$1 log=$2 status=$3 name line
    for name in ${FIGURES[$step]:-}; do
        line="$(grep -E "^${name}=" "$log" | tail -n 1)"
        if [ -n "$line" ]; then
            echo "$line"
        elif (( status == 124 )); then
            echo "${name}=timeout (the ${step} step reached its ${CAP[$step]} s cap; log: $log)"
            MISSING_FIGURES+=" $name"
        else
            echo "${name}=failed (the ${step} step ended with status ${status}; log: $log)"
            MISSING_FIGURES+=" $name"
        fi
    done
    if (( status == 124 )); then
        echo "gpu_check: ${step} timed out at its ${CAP[$step]} s cap"
    elif (( status != 0 )); then
        echo "gpu_check: ${step} failed (${status}):"; tail -n 15 "$log"
    fi
}

failures() {  # failures LOG: failed + errors in a pytest log's summary line
    local summary failed errors
    summary="$(grep -E "(passed|failed|error|skipped|deselected|no tests ran|collected)" "$1" | tail -n 1)"
    failed="$(grep -oE "[0-9]+ failed" <<<"$summary" | grep -oE "[0-9]+" || true)"
    errors="$(grep -oE "[0-9]+ error" <<<"$summary" | grep -oE "[0-9]+" || true)"
    echo $(( ${failed:-0} + ${errors:-0} ))
}

verdict() {  # verdict STEP FIGURE LOG STATUS: pytest's summary line and FIGURE=<failed + errors> (goal = 0)
    local step=$1 figure=$2 log=$3 status=$4 failed
    echo "${step}: $(grep -E "(passed|failed|error|skipped|deselected|no tests ran|collected)" "$log" | tail -n 1)"
    if (( status == 124 )); then
        echo "gpu_check: ${step} timed out at its ${CAP[$step]} s cap; log: $log"
        echo "${figure}=timeout (goal = 0)"
        MISSING_FIGURES+=" $figure"
        return
    fi
    failed=$(failures "$log")
    # pytest's 5 is "no tests collected"; any other failure without a count is shown and counted once
    if (( status != 0 && status != 5 && failed == 0 )); then
        tail -n 20 "$log"; failed=1
    fi
    echo "${figure}=${failed} (goal = 0)"
}

# ---------------------------------------------------------------- packages: the wheels, then every import
SITE="$WORK/site-packages"  # so named: the render's install test hands site-packages folders to its venv
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
wheels=("$WHEELS"/*.whl)
[ -e "${wheels[0]}" ] || wheels=()
echo "gpu_check: packages: ${#wheels[@]} wheels from $WHEELS$([ ${#wheels[@]} = 0 ] && echo ' (make gpu-wheels makes them)')"
status=0
# shellcheck disable=SC2016  # the inner shell expands its own arguments
run_capped packages "$LOGS/packages.log" bash -c '
    python=$1 site=$2 imports=$3; shift 3
    if [ $# -gt 0 ]; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --target "$site" "$@" || exit 3
    fi
    "$python" "$imports"' _ "$PYTHON" "$SITE" "$HERE/gpu/imports.py" "${wheels[@]}" || status=$?
grep -E "^(imports|torch|bitsandbytes)" "$LOGS/packages.log"
if (( status != 0 )); then
    report packages "$LOGS/packages.log" "$status"
    echo "gpu_check: the packages are not all there: nothing else can run (make gpu-wheels, and carry .whl)"
    exit 1
fi

# ---------------------------------------------------------------- render
status=0
# shellcheck disable=SC2016  # the inner shell expands its own arguments
run_capped render "$LOGS/render.log" bash -c 'cd "$1" && "$2" -c "
from pathlib import Path
from common import render
print(render(Path(\"$3\"), task=\"both\", quantization=\"4bit\", precision=\"bf16\", logger=\"csv\"))
"' _ "$HERE" "$PYTHON" "$WORK" || status=$?
PROJECT="$(tail -n 1 "$LOGS/render.log")"
if (( status != 0 )) || [ ! -d "$PROJECT" ]; then
    report render "$LOGS/render.log" "$status"
    echo "gpu_check: rendering failed: nothing else can run"; tail -n 20 "$LOGS/render.log"
    exit 1
fi
echo "gpu_check: rendered $PROJECT"

figure() {  # figure STEP COMMAND...: a figure step under its cap, in benchmarks/, its figures reported
    local step=$1 status=0
    shift
    wanted "$step" || return 0
    if [ "$DRY_RUN" = 1 ] && gpu_step "$step"; then
        echo "gpu_check: ${step} skipped (dry run: it needs the GPU)"
        return 0
    fi
    (cd "$HERE" && TMPDIR="$WORK" run_capped "$step" "$LOGS/$step.log" "$@") || status=$?
    grep -E "tokens/s|steps/s|GB|layers|device|per pair" "$LOGS/$step.log" | grep -vE "^(Loading|Writing)" | tail -n 12
    report "$step" "$LOGS/$step.log" "$status"
}

tests() {  # tests STEP FIGURE ARGS: the render's pytest (through make test) under STEP's cap
    local step=$1 figure=$2 args=$3 status=0
    (cd "$PROJECT" && run_capped "$step" "$LOGS/$step.log" make test PYTHON="$PYTHON" ARGS="$args") || status=$?
    verdict "$step" "$figure" "$LOGS/$step.log" "$status"
}

# ---------------------------------------------------------------- the timed figures, alone on the GPU
figure bf16 "$PYTHON" gpu_figures.py bf16 --project "$PROJECT"
figure qlora "$PYTHON" gpu_figures.py qlora --project "$PROJECT"
figure sft "$PYTHON" sft_throughput.py --device cuda --precision bf16

# ---------------------------------------------------------------- the GPU tests, alone
XDIST=""
"$PYTHON" -c "import xdist" 2>/dev/null && XDIST="-n 8"
wanted pytest_gpu && tests pytest_gpu gpu_tests_failed "-q -p no:cacheprovider -m gpu"

# ---------------------------------------------------------------- the other tests, beside the untimed figures
MAKE_TEST=""
if wanted make_test; then
    tests make_test make_test_failed "${GPU_CHECK_TEST_ARGS:--q -p no:cacheprovider -m \"not gpu\" $XDIST}" \
        >"$LOGS/make_test.verdict" 2>&1 &
    MAKE_TEST=$!
fi
figure memory "$PYTHON" gpu_figures.py memory --project "$PROJECT"
figure spill "$PYTHON" gpu_figures.py spill --project "$PROJECT"
if [ -n "$MAKE_TEST" ]; then
    wait "$MAKE_TEST"
    cat "$LOGS/make_test.verdict"
    grep -q "^make_test_failed=timeout" "$LOGS/make_test.verdict" && MISSING_FIGURES+=" make_test_failed"
fi

echo "gpu_check: ${SECONDS} s; logs in $LOGS"
if [ -n "$MISSING_FIGURES" ]; then
    echo "gpu_check: figures that did not come:${MISSING_FIGURES}"
    exit 1
fi
