"""Per-device memory of the Qwen2.5-7B Skill1 train step over memory options, measured by XLA without allocating.

Run from the repo root:  .venv/bin/python benchmarks/memory_7b.py   (writes benchmarks/results/memory_7b.json;
about 20 minutes on 2 cores, almost all XLA compilation; ``--options a,b`` runs a subset)

For each option the full train step (Skill1 loss, gradient accumulation over ``--num-micro`` micro-batches of
``--micro-batch`` rows of ``--seq-len`` tokens per device, AdamW, non-finite skip; bf16 compute, float32 master
params, per-block remat) is lowered on abstract shapes for an FSDP mesh of fake CPU devices and compiled;
``compiled.memory_analysis()`` gives the per-device argument / output / temp bytes of the SPMD program.
Peak ≈ arguments + outputs − aliased (donated state) + temps. CPU XLA schedules buffers differently from TPU/GPU
XLA, so treat the temp number as an estimate; the argument bytes (params + optimizer state + batch) are exact.

The options vary attention (dense [B,N,T,T] scores vs blocked online softmax), the dtype of AdamW's first moment
(optax ``mu_dtype``; the second moment stays float32), the remat policy and the FSDP degree. ``default`` is the
first option of ``PREFERENCE`` that fits ``--chip-gib`` (else the least-memory fsdp-8 option). A second section
trains a tiny model for ``--accuracy-steps`` steps with float32 and bfloat16 first moments and reports the final
losses and the parameter difference (what the bf16 option costs in accuracy; not asserted equal).
"""

from __future__ import annotations

import argparse
import os
import sys

# name: (attention, first-moment dtype, remat policy, fsdp)
OPTIONS = {
    "dense_fp32_full_fsdp8": ("dense", "float32", "full", 8),
    "blocked_fp32_full_fsdp8": ("blocked", "float32", "full", 8),
    "dense_bf16_full_fsdp8": ("dense", "bfloat16", "full", 8),
    "blocked_bf16_full_fsdp8": ("blocked", "bfloat16", "full", 8),
    "blocked_bf16_matmuls_fsdp8": ("blocked", "bfloat16", "save_matmuls", 8),
    "dense_fp32_full_fsdp16": ("dense", "float32", "full", 16),
    "blocked_fp32_full_fsdp16": ("blocked", "float32", "full", 16),
    "blocked_bf16_full_fsdp16": ("blocked", "bfloat16", "full", 16),
    "blocked_fp32_full_fsdp32": ("blocked", "float32", "full", 32),
    "blocked_bf16_full_fsdp32": ("blocked", "bfloat16", "full", 32),
}
# Default choice, best first: fewer chips first (fsdp 8 is the paper's 8 GPUs), then exact optimizer state before
# bf16 moments, then less recompute before less memory. If none fits, the least-memory fsdp-8 option.
PREFERENCE = ("blocked_fp32_full_fsdp8", "blocked_bf16_matmuls_fsdp8", "blocked_bf16_full_fsdp8",
              "blocked_fp32_full_fsdp16", "blocked_bf16_full_fsdp16", "blocked_fp32_full_fsdp32",
              "blocked_bf16_full_fsdp32")

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--options", default=",".join(OPTIONS), help="comma-separated option names (see OPTIONS)")
ARGS.add_argument("--seq-len", type=int, default=4096, help="tokens per row")
ARGS.add_argument("--micro-batch", type=int, default=1, help="rows per device per micro-step")
ARGS.add_argument("--num-micro", type=int, default=2, help="micro-steps accumulated in one update")
ARGS.add_argument("--chip-gib", type=float, default=16.0, help="memory of the target chip, GiB")
ARGS.add_argument("--accuracy-steps", type=int, default=100, help="steps of the bf16-vs-fp32 moment run (0: skip)")
ARGS.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                "memory_7b.json"))
FLAGS = ARGS.parse_args()
SELECTED = FLAGS.options.split(",")
if unknown := [n for n in SELECTED if n not in OPTIONS]:
    sys.exit(f"unknown option(s) {unknown}; choose from {list(OPTIONS)}")
# Fake devices must be configured before JAX initialises its backend.
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(OPTIONS[n][3] for n in SELECTED)}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import machine_info, write_result  # noqa: E402
from flax import nnx  # noqa: E402

from skill1_jax.model.config import ModelConfig  # noqa: E402
from skill1_jax.model.qwen2 import Qwen2, abstract_model  # noqa: E402
from skill1_jax.parallel.sharding import make_mesh  # noqa: E402
from skill1_jax.rl.batch import abstract_batch, batch_shardings  # noqa: E402
from skill1_jax.rl.config import RLConfig  # noqa: E402
from skill1_jax.rl.train_step import (init_train_state, make_optimizer, make_train_step,  # noqa: E402
                                      train_state_shardings)

GIB = 1024 ** 3


def measure(attention: str, moment_dtype: str, remat_policy: str, fsdp: int) -> dict:
    """Compiles the 7B train step for one option and returns XLA's per-device memory numbers."""
    mcfg = ModelConfig.from_preset("qwen2.5-7b", remat=True, remat_policy=remat_policy, compute_dtype="bfloat16",
                                   attention=attention)
    cfg = RLConfig(micro_batch_size=FLAGS.micro_batch, moment_dtype=moment_dtype)
    mesh = make_mesh(data=1, fsdp=fsdp, tensor=1, devices=jax.devices()[:fsdp])
    graphdef, params = nnx.split(abstract_model(mcfg, platform="tpu"), nnx.Param)
    state = jax.eval_shape(lambda p: init_train_state(p, cfg, 0), params)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state,
                         train_state_shardings(state, mesh))
    rows = FLAGS.micro_batch * fsdp * FLAGS.num_micro
    batch = abstract_batch(rows, FLAGS.seq_len, batch_shardings(mesh))
    step = make_train_step(graphdef, cfg, state, mesh)

    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    per_device = {"argument_bytes": ma.argument_size_in_bytes, "output_bytes": ma.output_size_in_bytes,
                  "alias_bytes": ma.alias_size_in_bytes, "temp_bytes": ma.temp_size_in_bytes,
                  "generated_code_bytes": ma.generated_code_size_in_bytes}
    peak = (per_device["argument_bytes"] + per_device["output_bytes"] - per_device["alias_bytes"]
            + per_device["temp_bytes"] + per_device["generated_code_bytes"])
    # float32 params + nu (4 + 4 bytes) and mu (4 or 2 bytes) per parameter, split over the fsdp devices.
    state_bytes = (8 + jnp.dtype(moment_dtype).itemsize) * mcfg.num_params() / fsdp
    return {"attention": attention, "moment_dtype": moment_dtype, "remat_policy": remat_policy, "fsdp": fsdp,
            "rows_per_update": rows, "per_device_gib": {k: round(v / GIB, 3) for k, v in per_device.items()},
            "params_plus_adam_gib_per_device": round(state_bytes / GIB, 3),
            "estimated_peak_gib": round(peak / GIB, 3), "fits_chip": peak <= FLAGS.chip_gib * GIB,
            "compile_s": round(compile_s, 1)}


def moment_accuracy(steps: int) -> dict:
    """A small Qwen2 trained ``steps`` AdamW steps (next-token loss on a fixed batch) with float32 vs bfloat16
    first moments, through the project's ``make_optimizer``: final losses and the parameter difference."""
    mcfg = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=128, compute_dtype="float32")
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, mcfg.vocab_size, size=(8, 64)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(64), tokens.shape)
    graphdef, params0 = nnx.split(Qwen2(mcfg, rngs=nnx.Rngs(0)), nnx.Param)

    def loss_fn(params):
        logits, _ = nnx.merge(graphdef, params)(tokens, positions)
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

    def train(moment_dtype):
        # lr 1e-3 so the tiny model moves far in 100 steps; the paper's 1e-6 would hide any moment rounding.
        tx = make_optimizer(RLConfig(learning_rate=1e-3, moment_dtype=moment_dtype))

        @jax.jit
        def step(params, opt_state):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return jax.tree.map(jnp.add, params, updates), opt_state, loss

        params, opt_state = params0, tx.init(params0)
        losses = []
        for _ in range(steps):
            params, opt_state, loss = step(params, opt_state)
            losses.append(float(loss))
        return params, losses

    p32, l32 = train("float32")
    p16, l16 = train("bfloat16")
    diff = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), p32, p16))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), p32, params0))
    sq = lambda t: sum(float(jnp.sum(x.astype(jnp.float32) ** 2)) for x in jax.tree.leaves(t))
    rel = (sq(jax.tree.map(jnp.subtract, p32, p16)) / sq(jax.tree.map(jnp.subtract, p32, params0))) ** 0.5
    return {"model": "Qwen2 hidden 64, 2 layers, vocab 512; 8 x 64 tokens; AdamW lr 1e-3 (project optimizer)",
            "steps": steps, "initial_loss": round(l32[0], 5),
            "final_loss": {"float32": round(l32[-1], 5), "bfloat16": round(l16[-1], 5)},
            "max_abs_param_diff": float(max(diff)), "max_abs_param_change_fp32": float(max(moved)),
            "param_diff_relative_to_update": round(rel, 5)}


def main() -> None:
    options = {}
    for name in SELECTED:
        options[name] = measure(*OPTIONS[name])
        print(name, options[name], flush=True)
    fitting = [n for n in PREFERENCE if n in options and options[n]["fits_chip"]]
    fsdp8 = [n for n in options if options[n]["fsdp"] == 8]
    fallback = min(fsdp8, key=lambda n: options[n]["estimated_peak_gib"]) if fsdp8 else None
    result = {
        "model": "qwen2.5-7b", "num_params": ModelConfig.from_preset("qwen2.5-7b").num_params(),
        "remat": True, "compute_dtype": "bfloat16", "param_dtype": "float32", "second_moment_dtype": "float32",
        "seq_len": FLAGS.seq_len, "micro_batch_per_device": FLAGS.micro_batch, "num_micro_batches": FLAGS.num_micro,
        "chip_gib": FLAGS.chip_gib, "options": options,
        "default": fitting[0] if fitting else fallback,
        "default_fits_chip": bool(fitting),
        "default_rule": f"first of {list(PREFERENCE)} that fits {FLAGS.chip_gib} GiB, else the least-memory fsdp-8 "
                        f"option",
        "fits_at_fsdp8": [n for n in options if options[n]["fsdp"] == 8 and options[n]["fits_chip"]],
    }
    if FLAGS.accuracy_steps:
        result["moment_dtype_accuracy"] = moment_accuracy(FLAGS.accuracy_steps)
    result["machine"] = machine_info(backend="cpu (fake devices; memory from the compiled SPMD program)")
    write_result(FLAGS.out, result)


if __name__ == "__main__":
    main()
