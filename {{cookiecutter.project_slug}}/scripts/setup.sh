#!/usr/bin/env bash
# Make (or update) this project's environment in one command, on Linux, macOS or Git Bash.
#
#   bash scripts/setup.sh           # conda env or .venv; a CUDA PyTorch where the platform has one
#                                   # (with an NVIDIA GPU: the build for its compute capability, see below)
#   bash scripts/setup.sh --cpu     # a CPU-only PyTorch (smaller; for laptops and CI)
#   bash scripts/setup.sh --pip     # a .venv with pip even if conda is the default (--conda: the reverse)
#   bash scripts/setup.sh --uv      # uv sync: .venv from pyproject.toml and uv.lock (written on the first run)
#   bash scripts/setup.sh -- ARGS   # uv mode: pass ARGS on to uv sync, e.g. -- --extra quant
#
# Running it again updates the environment in place; nothing is created twice.
# Environment variables:
#   CONDA_EXE   the conda executable (set by `conda activate`; searched for otherwise)
#   PYTHON      the interpreter a new .venv is made with (default: python{{ cookiecutter.python_version }}, then python3)
#   VENV_DIR    where the venv goes (default: .venv)
#   TORCH_SPEC  pip arguments for PyTorch in venv mode, e.g. "torch==2.5.1 --index-url <url>"
#   UV          the uv executable (default: uv on PATH); with uv, --cpu routes torch to the
#               pytorch-cpu index in pyproject.toml's [tool.uv.sources], and uv.lock follows
# With an NVIDIA GPU (nvidia-smi) and neither --cpu nor TORCH_SPEC, pip and uv take PyTorch from the
# CUDA build scripts/torch_build.py picks from the GPU's compute capability (cu128 for RTX 50-series
# and GPUs back to Turing, cu126 for older ones); at the end one operation runs on each GPU.
set -euo pipefail

ENV_MANAGER="${ENV_MANAGER:-{{ cookiecutter.env_manager }}}"
ENV_NAME="{{ cookiecutter.project_slug }}"
PACKAGE="{{ cookiecutter.package_name }}"
PYTHON_VERSION="{{ cookiecutter.python_version }}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
TORCH_INDEX="https://download.pytorch.org/whl"
CPU=0
UV_ARGS=()

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --cpu) CPU=1 ;;
        --pip | --venv) ENV_MANAGER=pip ;;
        --conda) ENV_MANAGER=conda ;;
        --uv) ENV_MANAGER=uv ;;
        --) shift; UV_ARGS=("$@"); break ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }
fail() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

torch_build() {
    # The CUDA build (cu128, cu126) for this PC's NVIDIA GPUs, run with the Python given; nothing without one.
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    local lines
    lines="$("$@" scripts/torch_build.py index)" || fail "scripts/torch_build.py index failed; see above."
    printf '%s\n' "$lines" | sed -n '2,$p' | while IFS= read -r warning; do printf 'setup.sh: warning: %s\n' "$warning" >&2; done
    local build="${lines%%$'\n'*}"
    [ "$build" = none ] || { say "NVIDIA GPU: the $build build of PyTorch" >&2; echo "$build"; }
}

find_conda() {
    # The conda executable, never the shell function `conda activate` defines.
    if [ -n "${CONDA_EXE:-}" ] && [ -x "$CONDA_EXE" ]; then
        echo "$CONDA_EXE"; return 0
    fi
    local candidate
    for candidate in "$(command -v conda 2>/dev/null || true)" \
        "$HOME/miniforge3/bin/conda" "$HOME/miniconda3/bin/conda" "$HOME/anaconda3/bin/conda" \
        /opt/conda/bin/conda /opt/miniforge3/bin/conda /opt/miniconda3/bin/conda; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

setup_conda() {
    local conda
    conda="$(find_conda)" || fail "conda not found: install Miniforge (https://conda-forge.org/download) or rerun with --pip."
    say "conda: $conda"
    if "$conda" env list | awk '{print $1}' | grep -qx "$ENV_NAME"; then
        say "updating conda env '$ENV_NAME' from environment.yml"
        "$conda" env update --name "$ENV_NAME" --file environment.yml --prune
    else
        say "creating conda env '$ENV_NAME' (python $PYTHON_VERSION) from environment.yml"
        "$conda" env create --name "$ENV_NAME" --file environment.yml
    fi
    if [ "$CPU" = 1 ]; then
        say "switching to a CPU-only PyTorch build"
        "$conda" install --yes --name "$ENV_NAME" --channel conda-forge "pytorch=*=cpu*"
    fi
    RUN=("$conda" run --no-capture-output --name "$ENV_NAME" python)
    ACTIVATE="conda activate $ENV_NAME"
}

venv_python() {
    if [ -x "$VENV_DIR/bin/python" ]; then
        echo "$VENV_DIR/bin/python"
    else
        echo "$VENV_DIR/Scripts/python.exe"  # Git Bash on Windows
    fi
}

setup_venv() {
    VENV_DIR="${VENV_DIR:-.venv}"
    local python
    python="$(venv_python)"
    if [ -x "$python" ]; then
        say "reusing $VENV_DIR"
    else
        local base="${PYTHON:-}"
        if [ -z "$base" ]; then
            base="$(command -v "python$PYTHON_VERSION" || command -v python3 || command -v python || true)"
        fi
        [ -n "$base" ] || fail "no Python found: install Python $PYTHON_VERSION or set PYTHON=/path/to/python."
        say "creating $VENV_DIR with $base"
        "$base" -m venv "$VENV_DIR"
        python="$(venv_python)"
    fi
    "$python" -m pip install --quiet --upgrade pip
    local torch_spec="${TORCH_SPEC:-}" build
    if [ -z "$torch_spec" ] && [ "$CPU" = 1 ]; then
        torch_spec="torch torchvision --index-url $CPU_INDEX"
    elif [ -z "$torch_spec" ]; then
        build="$(torch_build "$python")"
        [ -z "$build" ] || torch_spec="torch torchvision --index-url $TORCH_INDEX/$build"
    fi
    if [ -n "$torch_spec" ]; then
        say "installing PyTorch: $torch_spec"
        # Word splitting is intended: TORCH_SPEC holds several pip arguments.
        # shellcheck disable=SC2086
        "$python" -m pip install --quiet $torch_spec
    fi
    say "installing $ENV_NAME with its dev tools"
    "$python" -m pip install --quiet {{ cookiecutter.__dev_install }}
    RUN=("$python")
    ACTIVATE=". $VENV_DIR/bin/activate"
}

find_uv() {
    local candidate
    for candidate in "${UV:-}" "$(command -v uv 2>/dev/null || true)" "$HOME/.local/bin/uv" "$HOME/.cargo/bin/uv"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

route_torch() {
    # Uncomment the torch lines of [tool.uv.sources], routed to index $1; uv sync then relocks with that build.
    # --if-untouched: only while they are still commented out as shipped (the user's own choice stays).
    local index="$1" line='(torch|torchvision) = \[\{ index = "pytorch-cpu" \}\]'
    if grep -Eq "^# *$line" pyproject.toml; then
        say "routing torch to the $index index ([tool.uv.sources] in pyproject.toml)"
        sed -E "s/^# *(torch|torchvision) = \[\{ index = \"pytorch-cpu\" \}\]/\1 = [{ index = \"$index\" }]/" \
            pyproject.toml > pyproject.toml.tmp
        mv pyproject.toml.tmp pyproject.toml
    elif [ "${2:-}" != --if-untouched ] && ! grep -Eq "^(torch|torchvision) = \[\{ index = \"$index\" \}\]" pyproject.toml; then
        fail "pyproject.toml's [tool.uv.sources] routes torch elsewhere; route it to the $index index there yourself."
    fi
}

setup_uv() {
    local uv
    uv="$(find_uv)" || fail "uv not found: install it (https://docs.astral.sh/uv/getting-started/installation/, or pip install uv) or rerun with --pip."
    say "uv: $uv ($("$uv" --version))"
    if [ -n "${VENV_DIR:-}" ]; then
        export UV_PROJECT_ENVIRONMENT="$VENV_DIR"
    fi
    if [ "$CPU" = 1 ]; then
        route_torch pytorch-cpu
    else
        local helper=(python3) build
        command -v python3 >/dev/null 2>&1 || helper=("$uv" run --no-project --quiet python)
        build="$(torch_build "${helper[@]}")"
        [ -z "$build" ] || route_torch "pytorch-$build" --if-untouched
    fi
    local args=(sync)
    if [ -n "${PYTHON:-}" ]; then
        args+=(--python "$PYTHON")
    fi
    # ${a[@]+...}: bash 3.2 (macOS) calls an empty array unbound under set -u.
    args+=(${UV_ARGS[@]+"${UV_ARGS[@]}"})
    [ -f uv.lock ] || say "no uv.lock yet: uv sync writes it; commit it with the code"
    say "uv ${args[*]}: the project, its dev group and the locked versions"
    "$uv" "${args[@]}"
    RUN=("$uv" run --no-sync python)
    ACTIVATE=". ${VENV_DIR:-.venv}/bin/activate   # or put 'uv run' before each command"
}

[ -z "${UV_ARGS[*]-}" ] || [ "$ENV_MANAGER" = uv ] || fail "arguments after -- go to uv sync; add --uv."

case "$ENV_MANAGER" in
    conda) setup_conda ;;
    pip) setup_venv ;;
    uv) setup_uv ;;
    *) fail "ENV_MANAGER must be conda, pip or uv, not '$ENV_MANAGER'." ;;
esac

say "checking the install"
"${RUN[@]}" -c "import $PACKAGE" || fail "the environment was built but 'import $PACKAGE' fails; see the messages above."
# One operation on each GPU: is_available() is also true for a GPU the build has no kernels for.
"${RUN[@]}" scripts/torch_build.py probe \
    || fail "PyTorch cannot run on this GPU; the line above names the build to install (TORCH_SPEC=\"torch torchvision --index-url <that index>\" bash scripts/setup.sh)."

cat <<EOF

Ready. Next:
  $ACTIVATE
  python -m $PACKAGE.train debug=fast   # one quick epoch, offline
  python -m $PACKAGE.train              # a full run
  pytest                                # the project's tests
EOF
