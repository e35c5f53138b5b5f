"""Random but well-formed ``TrainBatch``es for tests and benchmarks (no environment, no sampler).

Each row is ``prompt ⧺ response ⧺ padding`` (right padding) with one segment kind per row, following the row
convention of ``skill1_jax.rl.batch``. Log-probs are random negatives; advantages are standard normal, except rank
rows whose advantage is an NDCG-like value in [0, 1].
"""

from __future__ import annotations

import numpy as np

from skill1_jax.rl.batch import Segment, TrainBatch
from skill1_jax.rl.rows import Row

KINDS = (Segment.QUERY, Segment.RANK, Segment.ACTION, Segment.DISTILL)


def synthetic_batch(seed: int, rows: int, seq_len: int, vocab_size: int, group_size: int = 4,
                    kind_probs: tuple[float, float, float, float] = (0.2, 0.2, 0.4, 0.2)) -> TrainBatch:
    """A NumPy-backed ``TrainBatch`` of ``rows`` × ``seq_len`` (kinds drawn with ``kind_probs`` for
    query / rank / action / distill)."""
    if seq_len < 4:
        raise ValueError(f"seq_len must be >= 4 (prompt + response), got {seq_len}")
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size, (rows, seq_len), dtype=np.int32)
    attention_mask = np.zeros((rows, seq_len), bool)
    loss_mask = np.zeros((rows, seq_len), np.float32)
    segment = np.zeros((rows, seq_len), np.int8)
    kinds = rng.choice(np.array([int(k) for k in KINDS]), size=rows, p=np.asarray(kind_probs) / sum(kind_probs))
    for b in range(rows):
        prompt = int(rng.integers(1, seq_len // 2 + 1))
        length = int(rng.integers(prompt + 1, seq_len + 1))
        attention_mask[b, :length] = True
        loss_mask[b, prompt:length] = 1.0
        segment[b, prompt:length] = kinds[b]
    tokens = np.where(attention_mask, tokens, 0).astype(np.int32)
    positions = (np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0) * attention_mask).astype(np.int32)
    old_logp = np.where(loss_mask > 0, -rng.uniform(0.1, 3.0, (rows, seq_len)), 0.0).astype(np.float32)
    ref_logp = np.where(loss_mask > 0, old_logp + rng.normal(0, 0.3, (rows, seq_len)), 0.0).astype(np.float32)
    advantage = np.where(kinds == Segment.RANK, rng.uniform(0, 1, rows), rng.normal(0, 1, rows)).astype(np.float32)
    on_tokens = lambda per_row: np.where(attention_mask, per_row[:, None], 0).astype(per_row.dtype)
    return TrainBatch(tokens=tokens, positions=positions, attention_mask=attention_mask,
                      row_id=attention_mask.astype(np.int32), loss_mask=loss_mask, segment=segment, old_logp=old_logp,
                      ref_logp=ref_logp, advantage=on_tokens(advantage),
                      group_id=on_tokens((np.arange(rows) // group_size).astype(np.int32)))


def ragged_rows(seed: int, n: int, vocab_size: int) -> list[Row]:
    """``n`` training rows of very different lengths (prompts of 2-39 tokens, replies of 1-8, as a re-rank or distill
    prompt is several times an action's), kinds cycling query / rank / action / distill, four rows per group."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p, r = int(rng.integers(2, 40)), int(rng.integers(1, 9))
        rows.append(Row(prompt_ids=rng.integers(3, vocab_size, p), response_ids=rng.integers(3, vocab_size, r),
                        logprobs=-rng.uniform(0.1, 3.0, r).astype(np.float32), kind=KINDS[i % 4],
                        advantage=float(rng.normal()), group=i // 4))
    return rows
