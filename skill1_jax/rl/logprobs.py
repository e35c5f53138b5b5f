"""Per-token log-probabilities and entropies of a Qwen2 forward, without materialising [B, T, V] float32 logits.

The vocabulary projection and log-softmax run over chunks of ``chunk`` positions under ``jax.checkpoint``, so the
forward and the backward hold at most [B, chunk, V] logits (the 7B vocabulary is 152k: full float32 logits for one
4,096-token row would take 2.5 GB).

Temperature: with ``temperature`` τ ≠ 1 the distribution is softmax(logits / τ), the policy that rollouts sampled at
τ were drawn from (the sampler reports the same log-probs), so PPO's ratio and the KL compare like with like.

Alignment (the convention of ``skill1_jax.rl.batch``): ``logp[b, t] = log π(tokens[b, t] | tokens[b, :t])``, computed
from the hidden state at position t − 1; ``logp[:, 0] = 0``. Entropies use the same alignment: ``entropy[b, t]`` is
the entropy of the distribution that produced token t.

Axis letters: B rows, T tokens, C positions per chunk, D hidden, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.parallel.sharding import constrain

Array = jax.Array


def _chunk_logprobs(hidden_bcd: Array, targets_bc: Array, head_dv: Array,
                    temperature: float) -> tuple[Array, Array]:
    """log π(target) and entropy for one chunk; log-softmax of logits / temperature in float32.

    Under FSDP the chunk's rows are gathered and each device computes a vocabulary slice of their logits (rules
    ``vocab_rows`` / ``vocab_split``), instead of gathering the [D, V] head and its gradient onto every device.
    """
    hidden_bcd = constrain(hidden_bcd, ("vocab_rows", None, None))
    targets_bc = constrain(targets_bc, ("vocab_rows", None))
    logits = jnp.einsum("bcd,dv->bcv", hidden_bcd, head_dv, preferred_element_type=jnp.float32)
    logits = constrain(logits, ("vocab_rows", None, "vocab_split"))
    if temperature != 1.0:
        logits = logits / temperature
    lse = jax.nn.logsumexp(logits, axis=-1)
    # A one-hot select instead of a gather keeps a vocabulary-sharded (tensor-parallel) head free of all-gathers.
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
    target_logit = jnp.sum(jnp.where(vocab == targets_bc[..., None], logits, 0.0), axis=-1)
    probs = jnp.exp(logits - lse[..., None])
    entropy = lse - jnp.sum(probs * logits, axis=-1)
    return constrain(target_logit - lse, ("batch", None)), constrain(entropy, ("batch", None))


def logprobs_from_hidden(hidden_btd: Array, tokens_bt: Array, head_dv: Array, chunk: int,
                         temperature: float = 1.0) -> tuple[Array, Array]:
    """Token log-probs and entropies [B, T] (aligned as in the module docstring) from final hidden states."""
    b, t, d = hidden_btd.shape
    n_pred = t - 1  # hidden[:, i] predicts tokens[:, i + 1]
    c = max(1, min(chunk, n_pred))
    n_chunks = -(-n_pred // c)
    pad = n_chunks * c - n_pred
    h = jnp.pad(hidden_btd[:, :-1], ((0, 0), (0, pad), (0, 0)))
    y = jnp.pad(tokens_bt[:, 1:], ((0, 0), (0, pad)))
    h = jnp.moveaxis(h.reshape(b, n_chunks, c, d), 1, 0)
    y = jnp.moveaxis(y.reshape(b, n_chunks, c), 1, 0)
    head = constrain(head_dv.astype(hidden_btd.dtype), (None, "vocab_split"))
    # Rematerialised per chunk: the backward pass recomputes one chunk's logits instead of storing all of them.
    body = jax.checkpoint(lambda xs: _chunk_logprobs(xs[0], xs[1], head, temperature))
    logp, entropy = jax.lax.map(body, (h, y))

    def unchunk(x):
        x = jnp.moveaxis(x, 0, 1).reshape(b, n_chunks * c)[:, :n_pred]
        return jnp.pad(x, ((0, 0), (1, 0)))

    return unchunk(logp), unchunk(entropy)


def token_logprobs(model: Qwen2, tokens: Array, positions: Array, attention_mask: Array,
                   chunk: int = 512, temperature: float = 1.0, segment_ids: Array | None = None) -> tuple[Array, Array]:
    """Forward ``model`` and return (log π(tokens[:, t] | prefix), entropy), both [B, T] float32, of the policy at
    ``temperature``. With packed rows (``segment_ids``, ``Qwen2.hidden_states``) the prefix is the token's own row:
    a row's first token gets the log-prob of the previous row's last hidden state, which no loss mask covers (it is a
    prompt token)."""
    hidden, _ = model.hidden_states(tokens, positions, attention_mask, segment_ids=segment_ids)
    return logprobs_from_hidden(hidden, tokens, model.head_weight(), chunk, temperature)
