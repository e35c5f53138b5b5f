"""Qwen2 / Qwen2.5 decoder in flax.nnx: RMSNorm, rotate-half RoPE, GQA with q/k/v bias, SwiGLU, tied or untied head.

Axis letters used in names and einsums:
  B batch   T query length   S key/cache length   D hidden   N query heads   K kv heads   G = N // K
  H head dim   F MLP width   V vocabulary   L layers

Decoder blocks are stored stacked along a leading ``layers`` axis and run with ``lax.scan``: compile time does not
grow with depth, and ``remat`` wraps one block. Every parameter has logical axis names (``out_sharding``
metadata) consumed by ``skill1_jax.parallel.sharding``'s rule table.

Padding and positions are explicit: callers pass ``positions`` [B, T] and ``attention_mask`` [B, T] (True for real
tokens), so left-padded batches behave exactly like unpadded rows. With a ``KVCache`` (``cached_hidden_states``,
used by the sampler) the new keys/values are written at ``cache.index`` and attention covers the valid cache slots
up to each query's slot; that path unrolls the layers instead of scanning them (see its docstring).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from skill1_jax.model.attention import attention, segment_mask
from skill1_jax.model.config import ModelConfig
from skill1_jax.parallel.sharding import constrain

Array = jax.Array

# Logical axis names of every parameter, keyed by attribute name (blocks carry a leading "layers" axis).
PARAM_AXES: dict[str, tuple[str, ...]] = {
    "embed": ("vocab", "embed"),
    "final_norm": ("norm",),
    "lm_head": ("embed", "vocab"),
    "attn_norm": ("layers", "norm"),
    "q_kernel": ("layers", "embed", "heads", "head_dim"),
    "q_bias": ("layers", "heads", "head_dim"),
    "k_kernel": ("layers", "embed", "kv_heads", "head_dim"),
    "k_bias": ("layers", "kv_heads", "head_dim"),
    "v_kernel": ("layers", "embed", "kv_heads", "head_dim"),
    "v_bias": ("layers", "kv_heads", "head_dim"),
    "o_kernel": ("layers", "heads", "head_dim", "embed"),
    "mlp_norm": ("layers", "norm"),
    "gate_kernel": ("layers", "embed", "mlp"),
    "up_kernel": ("layers", "embed", "mlp"),
    "down_kernel": ("layers", "mlp", "embed"),
}
# What a rematerialised decoder block saves for its backward pass (``ModelConfig.remat_policy``): nothing but its
# input, or also the outputs of the weight matmuls (dots without batch dimensions; attention's dots have them).
_CHECKPOINT_POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
                        "save_matmuls": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}
BLOCK_PARAMS = tuple(k for k, v in PARAM_AXES.items() if v[0] == "layers")
CACHE_AXES = ("batch", "kv_heads", "cache_length", "head_dim")  # of one layer's cache array


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter (the lm_head only when untied)."""
    L, D, N, K, H, F, V = (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                           cfg.intermediate_size, cfg.vocab_size)
    shapes = {
        "embed": (V, D), "final_norm": (D,), "lm_head": (D, V),
        "attn_norm": (L, D), "q_kernel": (L, D, N, H), "q_bias": (L, N, H),
        "k_kernel": (L, D, K, H), "k_bias": (L, K, H), "v_kernel": (L, D, K, H), "v_bias": (L, K, H),
        "o_kernel": (L, N, H, D), "mlp_norm": (L, D),
        "gate_kernel": (L, D, F), "up_kernel": (L, D, F), "down_kernel": (L, F, D),
    }
    if cfg.tie_word_embeddings:
        del shapes["lm_head"]
    return shapes


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Keys and values, one [B, K, S, H] array per layer; which slots hold real tokens [B, S]; the next write slot.

    One array per layer rather than a stacked [L, ...] one, and kv heads before slots: a decode step then updates
    each layer's array in place and the attention dots read it as stored. On XLA:CPU, taking a layer out of a
    stacked cache, or an [S, K] layout, copies the whole layer cache on every token.
    """

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    valid: Array
    index: Array  # int32 scalar

    @classmethod
    def zeros(cls, cfg: ModelConfig, batch: int, length: int, dtype: Any) -> "KVCache":
        shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
        def per_layer():
            return tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))

        return cls(k=per_layer(), v=per_layer(), valid=jnp.zeros((batch, length), bool),
                   index=jnp.zeros((), jnp.int32))

    @property
    def length(self) -> int:
        return self.valid.shape[1]

    def grow(self, length: int) -> "KVCache":
        """This cache with empty slots appended up to ``length`` slots (the next decode window)."""
        extra = length - self.length
        if extra < 0:
            raise ValueError(f"cannot grow a cache of {self.length} slots to {length}")

        def pad(x):
            return jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0)))

        return KVCache(k=tuple(map(pad, self.k)), v=tuple(map(pad, self.v)),
                       valid=jnp.pad(self.valid, ((0, 0), (0, extra))), index=self.index)


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """RMSNorm computed in float32 (as HF Qwen2 does), returned in ``x``'s dtype."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (weight.astype(jnp.float32) * y).astype(x.dtype)


def rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotate-half rotary embedding (first half / second half, not interleaved pairs). x: [B, T, *, H]."""
    h = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., h // 2:], x32[..., : h // 2]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def _attention(cfg: ModelConfig, q: Array, k: Array, v: Array, mask: Array,
               segment_ids: Array | None = None) -> Array:
    """GQA attention. q [B,T,N,H], k/v [B,S,K,H], mask [B,T,S] (True = attend), the packed rows' segment ids [B,T]
    that define it if any; ``cfg.attention`` picks the kernel."""
    return attention(q, k, v, mask, segment_ids=segment_ids, implementation=cfg.attention,
                     block_size=cfg.attention_block)


def _attention_inputs(cfg: ModelConfig, x: Array, p: dict[str, Array], positions: Array) -> tuple[Array, Array, Array]:
    """A block's q [B,T,N,H] and k/v [B,T,K,H]: RMSNorm, the biased projections, RoPE on q and k."""
    dt = x.dtype
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q = jnp.einsum("btd,dnh->btnh", h, p["q_kernel"].astype(dt)) + p["q_bias"].astype(dt)
    k = jnp.einsum("btd,dkh->btkh", h, p["k_kernel"].astype(dt)) + p["k_bias"].astype(dt)
    v = jnp.einsum("btd,dkh->btkh", h, p["v_kernel"].astype(dt)) + p["v_bias"].astype(dt)
    q, k = rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta)
    return constrain(q, ("batch", "length", "heads", "head_dim")), k, v


def _mlp(cfg: ModelConfig, x: Array, p: dict[str, Array]) -> Array:
    """The SwiGLU MLP on the post-attention residual stream x [B,T,D] (its RMSNorm included)."""
    dt = x.dtype
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    gate = jnp.einsum("btd,df->btf", h, p["gate_kernel"].astype(dt))
    up = jnp.einsum("btd,df->btf", h, p["up_kernel"].astype(dt))
    mlp = constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    return jnp.einsum("btf,fd->btd", mlp, p["down_kernel"].astype(dt))


def _chunked_mlp(cfg: ModelConfig, x: Array, p: dict[str, Array], chunks: int) -> Array:
    """``_mlp`` over ``chunks`` sequence chunks, each rematerialised: the backward holds one chunk's [B, T/chunks, F]
    activations instead of the whole sequence's, for one more MLP forward (``ModelConfig.mlp_chunks``)."""
    b, t, d = x.shape
    c = -(-t // chunks)
    xs = jnp.pad(x, ((0, 0), (0, c * chunks - t), (0, 0))).reshape(b, chunks, c, d).swapaxes(0, 1)
    out = jax.lax.map(jax.checkpoint(lambda xc: _mlp(cfg, xc, p)), xs)
    return out.swapaxes(0, 1).reshape(b, c * chunks, d)[:, :t]


def _block_output(cfg: ModelConfig, x: Array, attn: Array, p: dict[str, Array], mlp_chunks: int = 1) -> Array:
    """The rest of a block after attention [B,T,N,H]: output projection and residual, SwiGLU MLP and residual."""
    # One [N·H, D] matrix, not an (n, h) contraction: XLA:CPU then transposes the small activation instead of
    # copying the [N, H, D] weight into its preferred order (1 MB per layer per token in the sampler's decode).
    b, t, n, h = attn.shape
    x = x + jnp.einsum("btf,fd->btd", attn.reshape(b, t, n * h), p["o_kernel"].astype(x.dtype).reshape(n * h, -1))
    x = x + (_mlp(cfg, x, p) if mlp_chunks == 1 else _chunked_mlp(cfg, x, p, mlp_chunks))
    return constrain(x, ("batch", "length", "embed"))


def _block(cfg: ModelConfig, x: Array, p: dict[str, Array], positions: Array, mask: Array,
           segment_ids: Array | None = None) -> Array:
    """One decoder block over whole sequences (no cache)."""
    q, k, v = _attention_inputs(cfg, x, p, positions)
    return _block_output(cfg, x, _attention(cfg, q, k, v, mask, segment_ids), p, cfg.mlp_chunks)


def _cached_block(cfg: ModelConfig, x: Array, p: dict[str, Array], positions: Array, mask: Array,
                  k_cache: Array, v_cache: Array, index: Array) -> tuple[Array, Array, Array]:
    """One decoder block on top of its layer's cache [B,K,S,H]: writes the new keys/values at slot ``index`` and
    attends over all slots (``mask`` [B,T,S] hides empty and future ones). Returns x and the updated k/v caches."""
    q, k, v = _attention_inputs(cfg, x, p, positions)
    k_cache = jax.lax.dynamic_update_slice(k_cache, k.swapaxes(1, 2).astype(k_cache.dtype), (0, 0, index, 0))
    v_cache = jax.lax.dynamic_update_slice(v_cache, v.swapaxes(1, 2).astype(v_cache.dtype), (0, 0, index, 0))
    attn = _attention(cfg, q, k_cache.swapaxes(1, 2).astype(x.dtype), v_cache.swapaxes(1, 2).astype(x.dtype), mask)
    return _block_output(cfg, x, attn, p), k_cache, v_cache


def _identity_rows(fn, *xs):
    return fn(*xs)


def _slot_attention(q: Array, k: Array, v: Array, valid: Array, chunk: int | None = None) -> Array:
    """GQA of one query per row q [B,1,N,H] over that row's cache k/v [B,K,S,H] as stored (no transpose), valid
    slots ``valid`` [B,S]; float32 softmax, masked slots filled as in ``attention.py``.

    With ``chunk``, the softmax's sum and the value sum run over fixed chunks of ``chunk`` slots, added one chunk
    after the other: chunks past a row's end add exact zeros, so a row's result is the same bits whatever S is (a
    reduction over the whole S may group the same terms differently for another S)."""
    b, _, n, h = q.shape
    kh = k.shape[1]
    q = q.reshape(b, kh, n // kh, h)
    scores = jnp.einsum("bkgh,bksh->bkgs", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(h)
    scores = jnp.where(valid[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    if chunk is None:
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bkgs,bksh->bkgh", probs, v).reshape(b, 1, n, h)
    pad = -k.shape[2] % chunk
    scores = jnp.pad(scores, ((0, 0), (0, 0), (0, 0), (0, pad)), constant_values=-jnp.inf)
    v = jnp.pad(v, ((0, 0), (0, 0), (0, pad), (0, 0)))
    top = jnp.max(scores, axis=-1, keepdims=True)  # a max is exact in any order
    e = jnp.exp(scores - top)
    parts = scores.shape[-1] // chunk
    e = jnp.moveaxis(e.reshape(*e.shape[:-1], parts, chunk), 3, 0)  # [n, B, K, G, chunk]
    v = jnp.moveaxis(v.reshape(b, kh, parts, chunk, h), 2, 0)  # [n, B, K, chunk, H]

    def add(carry, part):
        total, acc = carry
        ei, vi = part
        return (total + ei.sum(-1), acc + jnp.einsum("bkgs,bksh->bkgh", ei.astype(vi.dtype), vi,
                                                     preferred_element_type=jnp.float32)), None

    init = (jnp.zeros(e.shape[1:-1], jnp.float32), jnp.zeros(e.shape[1:-1] + (h,), jnp.float32))
    (total, acc), _ = jax.lax.scan(add, init, (e, v))
    return (acc / total[..., None]).astype(v.dtype).reshape(b, 1, n, h)


def _slot_block(cfg: ModelConfig, x: Array, p: dict[str, Array], index: Array, valid: Array, k_cache: Array,
                v_cache: Array, rows, span: int, chunk: int | None = None) -> tuple[Array, Array, Array]:
    """``_cached_block`` for one token per row [B,1,D], each row at its own cache slot ``index`` [B] (which is also
    its position; past the cache drops the write), attending over its ``valid`` [B,S] slots among the first
    ``span`` (in chunks of ``chunk``: ``_slot_attention``). ``rows(fn, *xs)`` runs the per-row work (projections,
    attention, MLP)."""
    q, k, v = rows(lambda x, pos: _attention_inputs(cfg, x, p, pos), x, index[:, None])
    b = jnp.arange(x.shape[0])
    k_cache = k_cache.at[b, :, index].set(k[:, 0].astype(k_cache.dtype), mode="drop")
    v_cache = v_cache.at[b, :, index].set(v[:, 0].astype(v_cache.dtype), mode="drop")
    attn = rows(functools.partial(_slot_attention, chunk=chunk), q, k_cache[:, :, :span].astype(x.dtype),
                v_cache[:, :, :span].astype(x.dtype), valid[:, :span])
    return rows(lambda x, a: _block_output(cfg, x, a, p), x, attn), k_cache, v_cache


def _embed_lookup(table: Array, tokens: Array) -> Array:
    """Embedding rows [B, T, D] of ``tokens`` [B, T] from a table sharded over its D columns: the token ids are
    gathered over fsdp and each device looks up its own columns for every row (then rows are re-split), so neither
    the [V, D] table nor its gradient's scatter is ever gathered onto one device (rule ``vocab_rows``)."""
    tokens = constrain(tokens, ("vocab_rows", None))
    x = constrain(table[tokens], ("vocab_rows", None, "embed"))
    return constrain(x, ("batch", "length", "embed"))


def _token_mask(attention_mask: Array | None, shape: tuple[int, int]) -> Array:
    """The boolean [B, T] real-token mask (all True when none is given)."""
    return jnp.ones(shape, bool) if attention_mask is None else attention_mask.astype(bool)


class Qwen2(nnx.Module):
    """Qwen2ForCausalLM in nnx. ``__call__`` returns (logits [B,T,V] float32, updated cache or None)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, platform: str | None = None):
        self.cfg = cfg
        self.compute_dtype = jnp.dtype(cfg.resolved_compute_dtype(platform or jax.default_backend()))
        pdt = jnp.dtype(cfg.param_dtype)
        normal = nnx.initializers.normal(0.02)
        for name, shape in param_shapes(cfg).items():
            if name.endswith("norm"):
                value = jnp.ones(shape, pdt)
            elif name.endswith("bias"):
                value = jnp.zeros(shape, pdt)
            else:
                value = normal(rngs.params(), shape, pdt)
            setattr(self, name, nnx.Param(value, out_sharding=PARAM_AXES[name], eager_sharding=False))

    def _block_params(self) -> dict[str, Array]:
        return {name: getattr(self, name)[...] for name in BLOCK_PARAMS}

    def hidden_states(self, tokens: Array, positions: Array, attention_mask: Array | None = None,
                      cache: KVCache | None = None, segment_ids: Array | None = None) -> tuple[Array, KVCache | None]:
        """Final-norm hidden states [B, T, D] (compute dtype) and the updated cache (see ``cached_hidden_states``).

        ``segment_ids`` [B, T] int (no cache; instead of ``attention_mask``): packed rows, 0 on padding and k ≥ 1 on
        the k-th row of a sequence; a token attends only to earlier tokens of its own row (``positions`` restart
        per row)."""
        if cache is not None:
            return self.cached_hidden_states(tokens, positions, attention_mask, cache)
        cfg, dt = self.cfg, self.compute_dtype
        b, t = tokens.shape
        x = _embed_lookup(self.embed[...].astype(dt), tokens)
        if segment_ids is None:
            mask = jnp.tril(jnp.ones((t, t), bool))[None] & _token_mask(attention_mask, (b, t))[:, None, :]
        else:
            mask = segment_mask(segment_ids)

        def body(x, p):
            return _block(cfg, x, p, positions, mask, segment_ids), None

        if cfg.remat:
            body = jax.checkpoint(body, prevent_cse=False, policy=_CHECKPOINT_POLICIES[cfg.remat_policy])
        x, _ = jax.lax.scan(body, x, self._block_params())
        return rms_norm(x, self.final_norm[...], cfg.rms_norm_eps), None

    def layer_weights(self) -> tuple[dict[str, Array], ...]:
        """Each decoder block's weights in the compute dtype, one dict per layer, for ``cached_hidden_states``.

        A decode loop takes these once, before its loop: on XLA:CPU a layer sliced out of the stacked parameters
        inside the loop is a copy of all its weights on every token (XLA cannot fuse the slice into the dot).
        """
        dt, stacked = self.compute_dtype, self._block_params()
        return tuple({name: w[i].astype(dt) for name, w in stacked.items()} for i in range(self.cfg.num_layers))

    def cached_hidden_states(self, tokens: Array, positions: Array, attention_mask: Array | None, cache: KVCache,
                             layers: tuple[dict[str, Array], ...] | None = None) -> tuple[Array, KVCache]:
        """Runs tokens [B, T] on top of ``cache``: writes their keys/values at ``cache.index``, each query attends
        over the valid slots up to its own. Returns final-norm hidden states [B, T, D] and the updated cache.

        The layers run unrolled (a Python loop, not ``lax.scan``), each on its own cache array and its own weights
        (``layers`` from ``layer_weights``, sliced here when not given), so a decode step copies neither weights
        nor cache. Its compile time grows with depth; only the sampler's prefill and decode programs pay it.
        """
        cfg, dt = self.cfg, self.compute_dtype
        b, t = tokens.shape
        layers = self.layer_weights() if layers is None else layers
        # Gather, then cast: casting the whole table first would convert all V rows on every decode step.
        x = constrain(self.embed[...][tokens].astype(dt), ("batch", "length", "embed"))
        valid = jax.lax.dynamic_update_slice(cache.valid, _token_mask(attention_mask, (b, t)), (0, cache.index))
        query_slots = cache.index + jnp.arange(t)
        mask = valid[:, None, :] & (jnp.arange(cache.length)[None, None, :] <= query_slots[None, :, None])
        ks, vs = [], []
        for p, k_cache, v_cache in zip(layers, cache.k, cache.v):
            x, k_cache, v_cache = _cached_block(cfg, x, p, positions, mask, k_cache, v_cache, cache.index)
            ks.append(k_cache)
            vs.append(v_cache)
        x = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
        return x, KVCache(k=tuple(ks), v=tuple(vs), valid=valid, index=cache.index + t)

    def slot_hidden_states(self, tokens: Array, index: Array, valid: Array, k: tuple[Array, ...],
                           v: tuple[Array, ...], layers: tuple[dict[str, Array], ...], rows=_identity_rows,
                           span: int | None = None, chunk: int | None = None
                           ) -> tuple[Array, tuple[Array, ...], tuple[Array, ...], Array]:
        """One decode step of independent rows (a continuous-batching engine's slots): token ``tokens[b]`` is
        written at slot ``index[b]`` of row b's cache (its position; ≥ S drops the write) and attends over the
        row's valid slots ``valid`` [B, S] plus that one. ``k``/``v``: per-layer [B, K, S, H] caches; ``layers``
        from ``layer_weights``; ``rows(fn, *xs)`` maps fn over row tiles of its [B, ...] inputs (default: all rows
        at once); ``span``: attention reads only the first ``span`` slots (every valid one must lie there), in
        chunks of ``chunk`` slots when given (a row's result is then independent of ``span``: ``_slot_attention``).
        Returns final-norm hidden states [B, D], the updated caches and valid slots."""
        cfg, dt = self.cfg, self.compute_dtype
        x = self.embed[...][tokens[:, None]].astype(dt)
        valid = valid.at[jnp.arange(tokens.shape[0]), index].set(True, mode="drop")
        span = valid.shape[1] if span is None else span
        ks, vs = [], []
        for p, k_cache, v_cache in zip(layers, k, v):
            # A row's slots fill in order, so every valid slot precedes the new one: no causal mask is needed.
            x, k_cache, v_cache = _slot_block(cfg, x, p, index, valid, k_cache, v_cache, rows, span, chunk)
            ks.append(k_cache)
            vs.append(v_cache)
        x = rows(lambda x: rms_norm(x[:, 0], self.final_norm[...], cfg.rms_norm_eps), x)
        return x, tuple(ks), tuple(vs), valid

    def head_weight(self) -> Array:
        """The [D, V] output projection (the transposed embedding when tied)."""
        return self.embed[...].T if self.cfg.tie_word_embeddings else self.lm_head[...]

    def logits(self, hidden: Array) -> Array:
        """Vocabulary logits in float32 from hidden states [..., D]."""
        w = self.head_weight().astype(hidden.dtype)
        return jnp.einsum("...d,dv->...v", hidden, w, preferred_element_type=jnp.float32)

    def __call__(self, tokens: Array, positions: Array, attention_mask: Array | None = None,
                 cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
        hidden, cache = self.hidden_states(tokens, positions, attention_mask, cache)
        return self.logits(hidden), cache

    def init_cache(self, batch: int, length: int) -> KVCache:
        return KVCache.zeros(self.cfg, batch, length, self.compute_dtype)


def positions_from_mask(attention_mask: Array) -> Array:
    """Position ids for a (left- or right-) padded batch: 0, 1, 2, ... over real tokens, 0 on padding."""
    m = attention_mask.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0) * m


def compute_params(graphdef: nnx.GraphDef, params: nnx.State, for_gradients: bool = True) -> nnx.State:
    """``params`` as the forward consumes them: each weight the model casts to its compute dtype on use, cast once.

    Differentiating with respect to these gives the same gradient values as with respect to the float32 masters
    (the cast's transpose only widens them back), held in the compute dtype: half the bytes for bfloat16. Norm
    weights are used in float32 and stay as they are; so does a tied embedding, used by both the lookup and the
    head, so that its two gradient contributions still add in float32. A forward that is never differentiated
    (``for_gradients=False``, the frozen reference policy) casts the tied embedding too: both its uses cast it on use,
    so the forward's results are the same bits as from the float32 masters.
    """
    model = nnx.merge(graphdef, params)
    keep = {name for name, axes in PARAM_AXES.items() if axes[-1] == "norm"}
    if model.cfg.tie_word_embeddings and for_gradients:
        keep.add("embed")

    def cast(path, x):
        return x if path[0].key in keep else x.astype(model.compute_dtype)

    return jax.tree_util.tree_map_with_path(cast, params)


def abstract_model(cfg: ModelConfig, platform: str | None = None) -> Qwen2:
    """The model's structure with ShapeDtypeStruct leaves: no memory is allocated (for 7B shape checks, loading)."""
    return nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(0), platform=platform))
