"""RLConfig.moment_dtype: AdamW's first moment in bfloat16 (optax ``mu_dtype``), the second kept in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.train_step import make_optimizer


def _params_and_grads():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=8), jnp.float32)}
    # Small gradients: global norm < 1, so the clip leaves them unchanged.
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.01, jnp.float32), params)
    return params, grads


def test_bf16_moments_store_mu_in_bf16_and_nu_in_param_dtype():
    params, _ = _params_and_grads()
    adam_state = make_optimizer(RLConfig(moment_dtype="bfloat16")).init(params)[1][0]
    assert {x.dtype for x in jax.tree.leaves(adam_state.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam_state.nu)} == {jnp.dtype(jnp.float32)}


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


def test_moment_dtype_is_validated():
    with pytest.raises(ValueError, match="RLConfig.moment_dtype must be one of"):
        RLConfig(moment_dtype="float16")
