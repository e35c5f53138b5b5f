"""Batch building (``rl.rows``): layout, truncation and overlong-prompt policies, mini-batch split, and a bounded
number of compiled update programs over a multi-step run with ragged replies."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skill1_jax.rl.batch import Segment
from skill1_jax.rl.rows import Row, bucket, mini_batches, pack_rows, rollout_mean_weights, row_stats


def random_rows(rng, n):
    kinds = [Segment.QUERY, Segment.RANK, Segment.ACTION, Segment.DISTILL]
    rows = []
    for _ in range(n):
        p, r = int(rng.integers(20, 900)), int(rng.integers(1, 120))
        rows.append(Row(prompt_ids=rng.integers(3, 1000, p), response_ids=rng.integers(3, 1000, r),
                        logprobs=-rng.random(r).astype(np.float32), kind=kinds[int(rng.integers(4))],
                        advantage=float(rng.normal()), group=int(rng.integers(4)), truncated=bool(rng.random() < .1)))
    return rows


def test_pack_rows_layout_masks_kinds_and_positions():
    rows = [Row(np.array([5, 6, 7]), np.array([8, 9]), np.array([-.5, -.25], np.float32), Segment.RANK, 0.7, 3),
            Row(np.array([4]), np.array([1, 2, 3]), np.array([-1, -2, -3], np.float32), Segment.DISTILL, -1.0, 1,
                truncated=True)]
    b = pack_rows(rows, num_rows=4, seq_len=8)
    np.testing.assert_array_equal(b.tokens[0], [5, 6, 7, 8, 9, 0, 0, 0])
    np.testing.assert_array_equal(b.positions[0], [0, 1, 2, 3, 4, 0, 0, 0])
    np.testing.assert_array_equal(b.loss_mask[0], [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(b.segment[0], [0, 0, 0, 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(b.old_logp[0], [0, 0, 0, -.5, -.25, 0, 0, 0])
    np.testing.assert_array_equal(b.loss_mask[1], np.zeros(8))  # truncated: kept, but no loss
    np.testing.assert_array_equal(b.segment[1], [0, 4, 4, 4, 0, 0, 0, 0])
    np.testing.assert_allclose(b.advantage[:, 0], [0.7, -1.0, 0, 0])  # on every token of the row
    np.testing.assert_array_equal(b.group_id[:, 0], [3, 1, 0, 0])
    np.testing.assert_array_equal(b.row_id[0], [1, 1, 1, 1, 1, 0, 0, 0])
    assert not b.attention_mask[2:].any()  # all-padding rows
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows(rows, num_rows=4, seq_len=4)


def test_rollout_mean_weights_are_one_over_the_rollouts_tokens_per_term():
    row = lambda n, kind, truncated=False, overlong=False: Row(np.arange(2), np.arange(n), np.zeros(n), kind, 1.0, 0,
                                                               truncated, overlong=overlong)
    rows = [row(3, Segment.QUERY), row(2, Segment.ACTION), row(5, Segment.RANK), row(4, Segment.ACTION),
            row(7, Segment.ACTION, truncated=True), row(6, Segment.DISTILL), row(9, Segment.ACTION, overlong=True)]
    rollout = [0, 0, 0, 1, 1, 1, 1]
    # skill1: util = query + action of the same rollout (3 + 2 tokens; rollout 1's truncated and overlong turns count
    # nothing), rerank and distill alone.
    got = [r.weight for r in rollout_mean_weights(rows, rollout, "skill1")]
    assert got == pytest.approx([1 / 5, 1 / 5, 1 / 5, 1 / 4, 1.0, 1 / 6, 1.0])
    # grpo: one term over every kind of the rollout (3 + 2 + 5 and 4 + 6 tokens).
    got = [r.weight for r in rollout_mean_weights(rows, rollout, "grpo")]
    assert got == pytest.approx([1 / 10, 1 / 10, 1 / 10, 1 / 10, 1.0, 1 / 10, 1.0])
    # The weights reach the loss mask; a truncated or overlong row still carries none.
    b = pack_rows(rollout_mean_weights(rows, rollout, "grpo"), 7, 16)
    np.testing.assert_allclose(b.loss_mask.sum(axis=1), [0.3, 0.2, 0.5, 0.4, 0.0, 0.6, 0.0], rtol=1e-6)


def test_bucket_ladder():
    assert [bucket(n, 128) for n in (1, 128, 129, 192, 193, 257, 769, 1025)] == [128, 128, 192, 192, 256, 384,
                                                                                  1024, 1536]


def test_mini_batches_cover_every_trainable_row_once_in_length_grouped_micro_batches():
    rng = np.random.default_rng(0)
    rows = [dataclasses.replace(r, overlong=True) if i % 9 == 4 else r for i, r in enumerate(random_rows(rng, 70))]
    trainable = [r for r in rows if not r.truncated and not r.overlong]
    batches = mini_batches(rows, mini_batch_size=32, row_unit=8, length_bucket=128, seed=5)
    sizes = [sum(b.attention_mask.any(axis=1).sum() for b in micro) for micro in batches]
    assert sizes[:-1] == [32] * (len(sizes) - 1) and sum(sizes) == len(trainable)
    got = []
    for micro in batches:
        assert all(b.num_rows == 8 for b in micro)
        real = [b.attention_mask.sum(axis=1) for b in micro]
        for b, lengths in zip(micro, real):
            assert b.seq_len == bucket(int(lengths.max()), 128)  # each micro-batch padded only to its own rows
        flat = np.concatenate(real)
        flat = flat[flat > 0]
        assert np.all(np.diff(flat) >= 0)  # sorted by length inside the mini-batch
        got += [tuple(b.tokens[i][b.attention_mask[i]]) for b in micro for i in range(8) if b.attention_mask[i].any()]
    assert sorted(got) == sorted(tuple(np.concatenate([r.prompt_ids, r.response_ids])) for r in trainable)
    again = mini_batches(rows, mini_batch_size=32, row_unit=8, length_bucket=128, seed=5)
    assert all(np.array_equal(a.tokens, b.tokens) for x, y in zip(batches, again) for a, b in zip(x, y))
    other = mini_batches(rows, mini_batch_size=32, row_unit=8, length_bucket=128, seed=6)
    assert any(not np.array_equal(a.tokens, b.tokens) for a, b in zip(batches[0], other[0]))
    stats = row_stats(rows)
    assert stats["rows/truncated"] == sum(r.truncated for r in rows) > 0
    assert stats["rows/overlong"] == 8  # rows 4, 13, ..., 67
    assert stats["rows/truncated"] + stats["rows/overlong"] - sum(r.truncated and r.overlong for r in rows) == len(
        rows) - len(trainable)


def test_five_ragged_steps_compile_a_bounded_number_of_update_programs():
    rng = np.random.default_rng(1)

    @jax.jit
    def update(tokens, loss_mask, old_logp):  # stands in for the gradient call: one program per input shape
        return jnp.sum(jnp.where(loss_mask > 0, old_logp, 0.0)) + jnp.sum(tokens) * 0

    shapes = set()
    for step in range(5):
        rows = random_rows(rng, int(rng.integers(20, 90)))
        for micro in mini_batches(rows, mini_batch_size=64, row_unit=8, length_bucket=128, seed=step):
            for b in micro:
                shapes.add(b.tokens.shape)
                update(b.tokens, b.loss_mask, b.old_logp)
    # Rows: always 8; lengths: prompts < 900 + replies < 120 → ≤ 1024 = 128·8 on the ladder.
    assert update._cache_size() == len(shapes) <= 7
    assert {s[0] for s in shapes} == {8}
    assert {s[1] for s in shapes} <= {128, 192, 256, 384, 512, 768, 1024}
