"""The lean reference policy (``rl.reference_dtype="compute"``): π_ref stored in the compute dtype.

With a bfloat16 compute dtype the reference forward casts every weight to bfloat16 on use, so storing it in
bfloat16 changes no bit of its log-probs and halves its bytes. Against a reference scored wholly in float32 the
difference is bfloat16's rounding: per token |Δ log π_ref| ≤ 2⁻⁸·|log π_ref| (bfloat16 keeps 8 significant bits;
measured on this tiny Qwen2: at most 0.11 × that), which moves the k3 KL by at most its first-order propagation
mean(|e^r − 1|·2⁻⁸·|log π_ref|), r = log π_ref − log π_θ, and the loss by β times that.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax import config as C
from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.loss import make_loss_fn
from skill1_jax.rl.train_step import make_logprob_fn
from skill1_jax.train.trainer import Learner
from synthetic import synthetic_batch

VOCAB, ROWS, SEQ = 512, 16, 16  # the shapes of tests/test_rl_train_step.py
RL = RLConfig(micro_batch_size=4, logprob_chunk=8)
BF16_PRECISION = 2.0 ** -8


def _model(compute_dtype):
    model = Qwen2(ModelConfig.from_preset("tiny", vocab_size=VOCAB, compute_dtype=compute_dtype), rngs=nnx.Rngs(0))
    return nnx.split(model, nnx.Param)


def _learner(graphdef, params, reference_dtype):
    cfg = C.cpu_tiny().replace(rl=RL.replace(reference_dtype=reference_dtype))
    return Learner(graphdef, jax.tree.map(jnp.copy, params), cfg)


def _bytes(tree):
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def test_compute_dtype_reference_holds_bf16_weights_in_half_the_bytes_and_scores_the_same_bits():
    graphdef, params = _model("bfloat16")
    full, lean = _learner(graphdef, params, "param"), _learner(graphdef, params, "compute")
    for name, leaf in nnx.to_pure_dict(lean.ref_params).items():  # norms are used in float32 (a few kB)
        assert leaf.dtype == (jnp.float32 if name.endswith("norm") else jnp.bfloat16), name
    norms = sum(x.nbytes for k, x in nnx.to_pure_dict(full.ref_params).items() if k.endswith("norm"))
    assert _bytes(lean.ref_params) == (_bytes(full.ref_params) - norms) // 2 + norms
    batch = jax.device_put(synthetic_batch(0, ROWS, SEQ, VOCAB))
    np.testing.assert_array_equal(lean.ref_logprobs(lean.ref_params, batch),
                                  full.ref_logprobs(full.ref_params, batch))


def test_bf16_reference_keeps_kl_and_loss_within_bf16_precision_of_a_float32_reference():
    graphdef16, params = _model("bfloat16")
    graphdef32, _ = _model("float32")
    batch = jax.device_put(synthetic_batch(0, ROWS, SEQ, VOCAB))
    lean = _learner(graphdef16, params, "compute")
    ref16 = np.asarray(lean.ref_logprobs(lean.ref_params, batch))
    score32 = make_logprob_fn(graphdef32, lean.rl, params)
    ref32 = np.asarray(score32(params, batch))
    mask = np.asarray(batch.loss_mask) > 0
    np.testing.assert_array_less(np.abs(ref16 - ref32)[mask], BF16_PRECISION * np.abs(ref32)[mask])
    # π_θ a few updates away from π_ref (weights moved by 1/4 of their init scale) so that the KL is not ~0.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    policy = jax.tree.unflatten(tree, [x + 0.005 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    loss_fn = jax.jit(make_loss_fn(graphdef32, lean.rl))
    (loss32, m32), (loss16, m16) = (
        loss_fn(policy, dataclasses.replace(batch, ref_logp=jnp.where(mask, ref, 0.0))) for ref in (ref32, ref16))
    logp = np.asarray(score32(policy, batch))
    r = (ref32 - logp)[mask]
    kl_tol = np.mean(np.abs(np.expm1(r)) * BF16_PRECISION * np.abs(ref32[mask]))  # first-order propagation
    assert abs(float(m16["kl/ref"]) - float(m32["kl/ref"])) <= kl_tol
    assert abs(float(loss16) - float(loss32)) <= lean.rl.kl_coef * kl_tol + 1e-6 * abs(float(loss32))


def test_unknown_reference_dtype_is_one_clear_error():
    with pytest.raises(ValueError, match="RLConfig.reference_dtype must be one of"):
        RLConfig(reference_dtype="float16")
