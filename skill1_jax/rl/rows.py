"""Batch building: generated segments (token ids, log-probs, kind) → padded ``TrainBatch`` mini-batches.

Arrays only (no strings): the rollout collector hands over, per generated segment, exactly the token ids the
sampler was prompted with and produced, so the learner never trains on a re-tokenization of decoded text.

Policies, each in one place:
  * **Truncated segments** (the reply hit its ``max_new_tokens`` before a stop string or EOS) are kept in the batch
    for the KL/metrics bookkeeping but carry no loss (``loss_mask`` 0): a cut reply is not a finished action,
    ranking or lesson, and reinforcing its prefix would teach the policy to ramble into the limit. Their number is
    reported (``rows/truncated``).
  * **Mini-batches** (spec §4: 256 samples): rows are shuffled with the step's seed and split into
    ``mini_batch_size`` chunks, one optimizer update each (one PPO epoch).
  * **Shapes**: a chunk's row count is padded with all-padding rows to a multiple of ``unit`` (micro-batch ×
    data-parallel devices) on the ladder unit × (1, 1.5, 2, 3, 4, …), capped at the mini-batch, and its length to
    ``length_bucket`` × the same ladder, so a run compiles at most (#row buckets × #length buckets) update
    programs, however ragged the replies are.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from skill1_jax.rl.batch import Segment, TrainBatch


@dataclasses.dataclass(frozen=True)
class Row:
    """One generated segment: prompt ⧺ response, loss on the response.

    Attributes:
      prompt_ids: [P] int token ids the sampler was prompted with.
      response_ids: [R] int token ids the sampler produced (including a stop string's / EOS token).
      logprobs: [R] float raw-policy log-probs of ``response_ids`` at sampling time (π_old).
      kind: the response's ``Segment``.
      advantage: the row's scalar advantage (``batch.assign_advantages``).
      group: task group id.
      truncated: the reply was cut by the length limit (no loss, see module docstring).
    """

    prompt_ids: np.ndarray
    response_ids: np.ndarray
    logprobs: np.ndarray
    kind: Segment
    advantage: float
    group: int
    truncated: bool = False

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def bucket(n: int, base: int) -> int:
    """Smallest value of the ladder base × (1, 1.5, 2, 3, 4, 6, 8, …) that is ≥ n: at most 1/3 padding, and
    two shapes per doubling of length."""
    power = base
    while True:
        for size in (power, power * 3 // 2):
            if size >= n:
                return size
        power *= 2


def pack_rows(rows: Sequence[Row], num_rows: int, seq_len: int) -> TrainBatch:
    """Right-padded host ``TrainBatch`` of ``rows`` plus all-padding rows up to ``num_rows``; ref_logp is 0
    (filled by the reference forward)."""
    if len(rows) > num_rows:
        raise ValueError(f"{len(rows)} rows do not fit a batch of {num_rows}")
    tokens = np.zeros((num_rows, seq_len), np.int32)
    attn = np.zeros((num_rows, seq_len), bool)
    loss = np.zeros((num_rows, seq_len), np.float32)
    seg = np.zeros((num_rows, seq_len), np.int8)
    old = np.zeros((num_rows, seq_len), np.float32)
    advantage = np.zeros(num_rows, np.float32)
    group = np.zeros(num_rows, np.int32)
    for b, row in enumerate(rows):
        p, r = len(row.prompt_ids), len(row.response_ids)
        if p + r > seq_len:
            raise ValueError(f"row of {p + r} tokens does not fit seq_len {seq_len}")
        if len(row.logprobs) != r:
            raise ValueError(f"row has {r} response tokens but {len(row.logprobs)} log-probs")
        tokens[b, :p + r] = np.concatenate([row.prompt_ids, row.response_ids])
        attn[b, :p + r] = True
        seg[b, p:p + r] = int(row.kind)
        old[b, p:p + r] = row.logprobs
        if not row.truncated:
            loss[b, p:p + r] = 1.0
        advantage[b] = row.advantage
        group[b] = row.group
    positions = np.where(attn, np.cumsum(attn, axis=1) - 1, 0).astype(np.int32)
    return TrainBatch(tokens=tokens, positions=positions, attention_mask=attn, loss_mask=loss, segment=seg,
                      old_logp=old, ref_logp=np.zeros_like(old), advantage=advantage, group_id=group)


def mini_batches(rows: Sequence[Row], *, mini_batch_size: int, row_unit: int, length_bucket: int,
                 seed: int) -> list[TrainBatch]:
    """Shuffles ``rows`` (seeded), splits them into mini-batches and pads each to bucketed shapes.

    Args:
      rows: the step's segments.
      mini_batch_size: rows per optimizer update (rounded up to a multiple of ``row_unit``).
      row_unit: micro-batch rows × data-parallel devices; every batch's row count is a multiple of it.
      length_bucket: base of the token-length ladder.
      seed: shuffle seed (the run seed folded with the step: resumes replay it exactly).
    """
    if not rows:
        return []
    per_update = -(-mini_batch_size // row_unit) * row_unit
    order = np.random.default_rng(seed).permutation(len(rows))
    out = []
    for start in range(0, len(rows), per_update):
        chunk = [rows[i] for i in order[start:start + per_update]]
        num_rows = min(-(-bucket(len(chunk), row_unit) // row_unit) * row_unit, per_update)
        seq_len = bucket(max(r.length for r in chunk), length_bucket)
        out.append(pack_rows(chunk, num_rows, seq_len))
    return out


def row_stats(rows: Sequence[Row]) -> dict[str, float]:
    """Counts per segment kind (rows, response tokens) and truncated rows."""
    stats: dict[str, float] = {"rows/total": float(len(rows)),
                               "rows/truncated": float(sum(r.truncated for r in rows))}
    for kind in (Segment.QUERY, Segment.RANK, Segment.ACTION, Segment.DISTILL):
        mine = [r for r in rows if r.kind == kind]
        name = kind.name.lower()
        stats[f"rows/{name}"] = float(len(mine))
        stats[f"tokens/{name}_response"] = float(sum(len(r.response_ids) for r in mine))
        stats[f"tokens/{name}_prompt"] = float(sum(len(r.prompt_ids) for r in mine))
    return stats
