"""The rollout → learner hand-off: ``TrainBatch``, a typed, array-only pytree with one generated segment per row.

Row convention. Every generated segment (a query, a ranking, one action turn, a distilled skill) becomes one row
holding its prompt followed by the model's response. Only response tokens have a ``loss_mask`` weight > 0 (1, or
1/|τ_i| under ``rollout-mean``, ``rl.loss``) and a non-zero ``segment`` kind; prompt and padding tokens have kind
``PAD`` (0).

Layouts. A sequence ``tokens[b]`` holds one row (``padded``: ``prompt ⧺ response ⧺ padding``) or several rows end to
end (``packed``: ``row 1 ⧺ row 2 ⧺ … ⧺ padding``, ``rl.rows``). ``row_id[b, t]`` numbers the rows of a sequence
(1, 2, …; 0 on padding): attention never crosses a row and ``positions`` restart at 0 on every row, so a packed
row's log-probs are those of the row alone. Per-row values (advantage, group) are stored on every token of the row.

Log-prob alignment. ``old_logp[b, t]`` and ``ref_logp[b, t]`` are log π(tokens[b, t] | the earlier tokens of its
row) — the log-probability of the token *at* position t given its prefix, exactly what the sampler returns for each
generated token, stored at that token's position (0 where ``loss_mask`` is 0). A row's first token has no prefix
and is never a response token. ``skill1_jax.rl.logprobs.token_logprobs`` produces the same alignment from a forward
pass.

Advantages. ``advantage[b, t]`` is already the right scalar for the segment kind of the token's row: Â_util for
query and action rows, the raw NDCG for rank rows (REINFORCE, no baseline), Â_distill for distill rows
(``assign_advantages``).

Axis letters: B sequences (rows, in the padded layout), T tokens per sequence.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from skill1_jax.parallel.sharding import DEFAULT_RULES

Array = jax.Array


class Segment(enum.IntEnum):
    """Kind of each token (``TrainBatch.segment``)."""

    PAD = 0  # prompt or padding: never trained
    QUERY = 1  # retrieval query q_i: PPO-clip with Â_util
    RANK = 2  # ranking σ_i: REINFORCE with NDCG, weight λ1
    ACTION = 3  # an action turn a_t: PPO-clip with Â_util
    DISTILL = 4  # distilled skill s_new: PPO-clip with Â_distill, weight λ2


# The Skill1 objective's loss terms and the segment kinds each trains on (the plain-GRPO objective trains one term,
# "response", on every kind).
TERM_KINDS: Mapping[str, tuple[Segment, ...]] = {
    "util": (Segment.QUERY, Segment.ACTION), "rerank": (Segment.RANK,), "distill": (Segment.DISTILL,)}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainBatch:
    """One mini-batch of training rows (all fields are [B, T] arrays; see the module docstring for the layouts).

    Attributes:
      tokens: [B, T] int32 prompt + response token ids.
      positions: [B, T] int32 position ids, from 0 on each row.
      attention_mask: [B, T] bool, True on real (non-padding) tokens: ``row_id > 0``.
      row_id: [B, T] int32 the token's row within its sequence (1, 2, …), 0 on padding.
      loss_mask: [B, T] float32, the loss weight of response tokens that carry loss (1, or 1/|τ_i| under
        ``rollout-mean``), 0 elsewhere.
      segment: [B, T] int8 ``Segment`` kind of each token.
      old_logp: [B, T] float32 sampler log-probs (see module docstring for the alignment).
      ref_logp: [B, T] float32 reference-policy log-probs, same alignment.
      advantage: [B, T] float32 the advantage of the token's row (Â_util, NDCG or Â_distill by the row's kind).
      group_id: [B, T] int32 task group of the token's row.
    """

    tokens: Array
    positions: Array
    attention_mask: Array
    row_id: Array
    loss_mask: Array
    segment: Array
    old_logp: Array
    ref_logp: Array
    advantage: Array
    group_id: Array

    @property
    def num_rows(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]


FIELD_DTYPES: Mapping[str, Any] = {
    "tokens": jnp.int32, "positions": jnp.int32, "attention_mask": jnp.bool_, "row_id": jnp.int32,
    "loss_mask": jnp.float32, "segment": jnp.int8, "old_logp": jnp.float32, "ref_logp": jnp.float32,
    "advantage": jnp.float32, "group_id": jnp.int32,
}


def abstract_batch(rows: int, seq_len: int, shardings: TrainBatch | None = None) -> TrainBatch:
    """A ``TrainBatch`` of ShapeDtypeStructs (for AOT lowering without allocation)."""
    def one(name):
        sharding = None if shardings is None else getattr(shardings, name)
        return jax.ShapeDtypeStruct((rows, seq_len), FIELD_DTYPES[name], sharding=sharding)
    return TrainBatch(**{f.name: one(f.name) for f in dataclasses.fields(TrainBatch)})


def batch_shardings(mesh: Mesh, rules: Mapping[str, Any] = DEFAULT_RULES) -> TrainBatch:
    """NamedShardings of every field: sequences over the rule table's ``batch`` mesh axes, tokens not split.

    The row count must be a multiple of the product of those axes' sizes.
    """
    axes = rules["batch"]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if mesh.shape[a] > 1)
    rows_spec = (axes[0] if len(axes) == 1 else axes) if axes else None

    return TrainBatch(**{f.name: NamedSharding(mesh, P(rows_spec, None)) for f in dataclasses.fields(TrainBatch)})


def split_micro_batches(batch: TrainBatch, num_micro: int) -> TrainBatch:
    """[B, ...] → [num_micro, B / num_micro, ...]; micro-batch i holds rows i, i + n, i + 2n, ...

    The strided split keeps each device's contiguous block of rows on that device (a row-sharded [B] reshaped to
    [B/n, n] stays sharded on its first axis), so splitting needs no communication.
    """
    rows = batch.num_rows
    if rows % num_micro:
        raise ValueError(f"batch of {rows} rows cannot be split into {num_micro} micro-batches")
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(rows // num_micro, num_micro, *x.shape[1:]), 0, 1), batch)


def assign_advantages(row_segment: np.ndarray, row_rollout: np.ndarray, util_advantage: np.ndarray,
                      rerank_reward: np.ndarray, distill_advantage: np.ndarray) -> np.ndarray:
    """Per-row advantage from per-rollout values: Â_util (query/action), NDCG (rank), Â_distill (distill).

    Args:
      row_segment: [B] ``Segment`` kind of each row's response.
      row_rollout: [B] index of the rollout (into the per-rollout arrays) the row belongs to.
      util_advantage, rerank_reward, distill_advantage: [R] per-rollout values.

    Returns:
      [B] float32 advantages (0 for PAD rows, e.g. duplicated padding rows).
    """
    row_segment = np.asarray(row_segment)
    row_rollout = np.asarray(row_rollout)
    table = {Segment.QUERY: util_advantage, Segment.ACTION: util_advantage, Segment.RANK: rerank_reward,
             Segment.DISTILL: distill_advantage}
    out = np.zeros(row_segment.shape, np.float32)
    for kind, values in table.items():
        rows = row_segment == kind
        out[rows] = np.asarray(values, np.float32)[row_rollout[rows]]
    return out
