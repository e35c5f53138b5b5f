"""Memory options of the training forward change no numbers: bf16 compute params, chunked MLP, vocab sharding."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2, compute_params
from skill1_jax.parallel.sharding import activation_sharding, make_mesh, state_shardings
from skill1_jax.rl.logprobs import token_logprobs

CFG = ModelConfig(vocab_size=96, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=64,
                  tie_word_embeddings=False)


def _batch(rows=8, t=12):
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, CFG.vocab_size, (rows, t)), jnp.int32)
    return tokens, jnp.broadcast_to(jnp.arange(t), tokens.shape), jnp.ones(tokens.shape, bool)


def _loss_and_grad(cfg, params_fn=lambda g, p: p, mesh=None):
    graphdef, params = nnx.split(Qwen2(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    tokens, positions, mask = _batch()

    def loss(p):
        return jnp.sum(token_logprobs(nnx.merge(graphdef, p), tokens, positions, mask, chunk=5)[0])

    if mesh is None:
        return jax.jit(jax.value_and_grad(loss))(params_fn(graphdef, params))
    params = jax.device_put(params, state_shardings(params, mesh))

    @jax.jit
    def sharded(p):
        with activation_sharding(mesh):
            return jax.value_and_grad(loss)(p)
    return sharded(params)


def test_gradients_wrt_bf16_compute_params_equal_the_float32_master_gradients():
    cfg = CFG.replace(compute_dtype="bfloat16")
    loss32, g32 = _loss_and_grad(cfg)
    loss16, g16 = _loss_and_grad(cfg, compute_params)
    assert loss16 == loss32
    for path, a in jax.tree_util.tree_flatten_with_path(g16)[0]:
        name = path[0].key
        assert a.dtype == (jnp.float32 if name.endswith("norm") else jnp.bfloat16), name
    for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)):
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.float32)), np.asarray(b))


def test_tied_embedding_stays_float32_in_compute_params():
    graphdef, params = nnx.split(Qwen2(CFG.replace(tie_word_embeddings=True, compute_dtype="bfloat16"),
                                       rngs=nnx.Rngs(0)), nnx.Param)
    cast = compute_params(graphdef, params)
    assert cast["embed"][...].dtype == jnp.float32 and cast["q_kernel"][...].dtype == jnp.bfloat16


def test_chunked_mlp_equals_unchunked_forward_and_gradient():
    loss1, g1 = _loss_and_grad(CFG)
    loss5, g5 = _loss_and_grad(CFG.replace(mlp_chunks=5))  # 12 tokens in 5 chunks: the last one padded
    np.testing.assert_allclose(loss5, loss1, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g5), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_vocab_sharded_lookup_and_head_equal_single_device_under_fsdp():
    loss1, g1 = _loss_and_grad(CFG)
    loss8, g8 = _loss_and_grad(CFG, mesh=make_mesh(data=2, fsdp=4, tensor=1))
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
