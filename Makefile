# Two entry points for a fresh machine: `make demo` (install + the main job) and `make test` (install + tests).
# The venv gets the CPU build of torch first (TORCH_SPEC), so the package's torch range keeps it; on a GPU
# machine set TORCH_SPEC to the CUDA build you want, or to "" to keep a torch that is already installed.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: install
	$(BIN)/xmodel quickstart

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
