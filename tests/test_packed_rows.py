"""Packed rows (``rl.row_layout="packed"``): several rows share a sequence and give exactly the padded layout's
log-probs, loss and gradients; positions restart per row and attention never crosses a row."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax import config as C
from skill1_jax.model import attention as A
from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.logprobs import token_logprobs
from skill1_jax.rl.loss import make_loss_fn
from skill1_jax.rl.rows import first_fit_decreasing, layout_stats, mini_batches, pack_rows, pack_sequences
from skill1_jax.rl.train_step import make_logprob_fn
from skill1_jax.train.trainer import Learner

from synthetic import ragged_rows

VOCAB, ROWS, SEQ = 512, 16, 48  # as tests/test_rl_train_step.py's ragged rows (prompts < 40, replies < 9 tokens)
CFG = RLConfig(learning_rate=1e-3, micro_batch_size=4, logprob_chunk=8)


def _model(attention="dense"):
    cfg = ModelConfig.from_preset("tiny", vocab_size=VOCAB, compute_dtype="float32", attention=attention,
                                  attention_block=16)
    return nnx.split(Qwen2(cfg, rngs=nnx.Rngs(0)), nnx.Param)


def _rows(seed, n=ROWS):
    return ragged_rows(seed, n, VOCAB)


def _with_ref(batch):
    return dataclasses.replace(batch, ref_logp=np.where(batch.loss_mask > 0, 0.9 * batch.old_logp - 0.1, 0.0))


def _per_row(batch, values):
    """``values`` [B, T] cut into one array per row, in (sequence, row id) order."""
    out = {}
    for b in range(batch.num_rows):
        for k in np.unique(batch.row_id[b][batch.row_id[b] > 0]):
            span = batch.row_id[b] == k
            out[tuple(batch.tokens[b][span])] = np.asarray(values)[b][span]
    return out


def _both_layouts(rows, seq_len=SEQ):
    """The rows padded and packed, in batches of one shape (all-padding sequences fill the packed one): one program
    compiles for both."""
    padded = _with_ref(pack_rows(rows, len(rows), seq_len))
    packed = _with_ref(pack_sequences(first_fit_decreasing(rows, seq_len), len(rows), seq_len))
    return padded, packed


def test_first_fit_decreasing_packs_rows_with_their_own_ids_and_positions():
    rows = _rows(0)
    padded, packed = _both_layouts(rows)
    assert (packed.row_id.max(axis=1) == 0).sum() >= 4 and (packed.row_id.max(axis=1) >= 2).any()
    assert (packed.attention_mask == (packed.row_id > 0)).all()
    for b in range(packed.num_rows):
        for k in np.unique(packed.row_id[b][packed.row_id[b] > 0]):
            span = np.flatnonzero(packed.row_id[b] == k)
            assert (np.diff(span) == 1).all()  # contiguous
            np.testing.assert_array_equal(packed.positions[b, span], np.arange(len(span)))  # restart per row
    # Every row once, with its kind, advantage and log-probs on its own tokens.
    for field in ("segment", "loss_mask", "old_logp", "advantage", "group_id", "positions"):
        want, got = _per_row(padded, getattr(padded, field)), _per_row(packed, getattr(packed, field))
        assert want.keys() == got.keys() and len(want) == len(rows)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=field)


@pytest.mark.parametrize("attention, loss_agg", [("dense", "seq-mean-token-mean"), ("blocked", "token-mean")])
def test_packed_rows_give_the_loss_and_gradients_of_padded_rows(attention, loss_agg):
    graphdef, params = _model(attention)
    padded, packed = _both_layouts(_rows(1))
    loss_fn = make_loss_fn(graphdef, CFG.replace(loss_agg=loss_agg))
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss_p, m_p), g_p = value_and_grad(params, jax.device_put(padded))
    (loss_k, m_k), g_k = value_and_grad(params, jax.device_put(packed))
    assert float(m_p["kl/ref"]) > 0 and float(m_p["loss/rerank"]) != 0
    for key in m_p:
        assert float(m_k[key]) == pytest.approx(float(m_p[key]), rel=1e-5, abs=1e-7), key
    for a, b in zip(jax.tree.leaves(g_k), jax.tree.leaves(g_p)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)  # float32 summation order only


def test_no_attention_crosses_packed_rows_and_the_reference_scores_each_row_as_if_alone():
    graphdef, params = _model()
    padded, packed = _both_layouts(_rows(2))
    score = make_logprob_fn(graphdef, CFG, params)
    want, got = _per_row(padded, score(params, padded)), _per_row(packed, score(params, packed))
    mask = _per_row(padded, padded.attention_mask & (padded.positions > 0))  # a row's first token has no prefix
    for key in want:
        np.testing.assert_allclose(got[key][mask[key]], want[key][mask[key]], rtol=1e-5, atol=1e-6)
    # Changing one row's tokens leaves every other row of its sequence bit-identical.
    b = int(np.argmax(packed.row_id.max(axis=1)))
    changed = np.where(packed.row_id[b] == 1, (packed.tokens[b] + 1) % VOCAB, packed.tokens[b])
    tokens = np.stack([packed.tokens[b], changed])
    forward = jax.jit(lambda p, t: token_logprobs(nnx.merge(graphdef, p), t, packed.positions[[b, b]],
                                                  packed.attention_mask[[b, b]], 8,
                                                  segment_ids=packed.row_id[[b, b]])[0])
    before, after = np.asarray(forward(params, tokens))
    others = (packed.row_id[b] > 1) & (packed.positions[b] > 0)  # a row's first token is scored from the last row
    np.testing.assert_array_equal(after[others], before[others])
    assert not np.array_equal(after[packed.row_id[b] == 1], before[packed.row_id[b] == 1])


def test_splash_takes_packed_row_ids_as_its_segment_ids():
    # The TPU kernel in the Pallas interpreter against the dense reference with the packed rows' mask.
    rng = np.random.default_rng(0)
    t = 128
    q, k, v = (jnp.asarray(rng.normal(size=(1, t, n, 16)), jnp.float32) for n in (4, 2, 2))
    row_id = jnp.asarray(np.repeat([1, 2, 3, 0], [50, 30, 40, 8])[None], jnp.int32)
    mask = A.segment_mask(row_id)
    got = A.splash_attention(q, k, v, mask, 128, segment_ids=row_id, interpret=True)
    real = np.asarray(row_id[0] > 0)
    np.testing.assert_allclose(got[0][real], A.dense_attention(q, k, v, mask)[0][real], atol=1e-5, rtol=1e-5)


def test_learner_update_on_packed_rows_equals_the_padded_update():
    graphdef, params = _model()
    rows = _rows(3)
    learners, metrics = {}, {}
    for layout in ("padded", "packed"):
        cfg = C.cpu_tiny().replace(rl=CFG.replace(row_layout=layout))
        learners[layout] = Learner(graphdef, jax.tree.map(jnp.copy, params), cfg)
        # Ladder base 96: every micro-batch of either layout is 4 × 96 tokens (one set of programs to compile).
        batches = mini_batches(rows, mini_batch_size=ROWS, row_unit=4, length_bucket=2 * SEQ, seed=0, layout=layout)
        metrics[layout] = learners[layout].update(batches, {}) | layout_stats(batches)
    # A sequence of 96 tokens holds one row or several: fewer sequences, fewer tokens computed for the same rows.
    assert metrics["packed"]["update/real_tokens"] == metrics["padded"]["update/real_tokens"]
    assert metrics["packed"]["update/computed_tokens"] < metrics["padded"]["update/computed_tokens"]
    for key in ("loss", "kl/ref", "grad/norm", "tokens/util"):
        assert metrics["packed"][key] == pytest.approx(metrics["padded"][key], rel=1e-5), key
    for a, b in zip(jax.tree.leaves(learners["packed"].params), jax.tree.leaves(learners["padded"].params)):
        np.testing.assert_allclose(a, b, atol=1e-5)  # AdamW's first step ~lr·sign(g): rounding shows at 1e-6
