"""Adam's moment scaling with the moments stored in a chosen dtype (bfloat16 first and/or second moment).

optax's ``scale_by_adam`` stores the first moment in ``mu_dtype`` but always keeps the second in the parameter
dtype. Storing ν in bfloat16 too saves 2 more bytes per parameter (1.8 GiB per device for Qwen2.5-7B on 8-way
FSDP), but round-to-nearest breaks its moving average: with β2 = 0.999 a step moves ν by 0.1 %, less than half a
bfloat16 ulp (0.2–0.4 %), so a rounded ν only grows on large jumps and never decays (after a 16× drop in g² it
stays ~4× too large). A bfloat16 ν is therefore stochastically rounded, which is unbiased (E[stored] = ν). The
first moment (β1 = 0.9: 10 % steps) is rounded to nearest, as optax does. Each step widens the stored moments to
float32, updates them and computes the update from the unrounded values; the state is optax's
``ScaleByAdamState``, so checkpoints keep their structure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
_SEED = 0x5EED  # stochastic rounding draws from fold_in(key(_SEED), step, leaf): deterministic and resumable


def stochastic_round_bf16(x: Array, key: Array) -> Array:
    """float32 ``x`` to bfloat16, rounded up or down with probability proportional to proximity (unbiased)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    noise = jax.random.bits(key, x.shape, jnp.uint32) >> 16  # uniform over the 16 bits bfloat16 drops
    rounded = jax.lax.bitcast_convert_type((bits + noise) & jnp.uint32(0xFFFF0000), jnp.float32)
    return rounded.astype(jnp.bfloat16)  # exact: the low 16 bits are zero


def _store(tree, dtype, key: Array | None):
    if key is None or jnp.dtype(dtype) != jnp.bfloat16:
        return jax.tree.map(lambda x: x.astype(dtype), tree)
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten([stochastic_round_bf16(x, jax.random.fold_in(key, i)) for i, x in enumerate(leaves)])


def scale_by_adam(b1: float, b2: float, eps: float, mu_dtype: str = "float32",
                  nu_dtype: str = "float32") -> optax.GradientTransformation:
    """optax ``scale_by_adam`` (no eps_root, no Nesterov) with μ stored in ``mu_dtype`` and ν in ``nu_dtype``.

    With both float32 it computes exactly what ``optax.scale_by_adam`` does.
    """

    def init(params):
        zeros = lambda dtype: jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(mu_dtype), nu=zeros(nu_dtype))

    def update(updates, state, params=None):
        del params
        # Widen the stored moments first: b2 * nu in bfloat16 would round the decay away before the add.
        widen = lambda tree: jax.tree.map(lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32)), tree)
        mu = optax.tree.update_moment(updates, widen(state.mu), b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, widen(state.nu), b2, 2)
        count = optax.safe_increment(state.count)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        key = jax.random.fold_in(jax.random.key(_SEED), count)
        return updates, optax.ScaleByAdamState(count=count, mu=_store(mu, mu_dtype, None),
                                               nu=_store(nu, nu_dtype, key))

    return optax.GradientTransformation(init, update)
