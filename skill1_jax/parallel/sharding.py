"""Device meshes and the logical-axis → mesh-axis rule table.

Every parameter carries logical axis names (``embed``, ``heads``, ``mlp``, ...; see ``skill1_jax.model.qwen2``).
A rule table maps each logical name to a mesh axis (or ``None``: replicated), so FSDP / tensor parallelism is a
table change, never a model change. The mesh has three axes:

* ``data``   — pmap-style replicas: each holds a full copy of (its FSDP shard of) the params, batches are split;
* ``fsdp``   — params and optimizer state are sharded, batches are split too (ZeRO-3 style);
* ``tensor`` — Megatron-style tensor parallelism over heads / MLP width / vocabulary.

A dimension whose size is not divisible by its mesh axis falls back to replication for that dimension (e.g. 2 KV
heads on a tensor axis of 4), so one rule table serves every preset.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or a tuple of mesh axes). Batch is split over every replica-like axis.
DEFAULT_RULES: Mapping[str, Any] = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "layers": None,
    "head_dim": None,
    "norm": None,
    "length": None,
    "cache_length": None,
    # The vocabulary ops of training (embedding lookup, output projection + log-softmax) move rows instead of the
    # [V, D] tables: their rows are gathered over fsdp (split over data replicas only), the lookup reads its
    # fsdp-sharded table columns and the projection computes a vocabulary slice per fsdp (and tensor) device, so
    # no device ever holds a whole 152k × D table or its gradient (4 GiB of float32 at 7B).
    "vocab_rows": "data",
    "vocab_split": ("tensor", "fsdp"),
}


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes (GSPMD propagation); ``-1`` takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into data={data} fsdp={fsdp} tensor={tensor}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {math.prod(sizes)} "
                         f"devices, {len(devices)} available")
    return Mesh(np.array(devices).reshape(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def _axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Mapping[str, Any] = DEFAULT_RULES) -> P:
    """PartitionSpec for an array of ``shape`` whose dims carry logical ``names``.

    A mesh axis is used at most once per array (the first dim that asks for it wins) and only where it divides
    the dim, otherwise that dim is replicated.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        if name is not None and name not in rules:
            raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(rules)}")
        axes = rules.get(name) if name is not None else None
        axes_t = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        axes_t = tuple(a for a in axes_t if a not in used and mesh.shape[a] > 1)
        if axes_t and dim % _axis_size(mesh, axes_t) == 0:
            used.update(axes_t)
            spec.append(axes_t[0] if len(axes_t) == 1 else axes_t)
        else:
            spec.append(None)
    return P(*spec)


def logical_sharding(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                     rules: Mapping[str, Any] = DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))


def state_shardings(state: Any, mesh: Mesh, rules: Mapping[str, Any] = DEFAULT_RULES) -> Any:
    """NamedShardings for an nnx State (concrete or abstract) from each Variable's ``out_sharding`` metadata."""

    def one(var):
        names = var.get_metadata().get("out_sharding")
        shape = var.get_value().shape
        if names is None:
            names = (None,) * len(shape)
        return var.replace(logical_sharding(names, shape, mesh, rules))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def tree_shardings(tree: Any, mesh: Mesh, rules: Mapping[str, Any] = DEFAULT_RULES) -> Any:
    """NamedShardings for any pytree mixing nnx Variables and plain arrays (e.g. an optax state over nnx params).

    Variables are sharded by their logical names (as ``state_shardings``); plain array leaves (step counters,
    RNG keys) are replicated.
    """
    replicated = NamedSharding(mesh, P())

    def one(x):
        if isinstance(x, nnx.Variable):
            return state_shardings(x, mesh, rules)
        return replicated

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules: Mapping[str, Any] = DEFAULT_RULES) -> nnx.Module:
    """Moves ``model``'s variables onto ``mesh`` following the rule table (in place) and returns it."""
    state = nnx.state(model)
    shardings = state_shardings(state, mesh, rules)
    nnx.update(model, jax.device_put(state, shardings))
    return model


# ---- activation constraints ---------------------------------------------------------------------------------
# The active (mesh, rules) pair for activation constraints. Set by `activation_sharding`; when none is active
# (single device) constraints are no-ops. Sharding tests on 8 CPU devices run with one active, so the constrained
# path is exercised on CPU too.
_ACTIVE: contextvars.ContextVar[tuple[Mesh, Mapping[str, Any]] | None] = contextvars.ContextVar(
    "skill1_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Mapping[str, Any] = DEFAULT_RULES):
    """Within this context (at trace time), ``constrain`` pins activations to the rule table on ``mesh``."""
    token = _ACTIVE.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_activation_sharding() -> tuple[Mesh, Mapping[str, Any]] | None:
    """The (mesh, rules) of the enclosing ``activation_sharding`` context, or None (e.g. for ``shard_map`` kernels)."""
    return _ACTIVE.get()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names, when an activation-sharding context is active."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, logical_sharding(names, x.shape, mesh, rules))
