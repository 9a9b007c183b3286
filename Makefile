# The template's own tasks. `make test` and `make demo` work on a fresh machine:
# they create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
# One place for the PyTorch build; override for another one, e.g.
#   make test TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Two workers: each render's test suite runs in its own process.
PYTEST_ARGS ?= -n 2
DEMO_DIR ?= $(CURDIR)/.demo
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast demo lint bench clean

$(STAMP): requirements-dev.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with torch and every test dependency

test: setup  ## every test: hooks, the render matrix, each render's own tests and training
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-fast: setup  ## the tests that need no rendered project's test suite
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check hooks tests benchmarks

demo: setup  ## render the default project into .demo/ and train it offline
	rm -rf $(DEMO_DIR)
	$(BIN)/cookiecutter --no-input --output-dir $(DEMO_DIR) .
	cd $(DEMO_DIR)/my-experiment && WANDB_MODE=offline HF_HUB_OFFLINE=1 PYTHONPATH=src \
		$(CURDIR)/$(BIN)/python -m my_experiment.train hydra.run.dir=outputs/demo
	@echo "Results: $(DEMO_DIR)/my-experiment/outputs/demo (metrics.csv, summary.json, plots/, checkpoints/)"

bench: setup  ## print the benchmark ratios
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
