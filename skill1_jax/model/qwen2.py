"""Qwen2 / Qwen2.5 decoder in flax.nnx: RMSNorm, rotate-half RoPE, GQA with q/k/v bias, SwiGLU, tied or untied head.

Axis letters used in names and einsums:
  B batch   T query length   S key/cache length   D hidden   N query heads   K kv heads   G = N // K
  H head dim   F MLP width   V vocabulary   L layers

Decoder blocks are stored stacked along a leading ``layers`` axis and run with ``lax.scan``: compile time does not
grow with depth, and ``remat`` wraps one block. Every parameter has logical axis names (``out_sharding``
metadata) consumed by ``skill1_jax.parallel.sharding``'s rule table.

Padding and positions are explicit: callers pass ``positions`` [B, T] and ``attention_mask`` [B, T] (True for real
tokens), so left-padded batches behave exactly like unpadded rows. With a ``KVCache`` the new keys/values are
written at ``cache.index`` and attention covers the valid cache slots up to each query's slot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from skill1_jax.model.attention import attention
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
CACHE_AXES = ("layers", "batch", "cache_length", "kv_heads", "head_dim")


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
    """Keys/values of all layers [L, B, S, K, H], which slots hold real tokens [B, S], and the next write slot."""

    k: Array
    v: Array
    valid: Array
    index: Array  # int32 scalar

    @classmethod
    def zeros(cls, cfg: ModelConfig, batch: int, length: int, dtype: Any) -> "KVCache":
        shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
        return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   valid=jnp.zeros((batch, length), bool), index=jnp.zeros((), jnp.int32))

    @property
    def length(self) -> int:
        return self.k.shape[2]


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


def _attention(cfg: ModelConfig, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """GQA attention. q [B,T,N,H], k/v [B,S,K,H], mask [B,T,S] (True = attend); ``cfg.attention`` picks the kernel."""
    return attention(q, k, v, mask, implementation=cfg.attention, block_size=cfg.attention_block)


def _block(cfg: ModelConfig, x: Array, p: dict[str, Array], positions: Array, mask: Array,
           cache_kv: tuple[Array, Array] | None, index: Array | None):
    """One decoder block. Returns the new residual stream and the (possibly updated) layer cache."""
    dt = x.dtype
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q = jnp.einsum("btd,dnh->btnh", h, p["q_kernel"].astype(dt)) + p["q_bias"].astype(dt)
    k = jnp.einsum("btd,dkh->btkh", h, p["k_kernel"].astype(dt)) + p["k_bias"].astype(dt)
    v = jnp.einsum("btd,dkh->btkh", h, p["v_kernel"].astype(dt)) + p["v_bias"].astype(dt)
    q, k = rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta)
    q = constrain(q, ("batch", "length", "heads", "head_dim"))
    if cache_kv is not None:
        ck, cv = cache_kv
        ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, index, 0, 0))
        cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, index, 0, 0))
        k, v, cache_kv = ck.astype(dt), cv.astype(dt), (ck, cv)
    attn = _attention(cfg, q, k, v, mask)
    x = x + jnp.einsum("btnh,nhd->btd", attn, p["o_kernel"].astype(dt))
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    gate = jnp.einsum("btd,df->btf", h, p["gate_kernel"].astype(dt))
    up = jnp.einsum("btd,df->btf", h, p["up_kernel"].astype(dt))
    mlp = constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    x = x + jnp.einsum("btf,fd->btd", mlp, p["down_kernel"].astype(dt))
    return constrain(x, ("batch", "length", "embed")), cache_kv


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
                      cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
        """Final-norm hidden states [B, T, D] (compute dtype) and the updated cache."""
        cfg, dt = self.cfg, self.compute_dtype
        b, t = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), bool)
        attention_mask = attention_mask.astype(bool)
        x = constrain(self.embed[...].astype(dt)[tokens], ("batch", "length", "embed"))

        if cache is None:
            causal = jnp.tril(jnp.ones((t, t), bool))
            mask = causal[None] & attention_mask[:, None, :]
            index, valid = None, None
        else:
            valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, cache.index))
            slots = jnp.arange(cache.length)
            query_slots = cache.index + jnp.arange(t)
            mask = valid[:, None, :] & (slots[None, None, :] <= query_slots[None, :, None])
            index = cache.index

        def body(x, layer):
            p, kv = layer
            x, kv = _block(cfg, x, p, positions, mask, kv, index)
            return x, kv

        if cfg.remat:
            body = jax.checkpoint(body, prevent_cse=False, policy=_CHECKPOINT_POLICIES[cfg.remat_policy])
        xs = (self._block_params(), None if cache is None else (cache.k, cache.v))
        x, new_kv = jax.lax.scan(body, x, xs)
        x = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
        if cache is not None:
            cache = KVCache(k=new_kv[0], v=new_kv[1], valid=valid, index=cache.index + t)
        return x, cache

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


def abstract_model(cfg: ModelConfig, platform: str | None = None) -> Qwen2:
    """The model's structure with ShapeDtypeStruct leaves: no memory is allocated (for 7B shape checks, loading)."""
    return nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(0), platform=platform))
