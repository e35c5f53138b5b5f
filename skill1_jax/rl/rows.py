"""Batch building: generated segments (token ids, log-probs, kind) → padded ``TrainBatch`` mini-batches.

Arrays only (no strings): the rollout collector hands over, per generated segment, exactly the token ids the
sampler was prompted with and produced, so the learner never trains on a re-tokenization of decoded text.

Policies, each in one place:
  * **Truncated segments** (the reply hit its ``max_new_tokens`` before a stop string or EOS) carry no loss
    (``pack_rows`` gives them ``loss_mask`` 0): a cut reply is not a finished action, ranking or lesson, and
    reinforcing its prefix would teach the policy to ramble into the limit. Having no loss token, they add nothing
    to any term or normaliser, so ``mini_batches`` leaves them out of the update rather than paying a forward and
    backward pass for zeros. Their number is reported (``rows/truncated``).
  * **Overlong prompts** (longer than ``GenerationConfig.max_prompt_tokens`` under ``overlong_prompt="drop"``;
    ``train.policy``): the reply was generated from the whole prompt and played, but its row is left out of the update
    in the same way, never truncated to fit. Their number is reported (``rows/overlong``).
  * **Mini-batches** (paper Appendix C: 256 samples): rows are shuffled with the step's seed and split into
    ``mini_batch_size`` chunks, one optimizer update each (one PPO epoch).
  * **Micro-batches grouped by length**: inside a mini-batch the rows are sorted by length and cut into
    micro-batches of ``row_unit`` rows (micro-batch × data-parallel devices; the first, shortest one topped up
    with all-padding rows, which then cost the least), each padded only to its own length on the ladder ``length_bucket`` × (1, 1.5, 2, 3, 4, …).
    The gradient of a mini-batch does not depend on how its rows are grouped (``rl.train_step``: every micro-batch
    is normalised by the mini-batch's counts), but the cost does: a long re-rank or distill prompt no longer pads
    every action row to its length. A run compiles at most one update program per length bucket.
  * **Packed rows** (``RLConfig.row_layout = "packed"``): the rows of a mini-batch are packed first-fit-decreasing
    into sequences of the ladder length of its longest row (so no micro-batch is longer than in the padded layout),
    several rows per sequence, each with its own ``row_id``, positions from 0 and attention within itself
    (``rl.batch``); the sequences, fullest last, make micro-batches of ``row_unit`` sequences, each cut to the
    ladder length of its fullest sequence. The loss and its gradient are those of the padded layout
    (``rl.loss`` works per token and per row id); only the padding is gone.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from skill1_jax.rl.batch import TERM_KINDS, Segment, TrainBatch
from skill1_jax.rl.config import ROW_LAYOUTS


@dataclasses.dataclass(frozen=True)
class Row:
    """One generated segment: prompt ⧺ response, loss on the response.

    Attributes:
      prompt_ids: [P] int token ids the sampler was prompted with.
      response_ids: [R] int token ids the sampler produced (including a stop string's / EOS token).
      logprobs: [R] float raw-policy log-probs of ``response_ids`` at sampling time (π_old).
      kind: the response's ``Segment``.
      advantage: the row's scalar advantage (by kind: Â_util, its play turn's advantage, NDCG or Â_distill).
      group: task group id.
      truncated: the reply was cut by the length limit (no loss, see module docstring).
      weight: the loss weight of each response token (1; ``rollout_mean_weights`` sets 1/|τ_i|).
      overlong: the prompt is over the prompt limit (no loss, see module docstring).
    """

    prompt_ids: np.ndarray
    response_ids: np.ndarray
    logprobs: np.ndarray
    kind: Segment
    advantage: float
    group: int
    truncated: bool = False
    weight: float = 1.0
    overlong: bool = False

    @property
    def trained(self) -> bool:
        """The row carries loss: neither truncated nor overlong."""
        return not (self.truncated or self.overlong)

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
    """Right-padded host ``TrainBatch`` with one of ``rows`` per sequence, plus all-padding sequences up to
    ``num_rows``; ref_logp is 0 (filled by the reference forward)."""
    return pack_sequences([[row] for row in rows], num_rows, seq_len)


def pack_sequences(sequences: Sequence[Sequence[Row]], num_rows: int, seq_len: int) -> TrainBatch:
    """Host ``TrainBatch`` whose sequence b holds the rows ``sequences[b]`` end to end (row ids 1, 2, …, positions
    from 0 on each), right-padded to ``seq_len``, plus all-padding sequences up to ``num_rows``; ref_logp is 0."""
    if len(sequences) > num_rows:
        raise ValueError(f"{len(sequences)} sequences do not fit a batch of {num_rows}")
    shape = (num_rows, seq_len)
    tokens, positions, row_id, group = (np.zeros(shape, np.int32) for _ in range(4))
    loss, old, advantage = (np.zeros(shape, np.float32) for _ in range(3))
    seg = np.zeros(shape, np.int8)
    for b, rows in enumerate(sequences):
        if sum(row.length for row in rows) > seq_len:
            raise ValueError(f"a sequence of {sum(row.length for row in rows)} tokens does not fit seq_len {seq_len}")
        start = 0
        for k, row in enumerate(rows, start=1):
            p, r = len(row.prompt_ids), len(row.response_ids)
            if len(row.logprobs) != r:
                raise ValueError(f"row has {r} response tokens but {len(row.logprobs)} log-probs")
            span, response = slice(start, start + p + r), slice(start + p, start + p + r)
            tokens[b, span] = np.concatenate([row.prompt_ids, row.response_ids])
            positions[b, span] = np.arange(p + r)
            row_id[b, span] = k
            advantage[b, span] = row.advantage
            group[b, span] = row.group
            seg[b, response] = int(row.kind)
            old[b, response] = row.logprobs
            if row.trained:
                loss[b, response] = row.weight
            start += p + r
    return TrainBatch(tokens=tokens, positions=positions, attention_mask=row_id > 0, row_id=row_id, loss_mask=loss,
                      segment=seg, old_logp=old, ref_logp=np.zeros_like(old), advantage=advantage, group_id=group)


def first_fit_decreasing(rows: Sequence[Row], seq_len: int) -> list[list[Row]]:
    """Bins of at most ``seq_len`` tokens: the rows longest first (stable), each into the first bin it fits."""
    bins: list[list[Row]] = []
    free: list[int] = []
    for row in sorted(rows, key=lambda r: -r.length):
        if row.length > seq_len:
            raise ValueError(f"row of {row.length} tokens does not fit seq_len {seq_len}")
        b = next((i for i, room in enumerate(free) if row.length <= room), len(bins))
        if b == len(bins):
            bins.append([])
            free.append(seq_len)
        bins[b].append(row)
        free[b] -= row.length
    return bins


def rollout_mean_weights(rows: Sequence[Row], rollout: Sequence[int], objective: str) -> list[Row]:
    """``rows`` with the ``rollout-mean`` token weights (paper Eq. 13, Appendix B: the loss is averaged 1/|τ_i| over
    rollout i's tokens, then over rollouts): every trained token of rollout i in loss term t weighs 1 / (rollout i's
    trained tokens in term t). ``rollout[j]`` is row j's rollout; the terms are ``batch.TERM_KINDS`` for the
    ``skill1`` objective and one term over every kind for ``grpo``. Rows that are not ``trained`` count nothing.
    """
    term = ({k: name for name, kinds in TERM_KINDS.items() for k in kinds} if objective == "skill1"
            else dict.fromkeys(Segment, "response"))
    tokens: dict[tuple[int, str], int] = {}
    for row, i in zip(rows, rollout):
        if row.trained:
            tokens[i, term[row.kind]] = tokens.get((i, term[row.kind]), 0) + len(row.response_ids)
    return [row if not row.trained else dataclasses.replace(row, weight=1.0 / max(tokens[i, term[row.kind]], 1))
            for row, i in zip(rows, rollout)]


def mini_batches(rows: Sequence[Row], *, mini_batch_size: int, row_unit: int, length_bucket: int,
                 seed: int, layout: str = "padded") -> list[list[TrainBatch]]:
    """Shuffles the trainable ``rows`` (seeded), splits them into mini-batches of length-grouped micro-batches.

    Args:
      rows: the step's segments (truncated and overlong ones are left out: they carry no loss, see module
        docstring).
      mini_batch_size: rows per optimizer update (rounded up to a multiple of ``row_unit``).
      row_unit: micro-batch sequences × data-parallel devices: the sequence count of every micro-batch.
      length_bucket: base of the token-length ladder.
      seed: shuffle seed (the run seed folded with the step: resumes replay it exactly).
      layout: ``"padded"`` (one row per sequence) or ``"packed"`` (module docstring).

    Returns:
      One list of ``TrainBatch`` micro-batches per optimizer update, shortest first.
    """
    if layout not in ROW_LAYOUTS:
        raise ValueError(f"row layout must be one of {ROW_LAYOUTS}, got {layout!r}")
    rows = [r for r in rows if r.trained]
    per_update = -(-mini_batch_size // row_unit) * row_unit
    order = np.random.default_rng(seed).permutation(len(rows))
    out = []
    for start in range(0, len(rows), per_update):
        chunk = [rows[i] for i in order[start:start + per_update]]
        if layout == "padded":
            sequences = [[row] for row in sorted(chunk, key=lambda r: r.length)]  # stable
        else:
            bins = first_fit_decreasing(chunk, bucket(max(r.length for r in chunk), length_bucket))
            sequences = sorted(bins, key=lambda rows: sum(r.length for r in rows))  # stable
        first = len(sequences) % row_unit or row_unit  # the one part that is topped up: the shortest
        parts = [sequences[:first]] + [sequences[m:m + row_unit] for m in range(first, len(sequences), row_unit)]
        out.append([pack_sequences(part, row_unit, bucket(sum(r.length for r in part[-1]), length_bucket))
                    for part in parts])
    return out


def layout_stats(batches: Sequence[Sequence[TrainBatch]]) -> dict[str, float]:
    """Tokens the update computes (sequences × length, over every micro-batch), the real ones among them and the
    padding fraction: padded ÷ computed."""
    computed = sum(b.tokens.size for micro in batches for b in micro)
    real = sum(int(np.sum(b.attention_mask)) for micro in batches for b in micro)
    return {"update/computed_tokens": float(computed), "update/real_tokens": float(real),
            "update/padding_fraction": (computed - real) / computed if computed else 0.0}


def row_stats(rows: Sequence[Row]) -> dict[str, float]:
    """Counts per segment kind (rows, response tokens), truncated rows and rows with an overlong prompt."""
    stats: dict[str, float] = {"rows/total": float(len(rows)),
                               "rows/truncated": float(sum(r.truncated for r in rows)),
                               "rows/overlong": float(sum(r.overlong for r in rows))}
    for kind in (Segment.QUERY, Segment.RANK, Segment.ACTION, Segment.DISTILL):
        mine = [r for r in rows if r.kind == kind]
        name = kind.name.lower()
        stats[f"rows/{name}"] = float(len(mine))
        stats[f"tokens/{name}_response"] = float(sum(len(r.response_ids) for r in mine))
        stats[f"tokens/{name}_prompt"] = float(sum(len(r.prompt_ids) for r in mine))
    return stats
