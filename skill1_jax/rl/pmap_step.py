"""The pmap-style data-parallel update: replicated params, a batch shard per device, all-reduced gradients.

For models that fit on one chip this is the classic data-parallel layout, written with ``jax.shard_map`` over a
1-D ``data`` axis (``jax.pmap`` is implemented on top of ``shard_map`` since JAX 0.8 and its documentation points
here). It calls the same loss, gradient accumulation and AdamW update as ``skill1_jax.rl.train_step``; after two
steps it matches the FSDP-sharded and the single-device step to float32 rounding (tests/test_parallel_steps.py).

Gradient all-reduce. The per-device loss of a shard is normalised by the *global* token counts (``psum`` of the
per-device counts), so the global gradient is the ``psum`` of the per-device gradients. This equals ``pmean`` of
per-device gradients only when every device holds the same number of tokens of every term; with variable-length
RL responses it does not, and a ``pmean`` of locally normalised losses would weight short shards' tokens more.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from skill1_jax.rl.batch import TrainBatch
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.loss import loss_normalizers, make_loss_fn
from skill1_jax.rl.train_step import (TrainState, accumulate_gradients, apply_update, count_metrics,
                                      make_optimizer, num_micro_batches)

AXIS = "data"


def replica_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all)."""
    return Mesh(np.array(list(jax.devices() if devices is None else devices)), (AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Explicitly copies ``tree`` to every device of ``mesh`` (allowed under ``jax_transfer_guard``)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_rows(batch: TrainBatch, mesh: Mesh) -> TrainBatch:
    """Explicitly splits the batch rows over the ``data`` axis."""
    return jax.device_put(batch, NamedSharding(mesh, P(AXIS)))


def make_pmap_train_step(graphdef: nnx.GraphDef, cfg: RLConfig,
                         mesh: Mesh | None = None) -> Callable[[TrainState, TrainBatch], tuple]:
    """Jitted ``step(state, batch) -> (state, metrics)`` with pmap semantics over ``mesh``'s ``data`` axis.

    ``state`` is replicated (``replicate``), ``batch`` rows are split over devices (``shard_rows``); each device
    accumulates ``micro_batch_size``-row micro-batches of its shard. The state is donated.
    """
    mesh = replica_mesh() if mesh is None else mesh
    loss_fn = make_loss_fn(graphdef, cfg)
    tx = make_optimizer(cfg)

    def local_step(state: TrainState, batch: TrainBatch):
        norm = jax.tree.map(lambda c: jax.lax.psum(c, AXIS), loss_normalizers(batch))
        grads, metrics = accumulate_gradients(loss_fn, state.params, batch, norm,
                                              num_micro_batches(batch.num_rows, cfg, 1))
        grads, metrics = jax.lax.psum((grads, metrics), AXIS)
        return apply_update(tx, state, grads, {**metrics, **count_metrics(norm)})

    # check_vma=False gives pmap's semantics: per-device gradients that we all-reduce explicitly. (With it on,
    # shard_map would psum the gradients of replicated params implicitly, in the transpose of their broadcast.)
    step = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), check_vma=False)
    return jax.jit(step, donate_argnums=(0,))
