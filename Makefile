# The template's own tasks. `make test` and `make demo` work on a fresh machine:
# they create the virtual environment first, from the lock (requirements-dev.lock).
PYTHON ?= python3
VENV ?= .venv
# One place for the PyTorch build; override it for another one, e.g.
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu      (same versions, CPU wheels)
#   make test TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cpu"
# The lock leaves torch, torchvision and their CUDA packages out, so it never fights this choice.
TORCH_INDEX ?=
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX))
export TORCH_SPEC  # tests/test_setup_scripts.py installs the same build with setup.sh
# Three workers on a 2-core machine: many tests wait (a tracking server, a sweep's polling, a requeue), and a
# third worker uses those cores meanwhile. Tests are handed out one or two at a time (--maxschedchunk 1), so
# that each render's suite, minutes long, starts on a worker of its own (tests/conftest.py orders them). The
# 20 slowest tests are listed at the end.
PYTEST_ARGS ?= -n 3 --maxschedchunk 1 --durations=20
DEMO_DIR ?= $(CURDIR)/.demo
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# requirements-dev.txt is the list people edit; the lock is what gets installed.
LOCK := requirements-dev.lock
# The lowest Python the lock serves (the template's oldest python_version); it serves newer ones too.
LOCK_PYTHON := 3.10
# Packages that come with the PyTorch build of TORCH_SPEC and are kept out of the lock.
TORCH_BUILD := torch|torchvision|triton|nvidia-[^=]*|cuda-[^=]*
LATEST_VENV ?= .venv-latest

.PHONY: setup test test-fast test-slurm test-latest lock demo lint format bench gpu-wheels clean

# The PyTorch build first, then the lock, constrained to that build: pip fails rather than swap it.
define install
	$(1)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(1)/bin/python -m pip freeze | { grep -E '^(torch|torchvision)==' || true; } > $(1)/torch-constraints.txt
	$(1)/bin/python -m pip install --quiet -r $(2) -c $(1)/torch-constraints.txt
	$(1)/bin/python -m pip check
endef

$(STAMP): $(LOCK) Makefile
	$(PYTHON) -m venv $(VENV)
	$(call install,$(VENV),$(LOCK))
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with torch and the locked test dependencies

test: setup  ## every test: hooks, the render matrix, each render's own tests and training
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-fast: setup  ## the tests that need no rendered project's test suite
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

# A one-node SLURM (munged, slurmctld, slurmd; config and state in a temporary folder) for the
# tests marked slurm; Debian's packages are installed when missing (root), else the tests skip.
test-slurm: setup  ## the cluster paths on a real one-node SLURM: sbatch, srun, scancel, requeue
	$(BIN)/python -m pytest tests -m slurm --slurm -p no:xdist

test-latest:  ## every test against the newest releases of requirements-dev.txt, in a fresh .venv-latest
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(call install,$(LATEST_VENV),requirements-dev.txt)
	$(LATEST_VENV)/bin/python -m pip freeze > $(LATEST_VENV)/freeze.txt
	$(LATEST_VENV)/bin/python -m pytest tests $(PYTEST_ARGS)

# Exact versions for Linux and every Python from LOCK_PYTHON up, with torch held at TORCH_SPEC's pins.
# Pins already in the lock are kept; `make lock LOCK_ARGS=--upgrade` moves every pin to the newest release.
LOCK_ARGS ?=
COMPILE = $(BIN)/uv pip compile requirements-dev.txt -c $(LOCK).torch --universal \
	--python-version $(LOCK_PYTHON) --python $(BIN)/python --no-python-downloads \
	--custom-compile-command "make lock" --quiet $(LOCK_ARGS)

lock: $(BIN)/uv  ## regenerate requirements-dev.lock from requirements-dev.txt
	printf '%s\n' $(filter torch==% torchvision==%,$(TORCH_SPEC)) > $(LOCK).torch
	$(COMPILE) --no-annotate --no-header --output-file $(LOCK).all
	$(COMPILE) $$(sed -nE 's/^($(TORCH_BUILD))==.*/--no-emit-package \1/p' $(LOCK).all | sort -u) \
		--output-file $(LOCK)
	rm -f $(LOCK).torch $(LOCK).all

$(BIN)/uv:  # uv comes with the lock; an existing venv is used as it is
	$(MAKE) setup

lint: setup  ## ruff on the template's own code; the rendered code must be ruff format-clean
	$(BIN)/ruff check hooks tests benchmarks
	$(BIN)/python tests/format_template.py --check

format: setup  ## ruff format the rendered Python files (through a render: they hold Jinja names)
	$(BIN)/python tests/format_template.py

demo: setup  ## render the default project into .demo/ and train it offline
	rm -rf $(DEMO_DIR)
	$(BIN)/cookiecutter --no-input --output-dir $(DEMO_DIR) .
	cd $(DEMO_DIR)/my-experiment && WANDB_MODE=offline HF_HUB_OFFLINE=1 PYTHONPATH=src \
		$(CURDIR)/$(BIN)/python -m my_experiment.train hydra.run.dir=outputs/demo
	@echo "Results: $(DEMO_DIR)/my-experiment/outputs/demo (metrics.csv, summary.json, plots/, checkpoints/)"

bench: setup  ## print the benchmark ratios
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

# benchmarks/gpu_check.sh on a GPU machine with no network: the wheels of what its image lacks, for its
# Python (one version each, the lock's), checked against each other and the image (benchmarks/gpu/).
GPU_PYTHON_VERSION ?= 3.12
GPU_WHEELS ?= .whl

gpu-wheels: setup  ## download the wheels benchmarks/gpu_check.sh carries to a GPU machine into .whl/
	$(BIN)/python benchmarks/gpu/wheels.py --python-version $(GPU_PYTHON_VERSION) --dest $(GPU_WHEELS)

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(DEMO_DIR) .pytest_cache
