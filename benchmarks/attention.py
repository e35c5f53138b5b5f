"""Dense vs blocked attention on this machine: forward+backward time and XLA temp memory by sequence length.

Run from the repo root:  .venv/bin/python benchmarks/attention.py   (writes benchmarks/results/attention.json)

Backs ``skill1_jax.model.attention.AUTO_DENSE_MAX_SCORES`` (``auto`` stays dense up to 1024 × 1024 scores per
head): per length, the blocked/dense ratios of run time and compile time and each one's XLA temp memory, measured
in one run on the same inputs (1 row, 8 query heads, 2 kv heads, head dim 64, float32, causal mask, blocks of 512).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import machine_info, write_result  # noqa: E402

from skill1_jax.model import attention as A  # noqa: E402

LENGTHS = (128, 512, 1024, 2048, 4096)
HEADS, KV_HEADS, HEAD_DIM, BLOCK, REPEATS = 8, 2, 64, 512, 3
MIB = 1024 ** 2


def forward_backward(fn):
    loss = lambda q, k, v, mask: jnp.sum(fn(q, k, v, mask))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def measure(fn, args) -> dict:
    step = forward_backward(fn)
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return {"seconds": round(min(times), 4), "compile_s": round(compile_s, 2),
            "temp_mib": round(compiled.memory_analysis().temp_size_in_bytes / MIB, 1)}


def main() -> None:
    rng = np.random.default_rng(0)
    rows = {}
    for t in LENGTHS:
        q = jnp.asarray(rng.normal(size=(1, t, HEADS, HEAD_DIM)), jnp.float32)
        k, v = (jnp.asarray(rng.normal(size=(1, t, KV_HEADS, HEAD_DIM)), jnp.float32) for _ in range(2))
        mask = jnp.tril(jnp.ones((t, t), bool))[None]
        dense = measure(A.dense_attention, (q, k, v, mask))
        blocked = measure(lambda q, k, v, m: A.blocked_attention(q, k, v, m, BLOCK), (q, k, v, mask))
        rows[t] = {"dense": dense, "blocked": blocked,
                   "blocked_over_dense_time": round(blocked["seconds"] / dense["seconds"], 2),
                   "blocked_over_dense_compile": round(blocked["compile_s"] / dense["compile_s"], 2),
                   "auto_picks": A.select_implementation("auto", "cpu", t, t, jnp.float32, HEAD_DIM, BLOCK)}
        print(t, rows[t], flush=True)
    write_result(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "attention.json"), {
        "what": "forward+backward of one attention call, best of 3; temp = XLA temp bytes of the compiled step",
        "shape": {"batch": 1, "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "dtype": "float32",
                  "block": BLOCK},
        "auto_dense_max_scores": A.AUTO_DENSE_MAX_SCORES, "by_length": rows,
        "machine": machine_info(backend=jax.default_backend()),
    })


if __name__ == "__main__":
    main()
