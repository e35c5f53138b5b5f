"""One-GPU check: decode roofline, update MFU, cuDNN attention against dense, phase peaks measured against XLA's.

Run through ``benchmarks/gpu_check.sh`` (writes benchmarks/results/gpu.json; ≤ 8 minutes on one H100), or
``--dry-run``: tiny shapes on the CPU in seconds (``tests/test_gpu_check.py``; no speed or memory is measured).

1. **Decode** on Qwen2.5-7B-shaped random weights in bfloat16 (``Sampler``: prefill, then the decode segments) at
   batch 1 and 64: generated tokens/s and the fraction of the HBM roofline, i.e. the time one step needs to read
   the weights and the rows' KV cache at the chip's HBM bandwidth over the measured time per step.
2. **Update MFU** on a Qwen2.5-1.5B-shaped random model (the train step of ``rl.train_step``: float32 master
   params, bfloat16 compute, per-block remat, AdamW): model FLOPs 6·P·tokens + the causal attention's
   (rematerialisation not counted) over time × the chip's dense bf16 peak.
3. **Attention**: ``cudnn_attention`` against ``dense_attention`` at a 7B layer's heads: forward + backward time
   and the largest absolute difference of outputs and gradients.
4. **Phase peaks**: each phase of a one-GPU step of the 1.5B model (rollout: prefill + decode of a stage; reference
   scoring; update) runs in its own process with the train state and π_ref resident; the device's
   ``peak_bytes_in_use`` is set beside the estimate by the rule of ``benchmarks/memory_step.py`` (the phase
   program's arguments + outputs − aliases + temporaries, plus the resident arrays it does not take). The 8-GPU
   per-chip estimates of memory_step.json need eight GPUs; this checks the rule that made them on one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the script, measures nothing")
ARGS.add_argument("--phase", choices=("rollout", "reference", "update"), help="(internal) measure one phase")
ARGS.add_argument("--out", default=os.path.join(HERE, "results", "gpu.json"))
FLAGS = ARGS.parse_args()
if FLAGS.dry_run:
    os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # peak_bytes_in_use then counts what is used

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from skill1_jax.model.attention import cudnn_attention, dense_attention  # noqa: E402
from skill1_jax.model.config import ModelConfig  # noqa: E402
from skill1_jax.model.qwen2 import Qwen2  # noqa: E402
from skill1_jax.rl.batch import Segment, abstract_batch  # noqa: E402
from skill1_jax.rl.config import RLConfig  # noqa: E402
from skill1_jax.rl.train_step import init_train_state, make_logprob_fn, make_train_step  # noqa: E402
from skill1_jax.sampling.buckets import Buckets  # noqa: E402
from skill1_jax.sampling.logits import SamplingConfig  # noqa: E402
from skill1_jax.sampling.sampler import Sampler  # noqa: E402

GIB = 1024 ** 3
# H100 SXM (nvidia.com/en-us/data-center/h100): dense bf16 FLOP/s and HBM3 bytes/s.
PEAK_FLOPS, PEAK_HBM = 989e12, 3.35e12
TINY = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
# Shapes: (decode prompt, new tokens), (update rows, length), (attention batch, length), (phase rows, prompt, reply).
SHAPES = {"dry": {"decode": (32, 8), "update": (2, 64), "attention": (1, 64), "phase": (4, 32, 8)},
          "gpu": {"decode": (512, 256), "update": (8, 2048), "attention": (4, 4096), "phase": (64, 1024, 256)}}


def model_cfg(preset: str, **changes) -> ModelConfig:
    base = TINY if FLAGS.dry_run else ModelConfig.from_preset(preset)
    return base.replace(compute_dtype="bfloat16", **changes)


def random_params(cfg: ModelConfig):
    """Random weights made on the device (never on the host)."""
    graphdef = nnx.split(nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(0))), nnx.Param)[0]
    params = jax.jit(lambda: nnx.split(Qwen2(cfg, rngs=nnx.Rngs(0)), nnx.Param)[1])()
    return graphdef, params


def _sig(x: float) -> float:
    """Three significant digits (a dry run's tiny fractions stay visible)."""
    return float(f"{x:.3g}")


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def kv_bytes_per_token(cfg: ModelConfig) -> int:
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2  # keys + values in bfloat16


def decode_check() -> dict:
    """Generated tokens/s and the HBM-roofline fraction at batch 1 and 64 (7B-shaped bf16 random weights)."""
    cfg = model_cfg("qwen2.5-7b", param_dtype="bfloat16")
    graphdef, params = random_params(cfg)
    prompt, new = SHAPES["dry" if FLAGS.dry_run else "gpu"]["decode"]
    sampler = Sampler(cfg.vocab_size, eos_ids=(), buckets=Buckets())  # no EOS: every row decodes N tokens
    scfg = SamplingConfig(max_new_tokens=new)
    rng = jax.random.key(0)
    out = {"model": "qwen2.5-7b shapes" if not FLAGS.dry_run else "tiny", "weight_bytes": tree_bytes(params),
           "prompt_tokens": prompt, "new_tokens": new}
    for batch in (1, 64):
        prompts = np.random.default_rng(batch).integers(0, cfg.vocab_size, (batch, prompt)).tolist()
        sampler.generate(graphdef, params, prompts, scfg, rng)  # compiles the prefill and decode segments
        state = jax.block_until_ready(sampler.prefill(graphdef, params, prompts, scfg, rng))
        t0 = time.perf_counter()
        jax.block_until_ready(sampler.decode(graphdef, params, state, scfg).tokens)
        dt = time.perf_counter() - t0
        steps = new - 1  # the prefill samples the first token
        # One step reads every weight once and each row's cache (on average prompt + new / 2 slots).
        step_bytes = out["weight_bytes"] + batch * (prompt + new / 2) * kv_bytes_per_token(cfg)
        out[f"batch_{batch}"] = {"tokens_per_s": round(batch * steps / dt, 1), "step_ms": round(dt / steps * 1e3, 3),
                                 "hbm_roofline_fraction": _sig(step_bytes / PEAK_HBM / (dt / steps))}
    return out


def filled_batch(rows: int, length: int, vocab: int):
    """A training batch of random tokens: the first half of each row prompt, the second half an action reply."""
    batch = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_batch(rows, length))
    rng = np.random.default_rng(0)
    reply = np.arange(length)[None, :] >= length // 2
    full = lambda value, dtype: np.full((rows, length), value, dtype)
    return dataclasses.replace(
        batch, tokens=rng.integers(0, vocab, (rows, length)).astype(np.int32),
        positions=np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy(),
        attention_mask=full(True, bool), row_id=full(1, np.int32), advantage=full(1.0, np.float32),
        loss_mask=reply.astype(np.float32).repeat(rows, 0),
        segment=np.where(reply, int(Segment.ACTION), 0).astype(np.int8).repeat(rows, 0))


def update_check() -> dict:
    """Model FLOPs utilisation of the train step on a 1.5B-shaped random model."""
    cfg = model_cfg("qwen2.5-1.5b", remat=True)
    rows, length = SHAPES["dry" if FLAGS.dry_run else "gpu"]["update"]
    rl = RLConfig(micro_batch_size=rows, mini_batch_size=rows)
    graphdef, params = random_params(cfg)
    state = jax.jit(lambda p: init_train_state(p, rl, 0))(params)
    step = make_train_step(graphdef, rl, state)
    batch = jax.device_put(filled_batch(rows, length, cfg.vocab_size))
    state, _ = step(state, batch)  # compile
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    dt = min(times)
    tokens = rows * length
    flops = 6 * cfg.num_params() * tokens + 3 * 4 * cfg.num_layers * cfg.hidden_size * tokens * length / 2
    return {"model": "qwen2.5-1.5b shapes" if not FLAGS.dry_run else "tiny", "rows": rows, "length": length,
            "step_s": round(dt, 4), "model_flops": flops, "mfu": _sig(flops / dt / PEAK_FLOPS)}


def attention_check() -> dict:
    """cuDNN (or, in a dry run, the dense reference itself) against dense: time of forward + backward, max |Δ|."""
    b, t = SHAPES["dry" if FLAGS.dry_run else "gpu"]["attention"]
    n, k, h = (4, 2, 16) if FLAGS.dry_run else (28, 4, 128)
    keys = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(keys[0], (b, t, n, h), jnp.bfloat16)
    kk, v = (jax.random.normal(x, (b, t, k, h), jnp.bfloat16) for x in keys[1:])
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
    fused = dense_attention if FLAGS.dry_run else cudnn_attention
    out = {"shape_bt_n_k_h": [b, t, n, k, h], "implementation": "dense (dry run)" if FLAGS.dry_run else "cudnn"}
    results = {}
    for name, fn in (("dense", dense_attention), ("fused", fused)):
        loss = lambda q, kk, v: jnp.sum(fn(q, kk, v, mask).astype(jnp.float32) ** 2)
        run = jax.jit(lambda q, kk, v: (fn(q, kk, v, mask), jax.grad(loss, argnums=(0, 1, 2))(q, kk, v)))
        jax.block_until_ready(run(q, kk, v))
        t0 = time.perf_counter()
        for _ in range(5):
            res = jax.block_until_ready(run(q, kk, v))
        out[f"{name}_ms"] = round((time.perf_counter() - t0) / 5 * 1e3, 3)
        results[name] = res
    diff = jax.tree.map(lambda a, c: float(jnp.max(jnp.abs(a.astype(jnp.float32) - c.astype(jnp.float32)))),
                        results["dense"], results["fused"])
    out["max_abs_diff_output"], out["max_abs_diff_grads"] = diff[0], max(diff[1])
    out["speedup"] = round(out["dense_ms"] / out["fused_ms"], 2)
    return out


def phase_peak(phase: str) -> dict:
    """One phase of a one-GPU step with the train state and π_ref resident: the compiled program's estimate (item 1's
    rule) and the device's measured peak."""
    cfg = model_cfg("qwen2.5-1.5b", remat=True)
    rows, prompt, reply = SHAPES["dry" if FLAGS.dry_run else "gpu"]["phase"]
    rl = RLConfig(micro_batch_size=rows, mini_batch_size=rows, reference_dtype="compute")
    graphdef, params = random_params(cfg)
    state = jax.jit(lambda p: init_train_state(p, rl, 0))(params)
    ref = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(jnp.bfloat16), p))(params)
    resident = tree_bytes(state) + tree_bytes(ref)
    if phase == "rollout":  # the sampler reads the train params (one GPU: no layout to reshard into)
        sampler = Sampler(cfg.vocab_size, eos_ids=(), buckets=Buckets())
        scfg = SamplingConfig(max_new_tokens=reply)
        prefill_c, decode_c = sampler.lower_decode(graphdef, state.params, batch=rows, prompt_length=prompt, cfg=scfg)
        programs, args_resident = (prefill_c, decode_c), tree_bytes(state.params)
        prompts = np.random.default_rng(0).integers(0, cfg.vocab_size, (rows, prompt)).tolist()
        run = lambda: sampler.generate(graphdef, state.params, prompts, scfg, jax.random.key(0))
    else:
        batch = jax.device_put(filled_batch(rows, prompt + reply, cfg.vocab_size))
        if phase == "reference":
            fn = make_logprob_fn(graphdef, rl, ref)
            programs, args_resident = (fn.lower(ref, batch).compile(),), tree_bytes(ref)
            run = lambda: jax.block_until_ready(fn(ref, batch))
        else:
            fn = make_train_step(graphdef, rl, state)
            programs, args_resident = (fn.lower(state, batch).compile(),), tree_bytes(state)
            run = lambda: jax.block_until_ready(fn(state, batch))
    estimates = []
    for c in programs:
        ma = c.memory_analysis()
        estimates.append(ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
                         + ma.temp_size_in_bytes + resident - args_resident)
    stats = jax.devices()[0].memory_stats()  # None on the CPU: nothing to measure, so nothing is run
    if stats is not None:
        run()
        stats = jax.devices()[0].memory_stats()
    return {"phase": phase, "estimate_gib": round(max(estimates) / GIB, 3),
            "measured_peak_gib": round(stats["peak_bytes_in_use"] / GIB, 3) if stats else None,
            "resident_gib": round(resident / GIB, 3)}


def phases_in_processes() -> dict:
    """Each phase in a fresh process, so the device's peak counter holds that phase alone."""
    out = {}
    for phase in ("rollout", "reference", "update"):
        cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase] + (["--dry-run"] if FLAGS.dry_run else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        out[phase] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else
                      {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"})
    return out


def guarded(fn) -> dict:
    """One section's result, or its error (a later section still runs)."""
    t0 = time.perf_counter()
    try:
        return {**fn(), "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # noqa: BLE001 - the JSON records which check failed and why
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def main() -> None:
    if FLAGS.phase:
        print(json.dumps(phase_peak(FLAGS.phase)))
        return
    from common import machine_info, write_result
    phases = phases_in_processes()  # first: the parent has not touched the device yet
    device = jax.devices()[0]
    result = {"dry_run": FLAGS.dry_run, "device": device.device_kind, "platform": device.platform,
              "decode": guarded(decode_check), "update": guarded(update_check),
              "attention": guarded(attention_check), "phase_peaks": phases,
              "peaks_note": "one GPU, 1.5B model: measured against the estimate rule of memory_step.py; the "
                            "8x H100 7B estimates in memory_step.json need eight GPUs",
              "machine": machine_info(backend=jax.default_backend())}
    write_result(FLAGS.out, result)


if __name__ == "__main__":
    main()
