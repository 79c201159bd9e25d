# Entry points on a fresh machine (Debian, Python >= 3.11, no GPU):
#   make run    set up, then run the main job
#   make test   set up, then run the linter and every test
# Both create .venv and install the CPU build of torch first, so nothing pulls a CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(STAMP)

# Main job (for now): prove the estimators exact, then measure bias and variance on the toys.
run: $(STAMP)
	$(BIN)/calgrpo check-estimator
	$(BIN)/python benchmarks/estimator_variance.py --quick --output runs/estimator_variance.json > /dev/null
	@echo "full JSON: runs/estimator_variance.json"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

# The published numbers of docs/benchmarks.md (about a minute on 2 cores).
bench: $(STAMP)
	$(BIN)/python benchmarks/estimator_variance.py --output runs/estimator_variance_full.json > /dev/null

clean:
	rm -rf $(VENV) runs .pytest_cache
