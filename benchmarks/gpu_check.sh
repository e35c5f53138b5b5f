#!/usr/bin/env bash
# One-GPU check (benchmarks/gpu_check.py): decode roofline, update MFU, cuDNN vs dense attention, phase peaks.
# Writes benchmarks/results/gpu.json. Budget: 8 minutes on one H100, the install included.
#   benchmarks/gpu_check.sh            on the GPU machine (its python3 holds JAX with CUDA, flax and optax; this
#                                      checkout is imported from the source tree, nothing is installed from the
#                                      network; wheels carried in .whl/ are installed first if present)
#   benchmarks/gpu_check.sh --dry-run  tiny shapes on the CPU in seconds (make test runs it: tests/test_gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--dry-run" ]]; then
  shift
  exec "$PY" benchmarks/gpu_check.py --dry-run "$@"
fi
if [[ -d .whl ]] && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'; then
  echo "gpu_check: JAX sees no GPU here ($("$PY" -c 'import jax; print(jax.default_backend())' 2>&1 | tail -1))" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 7.5 minutes for the measurements: whatever finished is in the JSON (each section records its own error).
timeout 450 "$PY" benchmarks/gpu_check.py "$@"
