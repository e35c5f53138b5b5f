# Set-up and entry points. `make demo` and `make test` each create .venv and install everything on a fresh
# machine (CPU torch first: a plain `torch` requirement would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SHARED_DATA ?= $(abspath ../shared/data)
PYTEST_ARGS ?=

.PHONY: install test demo bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,envs]"
	touch $(STAMP)

install: $(STAMP)

test: install
	SKILL1_SHARED_DATA=$(SHARED_DATA) $(BIN)/python -m pytest tests -q $(PYTEST_ARGS)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m launch.demo --workdir=runs/demo

bench: install
	$(BIN)/python benchmarks/sampler.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/memory_7b.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/envs.py
	$(BIN)/python benchmarks/attention.py
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
