"""Grouped-query attention: dense, blocked (online softmax, no T×S matrix), cuDNN and Pallas splash, by platform.

Axis letters as in ``qwen2.py``: B batch, T query length, S key length, N query heads, K kv heads, G = N // K,
H head dim. Every implementation takes q [B,T,N,H], k/v [B,S,K,H] and a boolean mask [B,T,S] (True = attend)
and computes ``softmax(q·kᵀ/√H masked) · v`` with the softmax in float32.

* ``dense``: the reference; materialises the float32 scores [B,K,G,T,S]. Fastest for short sequences.
* ``blocked``: FlashAttention-2's online softmax (Dao 2023, Alg. 1 forward / Alg. 2 backward) in plain JAX with a
  custom VJP. It holds one [B,K,G,block,block] score tile at a time and saves only the output and the per-row
  max / normaliser for the backward pass, so neither direction ever materialises the T×S matrix. The portable
  default for long sequences.
* ``cudnn``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (fused flash attention on NVIDIA GPUs;
  bf16/fp16 only, head dim a multiple of 8 and ≤ 128).
* ``splash``: the Pallas TPU splash-attention kernel with a causal mask and segment ids (self-attention only).

Packed rows (``rl.rows``: several training rows in one sequence) are described by segment ids [B, T] (0 on padding,
k ≥ 1 on the k-th row): the mask is then causal ∧ same id ∧ key is real, and splash takes the ids natively.

Fully-masked query rows (padding) stay finite: masked scores are filled with a finite minimum, as the dense code
always did, so such a row averages the values uniformly instead of producing NaN. ``dense``, ``blocked`` and
``cudnn`` give identical results on every row; ``splash`` matches them on real-token rows (see its docstring).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from skill1_jax.model.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS
from skill1_jax.parallel.sharding import active_activation_sharding, logical_to_spec

Array = jax.Array

# ``auto`` stays dense while one head's score matrix has at most this many entries (4 MiB in float32, e.g.
# 1024 × 1024; decoding, T = 1, is always dense). Measured on CPU (benchmarks/attention.py): up to one 512-tile
# both run and compile alike; at 1024 blocked runs 0.6x as long but compiles 2.5x as long, and tests and sampling
# on short rows are compile-bound; from 2048 on blocked is faster (0.5-0.8x) and needs 1/10-1/40 of the memory.
AUTO_DENSE_MAX_SCORES = 1024 * 1024

# A finite fill for masked scores: a fully-masked row then softmaxes to a uniform average, not NaN.
_MASKED = float(jnp.finfo(jnp.float32).min)


def select_implementation(requested: str, platform: str, q_len: int, kv_len: int, dtype, head_dim: int,
                          block_size: int) -> str:
    """The attention implementation to run: ``requested`` unless it is ``"auto"``.

    ``auto``: dense for short inputs (``AUTO_DENSE_MAX_SCORES``); otherwise cuDNN on GPU and splash on TPU when
    the shapes and dtype suit the kernel, else the portable blocked version. An explicitly requested kernel that
    the platform cannot run raises.
    """
    if requested not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {requested!r}")
    if requested in ("dense", "blocked"):
        return requested
    if requested in ("cudnn", "splash"):
        wanted = "gpu" if requested == "cudnn" else "tpu"
        if platform != wanted:
            raise ValueError(f"attention={requested!r} runs only on {wanted.upper()}, but the backend is {platform!r}; "
                             f"use 'auto', 'blocked' or 'dense'")
        return requested
    if q_len * kv_len <= AUTO_DENSE_MAX_SCORES:
        return "dense"
    if platform == "gpu" and _cudnn_supports(q_len, kv_len, dtype, head_dim):
        return "cudnn"
    if platform == "tpu" and _splash_block(q_len, kv_len, block_size) is not None:
        return "splash"
    return "blocked"


def attention(q: Array, k: Array, v: Array, mask: Array, *, segment_ids: Array | None = None,
              implementation: str = "auto", block_size: int = 512) -> Array:
    """GQA attention by ``implementation`` (see the module docstring); ``auto`` decides by ``jax.default_backend()``.

    ``segment_ids`` [B, T] (self-attention over packed rows; ``mask`` must then be the mask they define) go to the
    kernels that take them natively (splash); the others read ``mask``.
    """
    impl = select_implementation(implementation, jax.default_backend(), q.shape[1], k.shape[1], q.dtype,
                                 q.shape[-1], block_size)
    if impl == "dense":
        return dense_attention(q, k, v, mask)
    if impl == "blocked":
        return blocked_attention(q, k, v, mask, block_size)
    if impl == "cudnn":
        return cudnn_attention(q, k, v, mask)
    return splash_attention(q, k, v, mask, block_size, segment_ids=segment_ids)


def segment_mask(segment_ids: Array) -> Array:
    """The [B, T, T] self-attention mask of packed rows: causal ∧ same segment id ∧ key is real (id > 0)."""
    t = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return jnp.tril(jnp.ones((t, t), bool))[None] & same & (segment_ids[:, None, :] > 0)


def dense_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """softmax(q·kᵀ/√H) · v over the full [B,K,G,T,S] float32 score matrix (the reference implementation)."""
    b, t, n, h = q.shape
    kh = k.shape[2]
    q = q.reshape(b, t, kh, n // kh, h)
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(h)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(b, t, n, h)


# ---- blocked (online-softmax) attention ---------------------------------------------------------------------

def blocked_attention(q: Array, k: Array, v: Array, mask: Array, block_size: int = 512) -> Array:
    """FlashAttention-2 in JAX: tiles of ``block_size`` queries × ``block_size`` keys, never the T×S matrix.

    T and S need not be multiples of the block: the inputs are padded, padded keys get a score of −∞ (they carry
    no weight even in a fully-masked row) and padded query rows are dropped.
    """
    if block_size <= 0:
        raise ValueError(f"attention block size must be positive, got {block_size}")
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    bq, bk = min(block_size, t), min(block_size, s)
    q5 = _pad_axis(q.reshape(b, t, kh, n // kh, h), 1, bq)
    k, v = _pad_axis(k, 1, bk), _pad_axis(v, 1, bk)
    mask = _pad_axis(_pad_axis(mask, 1, bq), 2, bk)
    out = _flash(q5, k, v, mask, s, bq, bk)
    return out[:, :t].reshape(b, t, n, h)


def _pad_axis(x: Array, axis: int, multiple: int) -> Array:
    pad = -x.shape[axis] % multiple
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def _tile_scores(qi: Array, kj: Array, mask_ij: Array, j: Array, kv_len: int) -> Array:
    """Scaled, masked float32 scores of one tile [B,K,G,bq,bk]; keys past ``kv_len`` (padding) get −∞."""
    h, bk = qi.shape[-1], kj.shape[1]
    scores = jnp.einsum("bqkgh,bskh->bkgqs", qi, kj, preferred_element_type=jnp.float32) / jnp.sqrt(h)
    # The masks depend only on non-differentiated inputs, so under remat autodiff would evaluate their
    # head-broadcast copies ahead of time for every tile and keep them all (B·N·T·S bytes). Passing them through
    # a barrier together with the scores ties them to the recomputed values.
    scores, mask_ij, key_real = jax.lax.optimization_barrier((scores, mask_ij, j * bk + jnp.arange(bk) < kv_len))
    scores = jnp.where(mask_ij[:, None, None], scores, _MASKED)
    return jnp.where(key_real, scores, -jnp.inf)


def _slice(x: Array, axis: int, index: Array, size: int) -> Array:
    return jax.lax.dynamic_slice_in_dim(x, index * size, size, axis)


def _flash_forward(q: Array, k: Array, v: Array, mask: Array, kv_len: int, bq: int, bk: int):
    """Forward pass (FlashAttention-2 Alg. 1): per query tile, a running max m, normaliser l and output sum.

    q [B,T,K,G,H] and k/v [B,S,K,H] are padded to whole tiles. Returns out [B,T,K,G,H] and m, l [B,K,G,T].
    """
    b, t, kh, g, h = q.shape
    nq, nk = t // bq, k.shape[1] // bk

    def query_tile(i):
        qi, mask_i = _slice(q, 1, i, bq), _slice(mask, 1, i, bq)

        def key_tile(carry, j):
            m, l, acc = carry
            scores = _tile_scores(qi, _slice(k, 1, j, bk), _slice(mask_i, 2, j, bk), j, kv_len)
            # The first tile always holds key 0 (a real key), so m is finite from then on and exp never sees
            # −∞ − (−∞).
            m_new = jnp.maximum(m, scores.max(-1))
            p = jnp.exp(scores - m_new[..., None])
            rescale = jnp.exp(m - m_new)
            l = l * rescale + p.sum(-1)
            pv = jnp.einsum("bkgqs,bskh->bkgqh", p.astype(v.dtype), _slice(v, 1, j, bk),
                            preferred_element_type=jnp.float32)
            return (m_new, l, acc * rescale[..., None] + pv), None

        init = (jnp.full((b, kh, g, bq), _MASKED, jnp.float32), jnp.zeros((b, kh, g, bq), jnp.float32),
                jnp.zeros((b, kh, g, bq, h), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(key_tile, init, jnp.arange(nk))
        return (acc / l[..., None]).astype(v.dtype), m, l

    out, m, l = jax.lax.map(query_tile, jnp.arange(nq))  # [nq, B, K, G, bq, (H)]
    out = jnp.moveaxis(out, (0, 4), (1, 2)).reshape(b, t, kh, g, h)
    m, l = (jnp.moveaxis(x, 0, 3).reshape(b, kh, g, t) for x in (m, l))
    return out, m, l


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _flash(q: Array, k: Array, v: Array, mask: Array, kv_len: int, bq: int, bk: int) -> Array:
    return _flash_forward(q, k, v, mask, kv_len, bq, bk)[0]


def _flash_fwd(q, k, v, mask, kv_len, bq, bk):
    out, m, l = _flash_forward(q, k, v, mask, kv_len, bq, bk)
    return out, (q, k, v, mask, out, m, l)


def _flash_bwd(kv_len, bq, bk, residuals, d_out):
    """Backward pass (FlashAttention-2 Alg. 2): probabilities are recomputed per tile from the saved m and l.

    Outer loop over key tiles (accumulating dK, dV of the tile), inner loop over query tiles (each contributes a
    dQ tile). ``dS = P ∘ (dP − rowsum(dO ∘ O))`` is zeroed where the mask is False, exactly as autodiff of the
    dense ``where`` would.
    """
    q, k, v, mask, out, m, l = residuals
    b, t, kh, g, h = q.shape
    nq, nk = t // bq, k.shape[1] // bk
    delta = jnp.einsum("btkgh,btkgh->bkgt", d_out.astype(jnp.float32), out.astype(jnp.float32))

    def key_tile(dq, j):
        kj, vj = _slice(k, 1, j, bk), _slice(v, 1, j, bk)

        def query_tile(carry, i):
            dk, dv = carry
            qi, doi = _slice(q, 1, i, bq), _slice(d_out, 1, i, bq)
            mask_ij = _slice(_slice(mask, 1, i, bq), 2, j, bk)
            scores = _tile_scores(qi, kj, mask_ij, j, kv_len)
            p = jnp.exp(scores - _slice(m, 3, i, bq)[..., None]) / _slice(l, 3, i, bq)[..., None]
            dv = dv + jnp.einsum("bkgqs,bqkgh->bskh", p.astype(doi.dtype), doi, preferred_element_type=jnp.float32)
            dp = jnp.einsum("bqkgh,bskh->bkgqs", doi, vj, preferred_element_type=jnp.float32)
            ds = jnp.where(mask_ij[:, None, None], p * (dp - _slice(delta, 3, i, bq)[..., None]), 0.0) / jnp.sqrt(h)
            dk = dk + jnp.einsum("bkgqs,bqkgh->bskh", ds.astype(qi.dtype), qi, preferred_element_type=jnp.float32)
            dqi = jnp.einsum("bkgqs,bskh->bqkgh", ds.astype(kj.dtype), kj, preferred_element_type=jnp.float32)
            return (dk, dv), dqi

        zeros = jnp.zeros((b, bk, kh, h), jnp.float32)
        (dk, dv), dq_tiles = jax.lax.scan(query_tile, (zeros, zeros), jnp.arange(nq))
        return dq + jnp.moveaxis(dq_tiles, 0, 1).reshape(q.shape), (dk, dv)

    dq, (dk, dv) = jax.lax.scan(key_tile, jnp.zeros(q.shape, jnp.float32), jnp.arange(nk))
    dk, dv = (jnp.moveaxis(x, 0, 1).reshape(k.shape) for x in (dk, dv))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ---- accelerator kernels ------------------------------------------------------------------------------------

def _cudnn_supports(q_len: int, kv_len: int, dtype, head_dim: int) -> bool:
    """cuDNN flash attention's documented limits (jax ``check_is_flash_attention``): fp16/bf16, H % 8 == 0 and
    H ≤ 128 (256 on Hopper; we keep the portable bound), even lengths when a mask (bias) is trained through."""
    return (jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) and head_dim % 8 == 0
            and head_dim <= 128 and q_len % 2 == 0 and kv_len % 2 == 0)


def cudnn_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """cuDNN fused attention; the mask becomes cuDNN's additive bias with a finite large negative value, so
    fully-masked rows stay finite as in ``dense_attention``. cuDNN's op carries its own SPMD partitioning rule.

    Packed rows get the full mask, not segment ids: in jax 0.10.2 the public ``jax.nn.dot_product_attention`` takes
    no segment ids or packed offsets. Only the private ``jax._src.cudnn.fused_attention_stablehlo`` takes packed
    offsets (``q_offsets``/``kv_offsets``, Hopper or later), with a static maximum of rows per sequence and no
    defined output on tokens outside every row, where padding's NaN would reach the weight gradients."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="cudnn")


def _splash_block(q_len: int, kv_len: int, block_size: int) -> int | None:
    """Splash tile size: the largest divisor of the sequence that divides ``block_size`` and is a multiple of the
    kernel's 128 lanes; None when there is none or the call is not self-attention (T ≠ S)."""
    if q_len != kv_len:
        return None
    block = math.gcd(q_len, block_size)
    return block if block % 128 == 0 else None


def splash_attention(q: Array, k: Array, v: Array, mask: Array, block_size: int = 512, *,
                     segment_ids: Array | None = None, interpret: bool = False) -> Array:
    """Pallas splash attention (TPU) for causal self-attention (T == S) over a padded or packed batch.

    Splash takes a static mask, so the batch's dynamic rows are passed as segment ids and the kernel attends where
    ``causal ∧ same id``. Packed rows pass theirs (``segment_ids``, 0 on padding); without them a token's id is 1
    when some query attends to it (a real token) and 0 otherwise, which equals ``mask`` whenever ``mask = causal ∧
    key is real``. Either way every real-token row matches ``mask``; padding rows attend to padding instead of
    averaging everything (both are finite and ignored by the loss). ``interpret=True`` runs the kernel in the
    Pallas interpreter (CPU tests).

    The kernel handles one sequence, so it is vmapped over the batch and, inside an activation-sharding context,
    wrapped in ``shard_map`` over the batch axes (a Pallas call has no SPMD partitioning rule of its own).
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    b, t, n, h = q.shape
    block = _splash_block(t, k.shape[1], block_size)
    if block is None:
        raise ValueError(f"splash attention needs self-attention with a length that a multiple of 128 dividing "
                         f"block_size {block_size} divides; got T={t}, S={k.shape[1]}")
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    kernel = splash.make_splash_mha(splash.MultiHeadMask([splash.CausalMask((t, t))] * n), block_sizes=sizes,
                                    head_shards=1, q_seq_shards=1, interpret=interpret)
    segments = (jnp.any(mask, axis=1) if segment_ids is None else segment_ids).astype(jnp.int32)  # [B, S]

    def one_row(q, k, v, seg):  # splash's layout is heads-major: q [N,T,H], k/v [K,S,H]
        out = kernel(q.swapaxes(0, 1), k.swapaxes(0, 1), v.swapaxes(0, 1), segment_ids=splash.SegmentIds(seg, seg))
        return out.swapaxes(0, 1)

    run = jax.vmap(one_row)
    active = active_activation_sharding()
    if active is not None:
        mesh, rules = active
        spec = jax.sharding.PartitionSpec(logical_to_spec(("batch",), (b,), mesh, rules)[0])
        run = jax.shard_map(run, mesh=mesh, in_specs=(spec,) * 4, out_specs=spec, check_vma=False)
    # Splash does not scale the logits itself.
    return run((q / jnp.sqrt(h).astype(q.dtype)), k, v, segments)
