"""Attention implementations agree with the dense reference; dispatch picks the kernel by platform; memory claim."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax.model import attention as A
from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2, positions_from_mask
from skill1_jax.parallel.sharding import activation_sharding, make_mesh

# bf16 keeps 8 significant bits: we allow 2 bf16 ulps of the largest reference magnitude (2^-6 · max|ref|).
BF16_TOL = 2.0 ** -6


def _inputs(b=2, t=37, s=None, n=4, k=2, h=16, pad=(0, 9), seed=0):
    """q, k, v and a causal + left-padding mask (row 1 has ``pad[1]`` padding tokens, so fully-masked rows)."""
    s = t if s is None else s
    rng = np.random.default_rng(seed)
    q, kk, v = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in
                ((b, t, n, h), (b, s, k, h), (b, s, k, h)))
    valid = np.ones((b, s), bool)
    for row, p in enumerate(pad):
        valid[row, :p] = False
    causal = np.arange(s)[None, :] <= (s - t + np.arange(t))[:, None]  # queries are the last t slots
    mask = jnp.asarray(causal[None] & valid[:, None, :])
    weights = jnp.asarray(rng.normal(size=(b, t, n, h)), jnp.float32)
    return q, kk, v, mask, weights


def _value_and_grads(fn, q, k, v, mask, weights, dtype=jnp.float32):
    """Output and ∂(Σ w·out)/∂(q, k, v) in float32, computed in ``dtype``."""
    q, k, v = (x.astype(dtype) for x in (q, k, v))

    @jax.jit
    def run(q, k, v):
        loss = lambda q, k, v: jnp.sum(fn(q, k, v, mask).astype(jnp.float32) * weights)
        return fn(q, k, v, mask), *jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    return [np.asarray(x, np.float32) for x in run(q, k, v)]


def _blocked(block):
    return lambda q, k, v, mask: A.blocked_attention(q, k, v, mask, block)


@pytest.mark.parametrize("block", [8, 64])
def test_blocked_equals_dense_in_float32_forward_and_gradient(block):
    # T = 37: 5 padded tiles of 8, or one tile; row 1 has 9 fully-masked padding queries.
    q, k, v, mask, w = _inputs()
    ref = _value_and_grads(A.dense_attention, q, k, v, mask, w)
    got = _value_and_grads(_blocked(block), q, k, v, mask, w)
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got):
        assert np.isfinite(g).all(), name
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5, err_msg=name)


def test_blocked_equals_dense_for_a_cache_prefill_mask():
    # 12 new queries at slots 20..31 of a 32-slot cache: T != S and the causal diagonal is offset.
    q, k, v, mask, w = _inputs(t=12, s=32, pad=(3, 25))
    ref = _value_and_grads(A.dense_attention, q, k, v, mask, w)
    got = _value_and_grads(_blocked(8), q, k, v, mask, w)
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5, err_msg=name)


def test_blocked_in_bfloat16_is_within_two_ulps_of_the_float32_reference():
    q, k, v, mask, w = _inputs(t=100)
    ref = _value_and_grads(A.dense_attention, q, k, v, mask, w)
    got = _value_and_grads(_blocked(32), q, k, v, mask, w, dtype=jnp.bfloat16)
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got):
        assert np.abs(g - r).max() <= BF16_TOL * np.abs(r).max(), name


def test_blocked_gradient_never_materialises_the_score_matrix():
    # One [N, T, T] float32 score matrix is 16 MiB here; the blocked step's temporaries must stay far below it.
    b, t, n, k, h = 1, 1024, 4, 2, 16
    scores_bytes = b * n * t * t * 4
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in ((b, t, n, h), (b, t, k, h), (b, t, k, h))]
    args.append(jax.ShapeDtypeStruct((b, t, t), jnp.bool_))

    def temp_bytes(fn):
        grad = jax.grad(lambda q, k, v, m: jnp.sum(fn(q, k, v, m)), argnums=(0, 1, 2))
        return jax.jit(grad).lower(*args).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(A.dense_attention) >= scores_bytes
    assert temp_bytes(_blocked(128)) < scores_bytes / 8


def test_splash_kernel_matches_dense_on_real_rows_under_a_sharded_batch():
    # The TPU kernel in the Pallas interpreter, wrapped in shard_map over a 2-device batch axis. Padding rows
    # differ by design (they attend to padding), so only real-token rows are compared; the loss ignores the rest.
    q, k, v, mask, w = _inputs(t=128, h=32, pad=(0, 50))
    real = np.asarray(mask).any(axis=1)  # [B, T]: real tokens
    w = w * real[:, :, None, None]
    ref = _value_and_grads(A.dense_attention, q, k, v, mask, w)
    mesh = make_mesh(data=1, fsdp=2, tensor=1, devices=jax.devices()[:2])
    splash = lambda q, k, v, mask: A.splash_attention(q, k, v, mask, 128, interpret=True)
    with activation_sharding(mesh):
        got = _value_and_grads(splash, q, k, v, mask, w)
    np.testing.assert_allclose(got[0][real], ref[0][real], atol=1e-5, rtol=1e-5)
    for name, r, g in zip(("dq", "dk", "dv"), ref[1:], got[1:]):
        np.testing.assert_allclose(g, r, atol=2e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("platform, q_len, dtype, head_dim, expected", [
    ("cpu", 4096, jnp.bfloat16, 128, "blocked"),
    ("gpu", 4096, jnp.bfloat16, 128, "cudnn"),
    ("gpu", 4096, jnp.float32, 128, "blocked"),     # cuDNN flash attention is fp16/bf16 only
    ("gpu", 4096, jnp.bfloat16, 256, "blocked"),    # head dim beyond cuDNN's portable limit
    ("tpu", 4096, jnp.bfloat16, 128, "splash"),
    ("tpu", 1400, jnp.bfloat16, 128, "blocked"),    # no multiple of 128 divides the length
    ("tpu", 512, jnp.bfloat16, 128, "dense"),       # short: one 512×512 score matrix per head
    ("gpu", 1024, jnp.bfloat16, 128, "dense"),
])
def test_auto_picks_the_kernel_by_platform_and_shape(platform, q_len, dtype, head_dim, expected):
    assert A.select_implementation("auto", platform, q_len, q_len, dtype, head_dim, 512) == expected


def test_auto_decodes_densely_and_explicit_choices_are_kept_or_refused():
    assert A.select_implementation("auto", "tpu", 1, 32768, jnp.bfloat16, 128, 512) == "dense"
    assert A.select_implementation("blocked", "cpu", 8, 8, jnp.float32, 16, 512) == "blocked"
    assert A.select_implementation("cudnn", "gpu", 8, 8, jnp.bfloat16, 16, 512) == "cudnn"
    with pytest.raises(ValueError, match="runs only on GPU"):
        A.select_implementation("cudnn", "cpu", 4096, 4096, jnp.bfloat16, 128, 512)
    with pytest.raises(ValueError, match="ModelConfig.attention must be one of"):
        ModelConfig.from_preset("tiny", attention="flash")
    with pytest.raises(ValueError, match="ModelConfig.remat_policy must be one of"):
        ModelConfig.from_preset("tiny", remat_policy="dots")


def test_model_logits_and_gradients_agree_across_attention_and_remat_policy():
    cfg = ModelConfig(vocab_size=97, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=96, attention_block=8)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 97, size=(2, 21)), jnp.int32)
    attention_mask = jnp.ones((2, 21), bool).at[1, :6].set(False)
    positions = positions_from_mask(attention_mask)

    def logits_and_grads(**overrides):
        graphdef, params = nnx.split(Qwen2(cfg.replace(**overrides), rngs=nnx.Rngs(0)))

        def loss(params):
            logits, _ = nnx.merge(graphdef, params)(tokens, positions, attention_mask)
            logp = jax.nn.log_softmax(logits)[:, :-1]
            picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
            return -jnp.sum(picked * attention_mask[:, 1:]), logits

        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return logits, grads

    # Two compiles cover both switches: dense with the matmul-saving remat vs blocked with full remat (remat vs
    # no remat is tested in test_model_qwen2.py).
    ref_logits, ref_grads = logits_and_grads(attention="dense", remat=True, remat_policy="save_matmuls")
    logits, grads = logits_and_grads(attention="blocked", remat=True, remat_policy="full")
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-5), grads, ref_grads)
