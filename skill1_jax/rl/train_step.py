"""The jitted Skill1 policy update: optax AdamW, gradient accumulation over micro-batches, non-finite skip.

Two drivers of the same loss, accumulation and AdamW update:
  * ``make_train_step`` returns one jitted ``step(state, batch) -> (state, metrics)``: one optimizer update on one
    mini-batch of a single shape, split into micro-batches (``micro_batch_size`` rows per device) whose gradients
    are summed inside a ``lax.scan``;
  * ``make_ragged_update`` returns ``update(state, micro_batches) -> (state, metrics)``: one optimizer update over
    micro-batches of *different* lengths (``rl.rows.mini_batches`` groups a mini-batch's rows by length), one
    jitted gradient call per micro-batch, summed in place. RL rows are ragged — a re-rank or distill prompt is
    several times an action's — and padding every micro-batch to the longest row of the mini-batch multiplies the
    update's cost; the trainer uses this driver.
In both, each micro-batch loss is normalised by the *mini-batch* token weights (counts, unless ``rollout-mean``), so the sum is exactly the
full-batch gradient; it is clipped to global norm ``max_grad_norm`` and applied with AdamW. Params are float32
masters; the forward computes in ``ModelConfig.compute_dtype`` (the model casts each weight on use).

With a mesh, state and batch shardings come from the logical-axis rule table (``skill1_jax.parallel.sharding``):
FSDP shards params, gradients and both Adam moments; the batch is split over the ``batch`` axes. The state is
donated, so the update happens in place. ``rl.pmap_step`` holds the replicated (data-parallel) layout of both
drivers (``train.update_layout``).

If the loss or the gradient norm is not finite, params and optimizer state are returned bit-identical and
``metrics["skipped"]`` is 1 (``step`` still advances: it counts calls, not applied updates).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from skill1_jax.model.qwen2 import compute_params
from skill1_jax.parallel.sharding import DEFAULT_RULES, activation_sharding, tree_shardings
from skill1_jax.rl.adam import scale_by_adam
from skill1_jax.rl.batch import TrainBatch, batch_shardings, split_micro_batches
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.logprobs import token_logprobs
from skill1_jax.rl.loss import LossNormalizers, Metrics, loss_normalizers, make_loss_fn

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything one update reads and writes: float32 params (nnx State), AdamW state, step, RNG key."""

    params: nnx.State
    opt_state: Any
    step: Array  # int32 scalar: number of train_step calls
    rng: Array  # base key; per-step randomness is fold_in(rng, step)


def make_optimizer(cfg: RLConfig) -> optax.GradientTransformation:
    """Global-norm clip then AdamW with a constant learning rate (paper Appendix C: lr 1e-6; the
    verl trainer's wd 0.01 and clip 1.0).

    AdamW is optax's ``adamw`` chain with the moments stored in ``cfg.moment_dtype`` / ``cfg.second_moment_dtype``
    (``rl.adam``)."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.chain(scale_by_adam(cfg.adam_b1, cfg.adam_b2, cfg.adam_eps, cfg.moment_dtype, cfg.second_moment_dtype),
                    optax.add_decayed_weights(cfg.weight_decay), optax.scale_by_learning_rate(cfg.learning_rate)),
    )


def init_train_state(params: nnx.State, cfg: RLConfig, rng: Array | int = 0) -> TrainState:
    """A fresh state (works under ``jax.eval_shape`` and ``jax.jit(..., out_shardings=...)`` too)."""
    key = jax.random.key(rng) if isinstance(rng, int) else rng
    return TrainState(params=params, opt_state=make_optimizer(cfg).init(params),
                      step=jnp.zeros((), jnp.int32), rng=key)


def train_state_shardings(state: TrainState, mesh: Mesh, rules: Mapping[str, Any] = DEFAULT_RULES) -> TrainState:
    """NamedShardings of a (concrete or abstract) state: params and Adam moments by logical axes, scalars replicated."""
    return tree_shardings(state, mesh, rules)


def batch_devices(mesh: Mesh | None, rules: Mapping[str, Any] = DEFAULT_RULES) -> int:
    """Devices a batch's rows are split over: the product of the rule table's ``batch`` mesh axes (1 without a mesh)."""
    if mesh is None:
        return 1
    axes = rules["batch"]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return math.prod(mesh.shape[a] for a in axes)


def num_micro_batches(rows: int, cfg: RLConfig, batch_devices: int) -> int:
    """Micro-steps per update: rows / (micro_batch_size × devices the batch is split over)."""
    per_step = cfg.micro_batch_size * batch_devices
    if rows % per_step:
        raise ValueError(f"mini-batch of {rows} rows is not a multiple of micro_batch_size {cfg.micro_batch_size} "
                         f"× {batch_devices} data-parallel devices; pad the batch or change micro_batch_size")
    return rows // per_step


def accumulate_gradients(loss_fn: Callable, params: nnx.State, batch: TrainBatch, norm: LossNormalizers,
                         num_micro: int, constrain_micro: Callable = lambda x: x,
                         constrain_grads: Callable = lambda g: g,
                         cast: Callable = lambda p: p) -> tuple[nnx.State, Metrics]:
    """Σ over micro-batches of (∇loss, metrics); exact for the mini-batch because ``norm`` is the mini-batch's.

    ``cast`` (e.g. ``model.qwen2.compute_params``) is applied to the params once per update; gradients are taken
    with respect to its result and summed into a float32 accumulator."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    cast_params = cast(params)

    def body(carry, micro):
        grads_acc, metrics_acc = carry
        (_, metrics), grads = grad_fn(cast_params, constrain_micro(micro), norm)
        grads_acc = constrain_grads(jax.tree.map(lambda a, g: a + g.astype(a.dtype), grads_acc, grads))
        return (grads_acc, jax.tree.map(jnp.add, metrics_acc, metrics)), None

    micro = split_micro_batches(batch, num_micro)
    first = jax.tree.map(lambda x: x[0], micro)
    metrics_shape = jax.eval_shape(lambda: loss_fn(params, first, norm)[1])
    init = (constrain_grads(jax.tree.map(jnp.zeros_like, params)),
            jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape))
    (grads, metrics), _ = jax.lax.scan(body, init, micro)
    return grads, metrics


def apply_update(tx: optax.GradientTransformation, state: TrainState, grads: nnx.State,
                 metrics: Metrics) -> tuple[TrainState, Metrics]:
    """Clip + AdamW; keeps params/opt state bit-identical when the loss or the gradient norm is not finite."""
    grad_norm = optax.tree.norm(grads)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    new_state = TrainState(params=keep(new_params, state.params), opt_state=keep(new_opt, state.opt_state),
                           step=state.step + 1, rng=state.rng)
    metrics = {**metrics, "grad/norm": grad_norm, "skipped": (~ok).astype(jnp.float32),
               "params/norm": optax.tree.norm(new_state.params)}
    return new_state, metrics


def count_metrics(norm: LossNormalizers) -> Metrics:
    """Mini-batch token counts per term, as metrics."""
    return {f"tokens/{k}": v for k, v in norm.counts.items()}


def make_train_step(graphdef: nnx.GraphDef, cfg: RLConfig, state: TrainState, mesh: Mesh | None = None,
                    rules: Mapping[str, Any] = DEFAULT_RULES) -> Callable[[TrainState, TrainBatch], tuple]:
    """The jitted, donated ``step(state, batch) -> (state, metrics)``.

    Args:
      graphdef: the model's graph (``nnx.split(model, nnx.Param)[0]``).
      cfg: RL hyperparameters.
      state: a concrete or abstract ``TrainState``; only its structure and shapes are used (for shardings).
      mesh: a (data, fsdp, tensor) mesh, or None for a single device.
      rules: logical-axis → mesh-axis rule table.
    """
    loss_fn = make_loss_fn(graphdef, cfg)
    tx = make_optimizer(cfg)
    ndev = batch_devices(mesh, rules)
    # Gradients per micro-batch in the compute dtype (bfloat16: the 7B update's largest temporary halves).
    cast = functools.partial(compute_params, graphdef)

    if mesh is None:
        def step(state: TrainState, batch: TrainBatch):
            norm = loss_normalizers(batch)
            grads, metrics = accumulate_gradients(loss_fn, state.params, batch, norm,
                                                  num_micro_batches(batch.num_rows, cfg, ndev), cast=cast)
            return apply_update(tx, state, grads, {**metrics, **count_metrics(norm)})

        return jax.jit(step, donate_argnums=(0,))

    state_sh = train_state_shardings(state, mesh, rules)
    batch_sh = batch_shardings(mesh, rules)
    replicated = NamedSharding(mesh, P())

    def sharded_step(state: TrainState, batch: TrainBatch):
        # Constraints in the model are read at trace time, so the context is entered inside the traced function.
        with activation_sharding(mesh, rules):
            norm = loss_normalizers(batch)
            micro_constraint = lambda mb: jax.lax.with_sharding_constraint(mb, batch_sh)
            # Keep the gradient accumulator FSDP-sharded like the params (never a replicated full copy).
            grad_constraint = lambda g: jax.lax.with_sharding_constraint(g, state_sh.params)
            grads, metrics = accumulate_gradients(loss_fn, state.params, batch, norm,
                                                  num_micro_batches(batch.num_rows, cfg, ndev),
                                                  micro_constraint, grad_constraint, cast)
            return apply_update(tx, state, grads, {**metrics, **count_metrics(norm)})

    return jax.jit(sharded_step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, replicated),
                   donate_argnums=(0,))


def make_ragged_update(graphdef: nnx.GraphDef, cfg: RLConfig, state: TrainState, mesh: Mesh | None = None,
                       rules: Mapping[str, Any] = DEFAULT_RULES
                       ) -> Callable[[TrainState, Sequence[TrainBatch]], tuple[TrainState, Metrics]]:
    """``update(state, micro_batches) -> (state, metrics)``: one optimizer update over micro-batches of any lengths.

    Every micro-batch holds ``micro_batch_size`` × (batch devices) rows. Programs compiled: one gradient program
    per micro-batch shape (bounded by the length ladder of ``rl.rows``), one AdamW apply and a trivial zeros
    program. The state is donated.
    Arguments as in ``make_train_step``.
    """
    loss_fn = make_loss_fn(graphdef, cfg)
    cast = functools.partial(compute_params, graphdef)
    tx = make_optimizer(cfg)
    ndev = batch_devices(mesh, rules)
    if mesh is None:
        constrain_micro = constrain_grads = lambda x: x

        def jit(fn, donate=(), out_shardings=None):
            return jax.jit(fn, donate_argnums=donate)
    else:
        state_sh = train_state_shardings(state, mesh, rules)
        batch_sh = batch_shardings(mesh, rules)
        constrain_micro = lambda mb: jax.lax.with_sharding_constraint(mb, batch_sh)
        constrain_grads = lambda g: jax.lax.with_sharding_constraint(g, state_sh.params)

        def jit(fn, donate=(), out_shardings=None):
            def in_mesh(*args):  # the model's constraints are read at trace time
                with activation_sharding(mesh, rules):
                    return fn(*args)
            return jax.jit(in_mesh, donate_argnums=donate, out_shardings=out_shardings)

    def grads_of(params, micro, norm):  # one micro-batch: the scan driver's accumulation with a single step
        return accumulate_gradients(loss_fn, params, micro, norm, 1, constrain_micro, constrain_grads, cast)

    def zeros(params, micro, norm):  # an empty accumulator (a trivial program; saves a gradient program per shape)
        grads, metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                      jax.eval_shape(grads_of, params, micro, norm))
        return constrain_grads(grads), metrics

    def add(params, acc, micro, norm):
        grads, metrics = grads_of(params, micro, norm)
        return constrain_grads(jax.tree.map(jnp.add, acc[0], grads)), jax.tree.map(jnp.add, acc[1], metrics)

    def apply(state, acc, norm):
        grads, metrics = acc
        return apply_update(tx, state, grads, {**metrics, **count_metrics(norm)})

    apply_jit = jit(apply, donate=(0,),
                    out_shardings=None if mesh is None else (state_sh, NamedSharding(mesh, P())))
    return ragged_update_loop(cfg, ndev, jit(zeros), jit(add, donate=(1,)), apply_jit)


def ragged_update_loop(cfg: RLConfig, batch_devices: int, zeros: Callable, add: Callable, apply: Callable
                       ) -> Callable[[TrainState, Sequence[TrainBatch]], tuple[TrainState, Metrics]]:
    """The host loop of a ragged update over jitted pieces: ``zeros(params, micro, norm) -> acc``,
    ``add(params, acc, micro, norm) -> acc`` (donates ``acc``) and ``apply(state, acc, norm) -> (state, metrics)``.

    It checks every micro-batch's row count, sums the mini-batch's loss normalizers over its micro-batches, and
    accumulates each micro-batch's gradient before the one optimizer update. Shared by the mesh layout
    (``make_ragged_update``) and the replicated layout (``rl.pmap_step.make_pmap_ragged_update``).
    """
    normalizers = jax.jit(loss_normalizers)

    def update(state: TrainState, micro_batches: Sequence[TrainBatch]) -> tuple[TrainState, Metrics]:
        if not micro_batches:
            raise ValueError("an update needs at least one micro-batch")
        for mb in micro_batches:
            num_micro_batches(mb.num_rows, cfg, batch_devices)  # validates the row count
            if mb.num_rows != micro_batches[0].num_rows:
                raise ValueError(f"micro-batches differ in rows ({mb.num_rows} vs {micro_batches[0].num_rows})")
        # Mini-batch denominators: token and row counts add over micro-batches.
        norm = functools.reduce(lambda a, b: jax.tree.map(jnp.add, a, b), map(normalizers, micro_batches))
        acc = zeros(state.params, micro_batches[0], norm)
        for mb in micro_batches:
            acc = add(state.params, acc, mb, norm)
        return apply(state, acc, norm)

    return update


def make_logprob_fn(graphdef: nnx.GraphDef, cfg: RLConfig, params: nnx.State, mesh: Mesh | None = None,
                    rules: Mapping[str, Any] = DEFAULT_RULES) -> Callable[[nnx.State, TrainBatch], Array]:
    """Jitted ``logprob_fn(params, batch) -> logp [B, T]`` (``rl.batch`` alignment), e.g. reference log-probs.

    Runs the training forward in micro-batches of ``micro_batch_size`` rows per device (memory as in training);
    rows must divide accordingly. ``params`` (concrete or abstract) gives the sharding structure.
    """
    ndev = batch_devices(mesh, rules)

    def logprobs(params: nnx.State, batch: TrainBatch) -> Array:
        model = nnx.merge(graphdef, params)
        micro = split_micro_batches(batch, num_micro_batches(batch.num_rows, cfg, ndev))
        one = lambda mb: token_logprobs(model, mb.tokens, mb.positions, mb.attention_mask, cfg.logprob_chunk,
                                        cfg.temperature, segment_ids=mb.row_id)[0]
        logp = jax.lax.map(one, micro)  # [n, B / n, T]; undo the strided split
        return jnp.swapaxes(logp, 0, 1).reshape(batch.num_rows, batch.seq_len)

    if mesh is None:
        return jax.jit(logprobs)
    batch_sh = batch_shardings(mesh, rules)

    def sharded(params, batch):
        with activation_sharding(mesh, rules):
            return logprobs(params, batch)

    return jax.jit(sharded, in_shardings=(tree_shardings(params, mesh, rules), batch_sh),
                   out_shardings=batch_sh.tokens)
