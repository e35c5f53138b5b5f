"""RLConfig.moment_dtype / second_moment_dtype: AdamW's moments in bfloat16 (``rl.adam``); float32 is optax's."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skill1_jax.rl.adam import stochastic_round_bf16
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.train_step import make_optimizer


def _params_and_grads():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=8), jnp.float32)}
    # Small gradients: global norm < 1, so the clip leaves them unchanged.
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.01, jnp.float32), params)
    return params, grads


def test_bf16_first_moment_alone_keeps_nu_in_float32():
    params, _ = _params_and_grads()
    adam_state = make_optimizer(RLConfig(moment_dtype="bfloat16")).init(params)[1][0]
    assert {x.dtype for x in jax.tree.leaves(adam_state.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam_state.nu)} == {jnp.dtype(jnp.float32)}


def test_float32_moments_equal_optax_adamw_bit_for_bit():
    params, grads = _params_and_grads()
    cfg = RLConfig(learning_rate=1e-3)
    ours = make_optimizer(cfg)
    ref = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                      optax.adamw(cfg.learning_rate, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay))
    s_ours, s_ref, p_ours, p_ref = ours.init(params), ref.init(params), params, params
    for step in range(3):
        g = jax.tree.map(lambda x: x * (step + 1), grads)
        u_ours, s_ours = ours.update(g, s_ours, p_ours)
        u_ref, s_ref = ref.update(g, s_ref, p_ref)
        p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)
    for a, b in zip(jax.tree.leaves((p_ours, s_ours)), jax.tree.leaves((p_ref, s_ref))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bf16_second_moment_is_stored_in_bf16():
    params, _ = _params_and_grads()
    adam_state = make_optimizer(RLConfig(moment_dtype="bfloat16", second_moment_dtype="bfloat16")).init(params)[1][0]
    assert {x.dtype for x in jax.tree.leaves((adam_state.mu, adam_state.nu))} == {jnp.dtype(jnp.bfloat16)}


def test_stochastic_rounding_picks_a_neighbour_and_is_unbiased():
    x = jnp.asarray(np.random.default_rng(1).lognormal(size=64), jnp.float32)
    draws = jax.vmap(lambda k: stochastic_round_bf16(x, k))(jax.random.split(jax.random.key(0), 4000))
    nearest = x.astype(jnp.bfloat16)
    below = jnp.where(nearest.astype(jnp.float32) <= x, nearest, jnp.nextafter(nearest, jnp.bfloat16(-jnp.inf)))
    above = jnp.nextafter(below, jnp.bfloat16(jnp.inf))
    assert bool(jnp.all((draws == below) | (draws == above)))
    ulp = above.astype(jnp.float32) - below.astype(jnp.float32)
    # Mean of 4000 draws: standard error <= ulp / (2 * sqrt(4000)) < ulp / 120.
    mean = draws.astype(jnp.float32).mean(0)
    np.testing.assert_array_less(np.asarray(jnp.abs(mean - x)), np.asarray(ulp / 25))


def test_bf16_second_moment_tracks_a_decaying_average():
    # With beta2 = 0.999 a round-to-nearest bf16 nu cannot decay (each step is below half an ulp); after g^2 drops
    # 16x it would stay ~4x too large. The stochastically rounded nu follows the float32 one on average.
    rng = np.random.default_rng(0)
    scale = jnp.asarray(np.exp(rng.normal(size=2048)), jnp.float32)
    params = {"w": jnp.zeros(2048, jnp.float32)}
    txs = {d: make_optimizer(RLConfig(second_moment_dtype=d, max_grad_norm=1e9)) for d in ("float32", "bfloat16")}

    @jax.jit
    def run(key):
        def step(states, t):
            g = {"w": jax.random.normal(jax.random.fold_in(key, t), (2048,)) * scale * jnp.where(t < 600, 2., .5)}
            return tuple(tx.update(g, s, params)[1] for tx, s in zip(txs.values(), states)), None
        states, _ = jax.lax.scan(step, tuple(tx.init(params) for tx in txs.values()), jnp.arange(1200))
        return [s[1][0].nu["w"].astype(jnp.float32) for s in states]

    nu32, nu16 = run(jax.random.key(0))
    ratio = np.asarray(nu16 / nu32)
    assert abs(ratio.mean() - 1.0) < 0.01, ratio.mean()


def test_bf16_moment_rounds_only_the_stored_mu():
    # optax computes each step in float32 and casts mu to mu_dtype when storing it: the first update is the
    # float32 one and the stored mu is the float32 mu rounded to bf16; the rounding enters from step 2 on.
    params, grads = _params_and_grads()
    results = {}
    for dtype in ("float32", "bfloat16"):
        tx = make_optimizer(RLConfig(moment_dtype=dtype, learning_rate=1e-3))
        updates, state = tx.update(grads, tx.init(params), params)
        results[dtype] = (updates, state[1][0].mu)
    (u32, mu32), (u16, mu16) = results["float32"], results["bfloat16"]
    for name in params:
        np.testing.assert_array_equal(np.asarray(u16[name]), np.asarray(u32[name]), err_msg=name)
        np.testing.assert_array_equal(np.asarray(mu16[name]), np.asarray(mu32[name].astype(jnp.bfloat16)),
                                      err_msg=name)


def test_moment_dtypes_are_validated():
    with pytest.raises(ValueError, match="RLConfig.moment_dtype must be one of"):
        RLConfig(moment_dtype="float16")
    with pytest.raises(ValueError, match="RLConfig.second_moment_dtype must be one of"):
        RLConfig(second_moment_dtype="float16")
