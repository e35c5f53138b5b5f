# Set-up and entry points. `make demo` and `make test` each create .venv and install everything on a fresh
# machine (CPU torch first: a plain `torch` requirement would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SHARED_DATA ?= $(abspath ../shared/data)
PYTEST_ARGS ?=
# Two pytest workers, one per core (the XLA compiles that dominate the suite run on one thread each); work stealing
# balances the long learning tests, which conftest.py schedules first.
PYTEST_WORKERS ?= 2

.PHONY: install test test-fast demo bench bench-memory-tpu bench-memory-step bench-step-model gpu-check clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,envs]"
	touch $(STAMP)

install: $(STAMP)

test: install
	SKILL1_SHARED_DATA=$(SHARED_DATA) $(BIN)/python -m pytest tests -q -n $(PYTEST_WORKERS) --dist worksteal \
		--durations=15 $(PYTEST_ARGS)

# Everything but the two learning tests (tests/test_learning.py).
test-fast: install
	$(MAKE) test PYTEST_ARGS='-m "not learning" $(PYTEST_ARGS)'

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

# The 7B update compiled for TPU v5e without a TPU: libtpu in its own venv (in .venv it would make every JAX
# program probe for a TPU).
TPU_AOT := .venv-tpu-aot
bench-memory-tpu:
	test -x $(TPU_AOT)/bin/python || $(PYTHON) -m venv $(TPU_AOT)
	$(TPU_AOT)/bin/pip install --quiet -e .
	$(TPU_AOT)/bin/pip install --quiet "jax[tpu]==$$($(TPU_AOT)/bin/python -c 'import jax; print(jax.__version__)')"
	$(TPU_AOT)/bin/python benchmarks/memory_7b.py --target tpu-v5e --options \
		blocked_fp32_full_fsdp8,blocked_bf16mu_full_fsdp8,blocked_bf16_full_fsdp8,blocked_bf16_full_mlp4_fsdp8 \
		--accuracy-steps 0

# The whole paper step's per-chip memory (benchmarks/results/memory_step.json): the TPU slices compiled without a
# TPU by libtpu (its own venv: JAX, flax, optax and this package without its other requirements), then 8x H100 on
# fake CPU devices; the second run merges into the first's file. Tens of minutes on 2 cores, run niced.
bench-memory-step: install
	test -x $(TPU_AOT)/bin/python || $(PYTHON) -m venv $(TPU_AOT)
	$(TPU_AOT)/bin/pip install --quiet "jax[tpu]==$$($(BIN)/python -c 'import jax; print(jax.__version__)')" flax optax
	$(TPU_AOT)/bin/pip install --quiet --no-deps -e .
	nice -n 10 $(TPU_AOT)/bin/python benchmarks/memory_step.py --targets v5e-16,v6e-8,v5p-8,v5e-8
	nice -n 10 $(BIN)/python benchmarks/memory_step.py --targets h100-8

# Seconds per paper step by phase on 8x H100 and v5e-16 (benchmarks/results/step_model.json; arithmetic, instant).
bench-step-model: install
	$(BIN)/python benchmarks/step_model.py

# On a machine with one NVIDIA GPU (benchmarks/results/gpu.json, <= 8 minutes); `--dry-run` checks it on the CPU.
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .cache
