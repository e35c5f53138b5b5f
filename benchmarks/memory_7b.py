"""Per-device memory of the Qwen2.5-7B Skill1 train step over memory options, measured by XLA without allocating.

Run from the repo root:  .venv/bin/python benchmarks/memory_7b.py   (writes benchmarks/results/memory_7b.json;
minutes on 2 cores, almost all XLA compilation; ``--options a,b`` runs a subset)
TPU v5e (16 GiB chips), compiled without a TPU by libtpu:  make bench-memory-tpu   (its own venv with libtpu;
writes benchmarks/results/memory_7b_tpu_v5e.json)

For each option the full train step (Skill1 loss, gradient accumulation over ``--num-micro`` micro-batches of
``--micro-batch`` rows of ``--seq-len`` tokens per device, AdamW, non-finite skip; bf16 compute, float32 master
params, per-block remat) is lowered on abstract shapes for an FSDP mesh and compiled.

* ``--target cpu`` (default): fake CPU devices; ``compiled.memory_analysis()`` gives the per-device argument /
  output / temp bytes, peak ≈ arguments + outputs − aliased (donated state) + temps. XLA:CPU has no bfloat16 dot:
  it widens bf16 matmul operands and the saved residuals to float32, so its temps overstate an accelerator's.
* ``--target tpu-v5e``: a deviceless compile for a v5e slice (2x4 = 8 chips, 4x4 = 16, 4x8 = 32) of 15.75 GiB
  usable HBM each; the TPU compiler's own buffer assignment is the number, and a program that does not fit is
  refused at compile time (``fits_chip`` is whether it compiled; ``xla_total_gib`` the total it reported).

The options vary attention (dense [B,N,T,T] scores vs blocked online softmax), the dtypes of AdamW's moments
(``RLConfig.moment_dtype`` / ``second_moment_dtype``, ``rl.adam``), the remat policy, MLP sequence chunks
(``ModelConfig.mlp_chunks``) and the FSDP degree. Every option runs the library's fixed memory paths: bf16
gradients per micro-batch (``model.qwen2.compute_params``) and vocabulary ops that move rows, not [V, D] tables
(``vocab_rows`` / ``vocab_split`` rules). ``default`` is the first option of ``PREFERENCE`` that fits
``--chip-gib``. A second section trains a tiny model for ``--accuracy-steps`` steps with float32 and bfloat16
moments and reports the final losses and the parameter difference (what the bf16 options cost; not asserted
equal).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile

# name: (attention, first-moment dtype, second-moment dtype, remat policy, MLP chunks, fsdp)
OPTIONS = {
    "dense_fp32_full_fsdp8": ("dense", "float32", "float32", "full", 1, 8),
    "blocked_fp32_full_fsdp8": ("blocked", "float32", "float32", "full", 1, 8),
    "blocked_bf16mu_full_fsdp8": ("blocked", "bfloat16", "float32", "full", 1, 8),
    "blocked_bf16mu_matmuls_fsdp8": ("blocked", "bfloat16", "float32", "save_matmuls", 1, 8),
    "blocked_bf16_full_fsdp8": ("blocked", "bfloat16", "bfloat16", "full", 1, 8),
    "blocked_bf16_full_mlp4_fsdp8": ("blocked", "bfloat16", "bfloat16", "full", 4, 8),
    "blocked_fp32_full_fsdp16": ("blocked", "float32", "float32", "full", 1, 16),
    "blocked_bf16mu_full_fsdp16": ("blocked", "bfloat16", "float32", "full", 1, 16),
    "blocked_fp32_full_fsdp32": ("blocked", "float32", "float32", "full", 1, 32),
}
# Default choice, best first: fewer chips first (fsdp 8 is the paper's 8 GPUs), then exact optimizer state before
# bf16 moments, then less recompute before less memory. If none fits, the least-memory fsdp-8 option.
PREFERENCE = ("blocked_fp32_full_fsdp8", "blocked_bf16mu_full_fsdp8", "blocked_bf16_full_fsdp8",
              "blocked_bf16_full_mlp4_fsdp8", "blocked_fp32_full_fsdp16", "blocked_bf16mu_full_fsdp16",
              "blocked_fp32_full_fsdp32")
TPU_TOPOLOGY = {8: "v5e:2x4", 16: "v5e:4x4", 32: "v5e:4x8"}

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--options", default=",".join(OPTIONS), help="comma-separated option names (see OPTIONS)")
ARGS.add_argument("--seq-len", type=int, default=4096, help="tokens per row")
ARGS.add_argument("--micro-batch", type=int, default=1, help="rows per device per micro-step")
ARGS.add_argument("--num-micro", type=int, default=2, help="micro-steps accumulated in one update")
ARGS.add_argument("--chip-gib", type=float, default=16.0, help="memory of the target chip, GiB (cpu target)")
ARGS.add_argument("--target", choices=("cpu", "tpu-v5e"), default="cpu", help="compile for fake CPU devices or, "
                  "without a TPU, for a TPU v5e slice (needs libtpu: make bench-memory-tpu)")
ARGS.add_argument("--accuracy-steps", type=int, default=100, help="steps of the bf16-vs-fp32 moment run (0: skip)")
ARGS.add_argument("--out", default=None, help="result JSON (default: results/memory_7b[_tpu_v5e].json)")
FLAGS = ARGS.parse_args()
SELECTED = FLAGS.options.split(",")
if unknown := [n for n in SELECTED if n not in OPTIONS]:
    sys.exit(f"unknown option(s) {unknown}; choose from {list(OPTIONS)}")
TPU = FLAGS.target == "tpu-v5e"
OUT = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                "memory_7b_tpu_v5e.json" if TPU else "memory_7b.json")
# Fake devices (or the TPU compiler's buffer report) must be configured before JAX initialises its backend.
DUMP = tempfile.mkdtemp(prefix="memory_7b_")
os.environ["XLA_FLAGS"] = (f"--xla_dump_to={DUMP} --xla_dump_hlo_module_re=sharded_step" if TPU else
                           f"--xla_force_host_platform_device_count={max(OPTIONS[n][-1] for n in SELECTED)}")
os.environ["JAX_PLATFORMS"] = "cpu"  # the TPU target compiles for a topology description, not a device
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


def _mesh(fsdp: int):
    if not TPU:
        return make_mesh(data=1, fsdp=fsdp, tensor=1, devices=jax.devices()[:fsdp])
    from jax.experimental import topologies
    devices = topologies.get_topology_desc(platform="tpu", topology_name=TPU_TOPOLOGY[fsdp]).devices
    return make_mesh(data=1, fsdp=fsdp, tensor=1, devices=devices)


def _tpu_total_bytes() -> int:
    """The total the TPU compiler planned for the newest compiled module (its memory-usage report)."""
    report = max(glob.glob(os.path.join(DUMP, "*memory-usage-report.txt")), key=os.path.getmtime)
    with open(report) as f:
        return int(re.search(r"Total bytes: (\d+)", f.read()).group(1))


def measure(attention: str, moment_dtype: str, nu_dtype: str, remat_policy: str, mlp_chunks: int,
            fsdp: int) -> dict:
    """Compiles the 7B train step for one option and returns XLA's per-device memory numbers."""
    mcfg = ModelConfig.from_preset("qwen2.5-7b", remat=True, remat_policy=remat_policy, compute_dtype="bfloat16",
                                   attention=attention, mlp_chunks=mlp_chunks)
    cfg = RLConfig(micro_batch_size=FLAGS.micro_batch, moment_dtype=moment_dtype, second_moment_dtype=nu_dtype)
    mesh = _mesh(fsdp)
    graphdef, params = nnx.split(abstract_model(mcfg, platform="tpu"), nnx.Param)
    state = jax.eval_shape(lambda p: init_train_state(p, cfg, 0), params)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state,
                         train_state_shardings(state, mesh))
    rows = FLAGS.micro_batch * fsdp * FLAGS.num_micro
    batch = abstract_batch(rows, FLAGS.seq_len, batch_shardings(mesh))
    step = make_train_step(graphdef, cfg, state, mesh)
    # float32 params (4 bytes) and the two moments, per parameter, split over the fsdp devices.
    state_bytes = (4 + jnp.dtype(moment_dtype).itemsize + jnp.dtype(nu_dtype).itemsize) * mcfg.num_params() / fsdp
    result = {"attention": attention, "moment_dtype": moment_dtype, "second_moment_dtype": nu_dtype,
              "remat_policy": remat_policy, "mlp_chunks": mlp_chunks, "fsdp": fsdp, "rows_per_update": rows,
              "params_plus_adam_gib_per_device": round(state_bytes / GIB, 3)}

    t0 = time.perf_counter()
    try:
        compiled = step.lower(state, batch).compile()
    except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a program that does not fit its HBM
        needed = re.search(r"HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)", str(e))
        if not (TPU and needed):
            raise
        return {**result, "fits_chip": False, "xla_total_gib": float(needed.group(1)),
                "estimated_peak_gib": float(needed.group(1)), "chip_usable_gib": float(needed.group(2)),
                "compile_s": round(time.perf_counter() - t0, 1)}
    compile_s = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    per_device = {"argument_bytes": ma.argument_size_in_bytes, "output_bytes": ma.output_size_in_bytes,
                  "alias_bytes": ma.alias_size_in_bytes, "temp_bytes": ma.temp_size_in_bytes,
                  "generated_code_bytes": ma.generated_code_size_in_bytes}
    result["per_device_gib"] = {k: round(v / GIB, 3) for k, v in per_device.items()}
    if TPU:
        total = _tpu_total_bytes()
        result.update(fits_chip=True, xla_total_gib=round(total / GIB, 3), estimated_peak_gib=round(total / GIB, 3))
    else:
        peak = (per_device["argument_bytes"] + per_device["output_bytes"] - per_device["alias_bytes"]
                + per_device["temp_bytes"] + per_device["generated_code_bytes"])
        result.update(estimated_peak_gib=round(peak / GIB, 3), fits_chip=peak <= FLAGS.chip_gib * GIB)
    return {**result, "compile_s": round(compile_s, 1)}


def moment_accuracy(steps: int) -> dict:
    """A small Qwen2 trained ``steps`` AdamW steps (next-token loss on a fixed batch) with float32 moments, a
    bfloat16 first moment, and both in bfloat16, through the project's ``make_optimizer``: final losses and each
    bf16 run's parameter difference from the float32 run."""
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

    def train(moment_dtype, nu_dtype):
        # lr 1e-3 so the tiny model moves far in 100 steps; the paper's 1e-6 would hide any moment rounding.
        tx = make_optimizer(RLConfig(learning_rate=1e-3, moment_dtype=moment_dtype, second_moment_dtype=nu_dtype))

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

    p32, l32 = train("float32", "float32")
    sq = lambda t: sum(float(jnp.sum(x.astype(jnp.float32) ** 2)) for x in jax.tree.leaves(t))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), p32, params0))
    result = {"model": "Qwen2 hidden 64, 2 layers, vocab 512; 8 x 64 tokens; AdamW lr 1e-3 (project optimizer)",
              "steps": steps, "initial_loss": round(l32[0], 5), "final_loss": {"float32": round(l32[-1], 5)},
              "max_abs_param_change_fp32": float(max(moved))}
    for name, dtypes in (("bfloat16_mu", ("bfloat16", "float32")), ("bfloat16_mu_nu", ("bfloat16", "bfloat16"))):
        p16, l16 = train(*dtypes)
        diff = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), p32, p16))
        rel = (sq(jax.tree.map(jnp.subtract, p32, p16)) / sq(jax.tree.map(jnp.subtract, p32, params0))) ** 0.5
        result["final_loss"][name] = round(l16[-1], 5)
        result[name] = {"max_abs_param_diff": float(max(diff)), "param_diff_relative_to_update": round(rel, 5)}
    return result


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
        "remat": True, "compute_dtype": "bfloat16", "param_dtype": "float32", "gradient_dtype_per_micro_batch":
        "bfloat16 (float32 accumulator)", "target": FLAGS.target,
        "seq_len": FLAGS.seq_len, "micro_batch_per_device": FLAGS.micro_batch, "num_micro_batches": FLAGS.num_micro,
        "chip_gib": "TPU v5e: 15.75 usable, checked by its compiler" if TPU else FLAGS.chip_gib, "options": options,
        "default": fitting[0] if fitting else fallback,
        "default_fits_chip": bool(fitting),
        "default_rule": f"first of {list(PREFERENCE)} that fits the chip, else the least-memory fsdp-8 option",
        "paper_preset": "skill1_jax.config.paper(): blocked_bf16_full_mlp4_fsdp8 (attention auto: splash on TPU)",
        "fits_at_fsdp8": [n for n in options if options[n]["fsdp"] == 8 and options[n]["fits_chip"]],
    }
    if FLAGS.accuracy_steps:
        result["moment_dtype_accuracy"] = moment_accuracy(FLAGS.accuracy_steps)
    result["machine"] = machine_info(backend="TPU v5e compiled without a device (libtpu); compiled on this CPU"
                                     if TPU else "cpu (fake devices; memory from the compiled SPMD program)")
    write_result(OUT, result)


if __name__ == "__main__":
    main()
