# One command each on a fresh machine: `make demo`, `make test` install first when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench bench-gpu tables lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/afreq run method=freqstat dataset=synthetic dataset.category=all

test: install
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4

bench: install
	$(BIN)/python -m benchmarks

# GPU benchmark (docs/benchmarks_gpu.json + a section of docs/benchmarks.md); DRY=1: toy sizes on
# the CPU, every code path, written to a temporary folder (docs/ untouched).
bench-gpu: install
	$(BIN)/python -m benchmarks.gpu$(if $(filter 1 yes true,$(DRY)), --dry)

# The one command that rewrites the committed docs/tables/; `afreq tables` alone writes runs/tables/.
tables: install
	$(BIN)/afreq sweep experiments/synthetic/cross_method.yaml
	$(BIN)/afreq tables --out docs/tables

lint: install
	$(BIN)/ruff check anomaly_freq tests benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache
