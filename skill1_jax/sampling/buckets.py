"""Shape buckets for sampling: every (batch, prompt length) is padded up to a bucket so compilations stay bounded.

A jitted program is specialised to its input shapes. Rollouts produce batches of every size (episodes finish at
different turns) and prompts of every length (the history grows each turn), so without bucketing each turn of an
ALFWorld episode would compile a new prefill and decode program. Padding costs compute (at most ~50% extra prompt
tokens with the default 1.5×/2× ladder, and dummy rows) but the number of programs becomes
``len(batch buckets hit) × len(prompt buckets hit)`` per sampling configuration.

Decoding is bucketed too: the cache grows in windows of ``decode_chunk`` slots and each decode segment attends
over its window only, not over the whole prompt + max_new_tokens allocation. The windows depend only on the prompt
bucket and max_new_tokens, so each (batch, prompt bucket, config) compiles at most ⌈(N − 1) / chunk⌉ decode
programs, and only those for windows some batch actually reaches.
"""

from __future__ import annotations

import bisect
import dataclasses


def _ladder(lo: int, hi: int) -> tuple[int, ...]:
    """lo, 1.5·lo, 2·lo, 3·lo, 4·lo, ... up to hi: powers of two and 1.5× powers of two."""
    out, p = [], lo
    while p <= hi:
        out.append(p)
        if p * 3 // 2 <= hi:
            out.append(p * 3 // 2)
        p *= 2
    return tuple(out)


DEFAULT_PROMPT_BUCKETS = _ladder(64, 32768)  # 64, 96, 128, 192, ..., 24576, 32768
DEFAULT_BATCH_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Allowed padded sizes.

    Attributes:
      prompt_lengths: increasing prompt lengths; a batch is left-padded to the smallest one ≥ its longest prompt.
      batch_sizes: increasing batch sizes; a batch gets dummy rows (done from the start) up to the smallest one
        ≥ its size. Multiples of the mesh's batch axes (8 on a v4-8 / 8 fake CPUs) shard evenly; smaller ones
        run replicated.
      decode_chunk: cache slots added per decode window. Smaller attends over fewer empty slots, larger compiles
        fewer decode programs.
    """

    prompt_lengths: tuple[int, ...] = DEFAULT_PROMPT_BUCKETS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_BUCKETS
    decode_chunk: int = 128

    def __post_init__(self):
        for name in ("prompt_lengths", "batch_sizes"):
            v = getattr(self, name)
            if not v or any(x <= 0 for x in v) or list(v) != sorted(set(v)):
                raise ValueError(f"Buckets.{name} must be strictly increasing positive ints, got {v}")
        if self.decode_chunk <= 0:
            raise ValueError(f"Buckets.decode_chunk must be positive, got {self.decode_chunk}")

    @staticmethod
    def _pick(options: tuple[int, ...], n: int, what: str) -> int:
        i = bisect.bisect_left(options, n)
        if i == len(options):
            raise ValueError(f"{what} {n} exceeds the largest bucket {options[-1]}; add a larger bucket to "
                             f"Buckets or split the batch")
        return options[i]

    def prompt_length(self, n: int) -> int:
        """Smallest prompt-length bucket ≥ n."""
        return self._pick(self.prompt_lengths, n, "prompt length")

    def batch_size(self, n: int) -> int:
        """Smallest batch bucket ≥ n."""
        return self._pick(self.batch_sizes, n, "batch size")

    def decode_windows(self, prompt_length: int, max_new_tokens: int) -> tuple[int, ...]:
        """Cache lengths of the decode segments after a prefill of ``prompt_length`` (bucketed) slots: P + chunk,
        P + 2·chunk, ..., ending at P + N − 1, the slots that feeding tokens 1..N−1 fills (token N is sampled but
        never fed). Empty when N = 1."""
        end = prompt_length + max_new_tokens - 1
        return tuple(min(w, end) for w in range(prompt_length + self.decode_chunk, end + self.decode_chunk,
                                                 self.decode_chunk))
