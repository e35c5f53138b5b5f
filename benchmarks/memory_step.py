"""Per-chip memory of a whole ``paper`` training step (rollout, reference scoring, update), checked by the compiler.

Run from the repo root:  make bench-memory-step   (TPU targets compiled without a TPU by libtpu in its own venv,
``.venv-tpu-aot``; the H100 target on fake CPU devices; writes benchmarks/results/memory_step.json; each 7B
program compiles for minutes on 2 cores). ``--targets a,b`` runs a subset and merges into an existing result;
``--smoke`` compiles a tiny model on 8 fake CPU devices in seconds (``tests/test_memory_step.py``).

A step runs three phases one after another on the same chips. Each phase is one compiled program (the rollout
two: the prefill and the last decode segment of its largest stage) whose arguments are *everything resident on
the device during that phase*: the train state (float32 params + AdamW moments), the frozen reference policy π_ref
and the sampler's weights, plus the phase's own inputs. A resident array the phase does not read is still an
argument (``keep_unused``), so the program's memory analysis (arguments + outputs − donated aliases + temporaries)
is the phase's peak per chip, every resident array counted exactly once; with the ``train`` sampling layout the
sampler reads the train params themselves and nothing is copied.

Shapes are the ``paper`` preset's (``skill1_jax.config.paper``): every stage generates for tasks × G rows with
a reply limit of ``generation.max_*_tokens`` (2,048); the prompt buckets per stage are in ``STAGE_PROMPTS``. The
rollout is sized by its largest stage (distillation: ~3.5k-token prompts → the 4,096 bucket + 2,048 reply slots);
a stage whose KV cache exceeds what the chip has left after the resident arrays is generated in sub-batches
(``kv_budget``), and the decode program is compiled at that sub-batch. The update and reference scoring run
micro-batches of ``rl.micro_batch_size`` rows per device at the longest training row (a distill prompt + its
reply, rounded up to ``train.length_bucket``).

Targets (``TARGETS``): TPU v5e-16 (fsdp 16), v6e-8 and v5p-8 compiled deviceless for the TPU topology (a program
that does not fit is refused by the TPU compiler, and the refusal's size is recorded); 8× H100 80 GB on fake CPU
devices, an *estimate* (XLA:CPU widens bfloat16 matmuls to float32, so its temporaries overstate a GPU's);
v5e-8 with host offload: arrays a phase does not read (AdamW moments during the rollout and reference scoring,
π_ref during the rollout and the update) sit in host memory (``memory_kind="pinned_host"`` in the programs'
argument shardings) and move to HBM for the phase that reads them, as ``train.offload=["moments", "reference"]``
makes the trainer do (``skill1_jax.parallel.offload``).

``decode_layout``: from the compiled decode segment's HLO, the bytes each device all-gathers and all-reduces per
decode step (inside the while loop) and once per segment (outside it), and whether a device holds a full copy of
the weights during decode.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import sys
import time


@dataclasses.dataclass(frozen=True)
class Target:
    """One accelerator slice.

    Attributes:
      platform: ``"tpu"`` (deviceless compile for ``topology`` by libtpu) or ``"cpu"`` (fake CPU devices: an
        estimate for ``device``).
      device: the chip, in words.
      topology: libtpu's topology name (TPU targets).
      chips: devices (JAX devices: a v5p chip is one device of two TensorCores).
      chip_gib: usable memory per chip.
      sampling_layout: ``generation.sampling_layout`` on this slice (``sampling.layout``): ``"tensor"`` (the paper
        preset's: tensor parallelism over the KV heads' gcd with the chips, rows over the rest) where a full
        bfloat16 copy does not fit beside the train state, ``"replicated"`` where it does.
      offload: resident arrays kept in host memory while a phase does not read them: ``"moments"`` (AdamW state),
        ``"reference"`` (π_ref).
    """

    platform: str
    device: str
    topology: str | None
    chips: int
    chip_gib: float
    sampling_layout: str
    offload: tuple[str, ...] = ()


# Usable HBM: v5e as its compiler reports it (15.75 of 16 GiB, benchmarks/results/memory_7b_tpu_v5e.json); v6e 32
# GiB and v5p 95 GiB per chip (cloud.google.com/tpu/docs/v6e, /v5p) less the same 0.25 GiB reserve; H100 SXM 80 GB
# = 74.5 GiB less 1 GiB for the CUDA context and cuDNN/cuBLAS workspaces.
TARGETS = {
    "v5e-16": Target("tpu", "TPU v5e", "v5e:4x4", 16, 15.75, "tensor"),
    "v6e-8": Target("tpu", "TPU v6e (Trillium)", "v6e:2x4", 8, 31.75, "tensor"),
    "v5p-8": Target("tpu", "TPU v5p", "v5p:2x2x1", 4, 94.75, "replicated"),
    "h100-8": Target("cpu", "NVIDIA H100 SXM 80 GB", None, 8, 73.5, "replicated"),
    "v5e-8": Target("tpu", "TPU v5e", "v5e:2x4", 8, 15.75, "tensor", offload=("moments", "reference")),
}
SMOKE_TARGET = Target("cpu", "fake CPU devices (tiny model)", None, 8, 0.05, "tensor",
                      offload=("moments", "reference"))

# Prompt bucket (sampler ladder) per stage at the paper's shapes. Query: the task text in the query template;
# rank: K = 5 retrieved skills of a few hundred tokens each; action: the play prompt (task, injected skill, recent
# history window, admissible commands); distill: the trajectory + contrastive reference, ~3.5k tokens.
STAGE_PROMPTS = {"query": 1024, "rank": 3072, "action": 3072, "distill": 4096}
DISTILL_PROMPT_TOKENS = 3584

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target names (see TARGETS)")
ARGS.add_argument("--env", default="both", choices=("alfworld", "webshop", "both"),
                  help="the preset's environment (both: the larger of each stage's rows)")
ARGS.add_argument("--smoke", action="store_true", help="tiny model, 8 fake CPU devices, seconds")
ARGS.add_argument("--out", default=None, help="result JSON (default benchmarks/results/memory_step.json)")
FLAGS = ARGS.parse_args()
SELECTED = ["smoke"] if FLAGS.smoke else FLAGS.targets.split(",")
if unknown := [n for n in SELECTED if n not in TARGETS and n != "smoke"]:
    sys.exit(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
PLATFORMS = {(SMOKE_TARGET if n == "smoke" else TARGETS[n]).platform for n in SELECTED}
if len(PLATFORMS) > 1:
    sys.exit("TPU and CPU targets need different JAX installs: run them separately (make bench-memory-step does)")
TPU = PLATFORMS == {"tpu"}
OUT = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "memory_step.json")
if not TPU:  # fake devices must exist before JAX initialises its backend
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"  # a TPU target compiles for a topology description, not a device
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import machine_info, write_result  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from skill1_jax.config import paper  # noqa: E402
from skill1_jax.model.config import ModelConfig  # noqa: E402
from skill1_jax.model.qwen2 import CACHE_AXES, abstract_model, compute_params  # noqa: E402
from skill1_jax.parallel.sharding import (activation_sharding, logical_sharding, make_mesh, state_shardings,  # noqa: E402
                                         tree_shardings)
from skill1_jax.rl.batch import abstract_batch, batch_shardings  # noqa: E402
from skill1_jax.rl.train_step import init_train_state, make_logprob_fn, make_train_step  # noqa: E402
from skill1_jax.sampling.buckets import Buckets  # noqa: E402
from skill1_jax.sampling.logits import SamplingConfig  # noqa: E402
from skill1_jax.sampling.collectives import decode_collectives, model_weight_shapes  # noqa: E402
from skill1_jax.sampling.layout import SamplingLayout  # noqa: E402
from skill1_jax.sampling.sampler import Sampler, _decode, _prefill  # noqa: E402

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The step's shapes: the model, the update config, the largest generation stage and the longest row."""

    model: ModelConfig
    rl: object
    generation: object
    stage_rows: dict
    stage_prompt: dict
    reply: int
    train_len: int


def paper_shapes() -> Shapes:
    """The ``paper`` preset at its real shapes (ALFWorld: 16 tasks × G 16 = 256 rows per stage; WebShop 32 × 16)."""
    envs = ("alfworld", "webshop") if FLAGS.env == "both" else (FLAGS.env,)
    cfgs = [paper(e) for e in envs]
    rows = max(c.train.tasks_per_step * c.train.group_size for c in cfgs)
    gen, train = cfgs[0].generation, cfgs[0].train
    reply = max(gen.max_query_tokens, gen.max_rank_tokens, gen.max_action_tokens, gen.max_distill_tokens)
    bucket = train.length_bucket
    train_len = -(-(DISTILL_PROMPT_TOKENS + gen.max_distill_tokens) // bucket) * bucket
    # The blocked online-softmax attention (as benchmarks/memory_7b.py) and compute in bfloat16 on every target.
    model = dataclasses.replace(cfgs[0].model, attention="blocked", compute_dtype="bfloat16")
    return Shapes(model, cfgs[0].rl, gen, {s: rows for s in STAGE_PROMPTS}, dict(STAGE_PROMPTS), reply, train_len)


def smoke_shapes() -> Shapes:
    model = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                        intermediate_size=128, compute_dtype="bfloat16", attention="blocked", attention_block=64)
    # float32 moments: the bfloat16 ones' stochastic rounding doubles this tiny update's compile time
    rl = paper().rl.replace(micro_batch_size=1, moment_dtype="float32", second_moment_dtype="float32")
    # Two KV heads: tensor parallelism over 2 devices; a budget of 8 rows of 192 slots: two sub-batches of 8.
    generation = dataclasses.replace(paper().generation, kv_cache_tokens=8 * 192)
    return Shapes(model, rl, generation, {"query": 16, "distill": 16}, {"query": 64, "distill": 128}, 64, 192)


# ---- abstract arrays ----------------------------------------------------------------------------------------

def _placed(tree, shardings, memory_kind: str | None = None):
    """ShapeDtypeStructs of ``tree`` with ``shardings`` (optionally in another memory space)."""
    def one(x, sh):
        if memory_kind is not None:
            sh = sh.with_memory_kind(memory_kind)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh)
    return jax.tree.map(one, tree, shardings)


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of placed ShapeDtypeStructs (the hand count the programs must match)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape)
        item = 8 if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else jnp.dtype(x.dtype).itemsize
        total += int(np.prod(shard, dtype=np.int64)) * item
    return total


def _devices(target: Target) -> list:
    if target.platform == "cpu":
        return jax.devices()[:target.chips]
    from jax.experimental import topologies
    return list(topologies.get_topology_desc(platform="tpu", topology_name=target.topology).devices)


# ---- memory of a compiled program -----------------------------------------------------------------------------

def program_memory(fn, *args, donate=()) -> tuple[dict, object]:
    """Compiles ``fn(*args)`` (every argument kept, ``donate`` donated); returns its per-device memory and the
    compiled program, or, for a TPU compile refused for not fitting HBM, the size the compiler asked for and None."""
    t0 = time.perf_counter()
    try:
        compiled = jax.jit(fn, donate_argnums=donate, keep_unused=True).lower(*args).compile()
    except jax.errors.JaxRuntimeError as e:
        needed = re.search(r"([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)", str(e))
        if not (TPU and needed):
            raise
        return {"peak_gib": float(needed.group(1)), "compiled": False, "hbm_gib": float(needed.group(2)),
                "compile_s": round(time.perf_counter() - t0, 1)}, None
    return _memory(compiled.memory_analysis(), t0), compiled


def _memory(ma, t0: float) -> dict:
    """Per-device footprint from a compiled program's memory analysis (``t0``: when its compile started)."""
    peak = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
            + ma.generated_code_size_in_bytes)
    return {"peak_gib": round(peak / GIB, 3), "peak_bytes": int(peak), "argument_bytes": ma.argument_size_in_bytes,
            "compiled": True,
           "argument_gib": round(ma.argument_size_in_bytes / GIB, 3),
           "output_gib": round(ma.output_size_in_bytes / GIB, 3),
           "alias_gib": round(ma.alias_size_in_bytes / GIB, 3), "temp_gib": round(ma.temp_size_in_bytes / GIB, 3),
           "host_argument_gib": round(ma.host_argument_size_in_bytes / GIB, 3),
           "compile_s": round(time.perf_counter() - t0, 1)}


# ---- the three phases -----------------------------------------------------------------------------------------

def measure(name: str, target: Target, shapes: Shapes) -> dict:
    devices = _devices(target)
    mcfg, rl = shapes.model, shapes.rl
    fsdp = len(devices)
    train_mesh = make_mesh(data=1, fsdp=fsdp, tensor=1, devices=devices)
    graphdef, params = nnx.split(abstract_model(mcfg, platform=target.platform), nnx.Param)
    state = jax.eval_shape(lambda p: init_train_state(p, rl, 0), params)
    state_sh = tree_shardings(state, train_mesh)
    compute = jnp.dtype(mcfg.compute_dtype)
    ref_dtype = jnp.dtype(mcfg.param_dtype) if rl.reference_dtype == "param" else compute
    ref = params if rl.reference_dtype == "param" else jax.eval_shape(
        lambda p: compute_params(graphdef, p, for_gradients=False), params)  # as the trainer's frozen copy
    ref_sh = tree_shardings(ref, train_mesh)

    def resident(phase: str):
        """Train state and π_ref as they sit during ``phase``: offloaded ones in host memory unless read."""
        host = "pinned_host"
        moments_host = "moments" in target.offload and phase != "update"
        ref_host = "reference" in target.offload and phase != "reference"
        placed_state = dataclasses.replace(
            _placed(state, state_sh), opt_state=_placed(state.opt_state, state_sh.opt_state,
                                                        host if moments_host else None))
        return placed_state, _placed(ref, ref_sh, host if ref_host else None)

    # --- rollout: the largest stage's prefill and last decode segment --------------------------------------
    layout = SamplingLayout(target.sampling_layout, mcfg.num_kv_heads, shapes.generation.sampling_tensor_parallel,
                            devices)
    smesh = layout.mesh or train_mesh
    stage = max(shapes.stage_rows, key=lambda s: shapes.stage_rows[s] * (shapes.stage_prompt[s] + shapes.reply))
    rows, prompt, reply = shapes.stage_rows[stage], shapes.stage_prompt[stage], shapes.reply
    state_r, ref_r = resident("rollout")
    if target.sampling_layout == "train":
        sampler_params, sampler_bytes = None, 0
    else:
        sp = jax.eval_shape(functools.partial(compute_params, graphdef), params)  # as SamplingLayout.place
        sampler_params = _placed(sp, state_shardings(sp, smesh))
        sampler_bytes = per_device_bytes(sampler_params)
    resident_bytes = {"train_state": per_device_bytes(_placed(state, state_sh)),
                      "reference": per_device_bytes(_placed(ref, ref_sh)), "sampler_weights": sampler_bytes}
    # What each phase's program must hold at least: the resident arrays in HBM (hand count from the shardings).
    on_device = {ph: per_device_bytes(_device_only(resident(ph))) + (sampler_bytes if ph == "rollout" else 0)
                 for ph in ("rollout", "reference", "update")}

    # The stage runs in sub-batches within the preset's KV budget (generation.kv_cache_tokens), as the sampler does.
    gen = shapes.generation
    buckets = Buckets()
    sampler = Sampler(mcfg.vocab_size, buckets=buckets, kv_cache_tokens=gen.kv_cache_tokens)
    sub = sampler.sub_batch_rows(rows, prompt, reply)
    sub_batches = -(-rows // sub)
    kv_per_slot = 2 * mcfg.num_layers * mcfg.num_kv_heads * mcfg.head_dim * compute.itemsize
    kv_shards = smesh.shape["tensor"]
    data = smesh.shape["data"]

    windows = buckets.decode_windows(prompt, reply)
    last, before = windows[-1], (windows[-2] if len(windows) > 1 else prompt)
    replicated = NamedSharding(smesh, P())
    scfg = SamplingConfig(max_new_tokens=reply)
    # The prefill (the sampler's own jitted function) with every resident array as an argument.
    rows_sh = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated if not x.shape else
                                             logical_sharding(("batch", "length")[:len(x.shape)], x.shape, smesh))
    tokens, mask = (rows_sh(jax.ShapeDtypeStruct((sub, prompt), d)) for d in (jnp.int32, jnp.bool_))
    done = rows_sh(jax.ShapeDtypeStruct((sub,), jnp.bool_))
    stop, eos = (jax.ShapeDtypeStruct(x.shape, jnp.int32, sharding=replicated)
                 for x in (sampler.matcher.transitions, np.array(sampler.matcher.eos_ids)))
    rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=replicated)
    first_row = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    values = jax.tree.map(lambda v: jax.ShapeDtypeStruct((), jnp.asarray(v).dtype, sharding=replicated), scfg)

    def prefill_phase(st, rf, sp, tokens, mask, done, stop, eos, rng, first_row, values):
        with activation_sharding(smesh):
            return _prefill(graphdef, st.params if sp is None else sp, tokens, mask, done, stop, eos, rng, first_row,
                            cfg=values)

    prefill_args = (state_r, ref_r, sampler_params, tokens, mask, done, stop, eos, rng, first_row, values)
    prefill_mem, prefill_c = program_memory(prefill_phase, *prefill_args)
    phases = {"rollout": {"stage": stage, "rows": rows, "sub_batch_rows": sub, "sub_batches": sub_batches,
                          "prompt_bucket": prompt, "reply_limit": reply, "decode_window": [before, last],
                          "kv_cache_tokens": gen.kv_cache_tokens,
                          "kv_cache_gib": round(kv_per_slot * last * sub / kv_shards / data / GIB, 3),
                          "prefill": prefill_mem}}
    decode_layout = None
    if prefill_c is not None:  # a TPU refusal leaves no decode state to compile from
        # The last decode segment: the cache grown from the previous window to the last, every array of the decode
        # state on the sampling mesh (rows over its batch axes, scalars and the key replicated).
        out = jax.eval_shape(prefill_phase, *prefill_args)
        layers = _placed(out.layers, prefill_c.output_shardings.layers)
        grown = lambda x: jax.ShapeDtypeStruct(x.shape[:2] + (before,) + x.shape[3:], x.dtype,
                                               sharding=logical_sharding(CACHE_AXES, x.shape, smesh))
        cache = dataclasses.replace(out.cache, k=tuple(map(grown, out.cache.k)), v=tuple(map(grown, out.cache.v)),
                                    valid=rows_sh(jax.ShapeDtypeStruct((sub, before), jnp.bool_)),
                                    index=rows_sh(out.cache.index))
        rest = {f.name: jax.tree.map(rows_sh, getattr(out, f.name)) for f in dataclasses.fields(out)
                if f.name not in ("cache", "layers")}
        dstate = dataclasses.replace(out, cache=cache, layers=(), **rest)

        def decode_phase(st, rf, sp, layers, dstate, stop, eos, values):
            with activation_sharding(smesh):
                return _decode(graphdef, st.params if sp is None else sp, layers, dstate, stop, eos, window=last,
                               cfg=values)

        decode_mem, decode_c = program_memory(decode_phase, state_r, ref_r, sampler_params, layers, dstate, stop, eos,
                                              values)
        phases["rollout"]["decode"] = decode_mem
        if decode_c is not None:
            coll = decode_collectives(decode_c.as_text(), model_weight_shapes(mcfg))
            decode_layout = {
                "layout": target.sampling_layout, "mesh": dict(smesh.shape),
                "per_decode_step_bytes_per_device": {k: coll["loop"][k]["bytes"] for k in ("all-gather", "all-reduce")},
                "per_segment_bytes_per_device": {k: coll["outside"][k]["bytes"] for k in ("all-gather", "all-reduce")},
                "full_weight_copy": coll["full_weight_copy"],
                "full_weight_copies": len(coll["full_weight_copies"])}
    parts = [p for p in (phases["rollout"]["prefill"], phases["rollout"].get("decode")) if p]
    phases["rollout"]["peak_gib"] = max(p["peak_gib"] for p in parts)

    # --- reference scoring: π_ref log-probs of one micro-batch of the longest rows -----------------------------
    state_f, ref_f = resident("reference")
    batch_rows = rl.micro_batch_size * fsdp
    batch = abstract_batch(batch_rows, shapes.train_len, batch_shardings(train_mesh))
    logprob = make_logprob_fn(graphdef, rl, ref, train_mesh)

    def reference_phase(st, rf, batch):
        return logprob(rf, batch)

    mem, _ = program_memory(reference_phase, state_f, ref_f, batch)
    phases["reference"] = {"rows": batch_rows, "seq_len": shapes.train_len, **mem}

    # --- update: one micro-batch's gradient + clip + AdamW, the state donated ------------------------------------
    state_u, ref_u = resident("update")
    step = make_train_step(graphdef, rl, state, train_mesh)

    def update_phase(st, rf, batch):
        return step(st, batch)

    mem, _ = program_memory(update_phase, state_u, ref_u, batch, donate=(0,))
    phases["update"] = {"rows": batch_rows, "seq_len": shapes.train_len, **mem}

    host = {ph: per_device_bytes(_host_only(resident(ph))) for ph in ("rollout", "reference", "update")}
    peak = max(phases[p]["peak_gib"] for p in phases)
    return {
        "device": target.device, "chips": len(devices), "chip_gib": target.chip_gib,
        "compiled_for": f"TPU topology {target.topology} (libtpu, deviceless)" if target.platform == "tpu" else
        "estimate: XLA memory analysis on fake CPU devices (bfloat16 matmuls widened to float32)",
        "train_mesh": dict(train_mesh.shape), "sampling_layout": target.sampling_layout,
        "reference_dtype": str(ref_dtype), "offload": list(target.offload),
        "host_gib_per_chip": {k: round(v / GIB, 3) for k, v in host.items()},
        "resident_gib_per_chip": {k: round(v / GIB, 3) for k, v in resident_bytes.items()},
        "resident_bytes_per_chip": resident_bytes, "on_device_resident_bytes": on_device,
        "phases": phases, "peak_gib": peak,
        "fits": all(phases[p]["peak_gib"] <= target.chip_gib and phases[p].get("compiled", True)
                    for p in ("reference", "update")) and all(x["peak_gib"] <= target.chip_gib and x["compiled"]
                                                                for x in parts),
        "decode_layout": decode_layout,
    }


def _memory_kind(x) -> str | None:
    return getattr(x.sharding, "memory_kind", None)


def _device_only(tree):
    return [x for x in jax.tree.leaves(tree) if _memory_kind(x) != "pinned_host"]


def _host_only(tree):
    return [x for x in jax.tree.leaves(tree) if _memory_kind(x) == "pinned_host"]


def main() -> None:
    shapes = smoke_shapes() if FLAGS.smoke else paper_shapes()
    result = {}
    if not FLAGS.smoke and os.path.exists(OUT):  # a subset run merges into the other targets' results
        with open(OUT) as f:
            result = json.load(f)
    result.update({
        "preset": "smoke (tiny Qwen2)" if FLAGS.smoke else f"paper ({FLAGS.env})",
        "model": dataclasses.asdict(shapes.model), "num_params": shapes.model.num_params(),
        "micro_batch_size": shapes.rl.micro_batch_size, "moment_dtypes": [shapes.rl.moment_dtype,
                                                                        shapes.rl.second_moment_dtype],
        "stage_rows": shapes.stage_rows, "stage_prompt_buckets": shapes.stage_prompt, "reply_limit": shapes.reply,
        "train_row_tokens": shapes.train_len,
        "peak_rule": "per phase: arguments + outputs - donated aliases + temporaries of its compiled program, whose "
                     "arguments are every array resident on the chip in that phase (each once)",
    })
    result.setdefault("machines", {})["tpu" if TPU else "cpu"] = machine_info(
        backend="libtpu deviceless compile on this CPU" if TPU else "cpu (fake devices)",
        host="2-core x86 VM, no accelerator", date="2026-12-07")
    mine = {}
    for name in SELECTED:  # written after each target: a 7B target compiles for many minutes
        target = SMOKE_TARGET if name == "smoke" else TARGETS[name]
        mine[name] = measure(name, target, shapes)
        if not FLAGS.smoke and os.path.exists(OUT):  # another run (CPU or TPU) may have written targets meanwhile
            with open(OUT) as f:
                saved = json.load(f)
            result["targets"] = saved.get("targets", {})
            result["machines"] = {**saved.get("machines", {}), **result["machines"]}
        result["targets"] = {**result.get("targets", {}), **mine}
        if not FLAGS.smoke:
            result["not_compiled"] = [n for n in TARGETS if n not in result["targets"]]
        write_result(OUT, result)


if __name__ == "__main__":
    main()
