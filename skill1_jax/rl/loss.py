"""The Skill1 objective (paper Eq. 8–13) as pure functions over per-token arrays, and ``make_loss_fn``.

Definition (``token-mean``, the default; what the paper's runs used):

    L = J_util + λ1·J_rerank + λ2·J_distill + β·KL − c_H·H

* J_util    = token-mean over query + action tokens of the PPO-clip loss −min(ρÂ_util, clip(ρ, 1±ε)Â_util),
              ρ = π_θ / π_old (Eq. 8, 12); with ``dual_clip`` c the loss of a token with Â < 0 is capped at −c·Â;
* J_rerank  = token-mean over rank tokens of −NDCG·log π_θ (REINFORCE, no baseline; Eq. 9);
* J_distill = token-mean over distill tokens of the PPO-clip loss with Â_distill (Eq. 10);
* KL        = token-mean over all response tokens of the k3 estimator exp(r) − r − 1, r = log π_ref − log π_θ
              (the "low-variance KL"), against the frozen initial policy;
* H         = token-mean entropy over all response tokens (bonus, c_H = 0 by default; the released runs 0.001).

Each term is normalised by its *own* token count in the whole mini-batch, so a batch with many action tokens does
not shrink the re-rank term. With ``seq-mean-token-mean`` every row (one generated segment, ``batch.row_id`` within
its sequence: one per sequence when padded, several when packed) is first averaged over its own tokens of that
term, then the term averages over the rows that have such tokens. With ``rollout-mean``
(paper Eq. 13, Appendix B: 1/|τ_i| over a rollout's tokens, then over rollouts) the rows carry per-token weights
1/|τ_i| in ``loss_mask`` (``rl.rows.rollout_mean_weights``: |τ_i| is the rollout's trained tokens of the term), and
the term is the weighted token-mean Σ w·ℓ / Σ w: within a mini-batch that holds whole rollouts, exactly the mean
over rollouts of each rollout's token-mean, so a long failed rollout weighs as much as a short won one.

Denominators (summed token weights) come from ``LossNormalizers`` computed on the full mini-batch and passed in: the loss of a micro-batch is
then its exact share of the mini-batch loss, so summing micro-batch gradients equals the full-batch gradient, and
data-parallel shards can ``psum`` their partial sums. Every metric is normalised the same way, so metrics also sum.

Every input is per token ([B, T]; a row's advantage is on each of its tokens), so the objective is the same
function of a padded and of a packed batch.

Axis letters: B sequences, T tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from skill1_jax.rl.batch import TERM_KINDS, Segment, TrainBatch
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.logprobs import token_logprobs

Array = jax.Array
Metrics = dict[str, Array]
KL_CLAMP = 10.0  # k3 is clamped to [-10, 10] (as verl's low_var_kl) so one wild token cannot dominate


# ---- masks and normalizers --------------------------------------------------------------------------------
def term_masks(batch: TrainBatch) -> dict[str, Array]:
    """[B, T] float32 masks of the tokens each term trains on: the token's loss weight (1, or 1/|τ_i| under
    ``rollout-mean``) where it belongs to the term, else 0."""
    seg, m = batch.segment, batch.loss_mask.astype(jnp.float32)
    is_kind = lambda kinds: jnp.isin(seg, jnp.array([int(k) for k in kinds], seg.dtype))
    return {**{term: m * is_kind(kinds) for term, kinds in TERM_KINDS.items()}, "response": m * (seg != Segment.PAD)}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossNormalizers:
    """Mini-batch denominators per term (float32): summed token weights (the token count unless rows carry
    ``rollout-mean`` weights), token counts (for metrics) and counts of rows that have such tokens."""

    tokens: dict[str, Array]
    counts: dict[str, Array]
    rows: dict[str, Array]


def row_sums(x: Array, row_id: Array) -> Array:
    """[B, T + 1]: ``x`` [B, T] summed over each row of each sequence (column k: row k; column 0: padding)."""
    t = x.shape[-1]
    return jax.vmap(lambda xs, ids: jax.ops.segment_sum(xs, ids, num_segments=t + 1))(x, row_id)


def loss_normalizers(batch: TrainBatch) -> LossNormalizers:
    masks = term_masks(batch)
    rows = lambda m: jnp.sum((row_sums((m > 0).astype(jnp.float32), batch.row_id)[:, 1:] > 0).astype(jnp.float32))
    return LossNormalizers(tokens={k: jnp.sum(m) for k, m in masks.items()},
                           counts={k: jnp.sum((m > 0).astype(jnp.float32)) for k, m in masks.items()},
                           rows={k: rows(m) for k, m in masks.items()})


# ---- per-token terms --------------------------------------------------------------------------------------
def ppo_clip_loss(logp: Array, old_logp: Array, advantage: Array, clip_eps: float,
                  dual_clip: float = 0.0) -> tuple[Array, Array, Array]:
    """Per-token PPO-clip loss −min(ρÂ, clip(ρ, 1−ε, 1+ε)Â) (Appendix B, Eq. 12), where the clip is active and where
    the dual clip is.

    Dual clip (``dual_clip`` = c > 1; Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep
    Reinforcement Learning", as verl's ``compute_policy_loss`` with ``clip_ratio_c``): for Â < 0 the loss
    −min(ρÂ, clip(ρ)Â) = |Â|·max(ρ, clip(ρ)) grows without bound in ρ; it is capped at −c·Â, so a token whose
    ratio ran past c gets no gradient. c = 0 leaves the paper's loss.
    """
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * advantage
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    loss = -jnp.minimum(unclipped, clipped)
    clip_active = (clipped < unclipped).astype(jnp.float32)
    if not dual_clip:
        return loss, clip_active, jnp.zeros_like(loss)
    cap = -dual_clip * advantage
    lower = (advantage < 0) & (loss > cap)
    return jnp.where(lower, cap, loss), clip_active, lower.astype(jnp.float32)


def reinforce_loss(logp: Array, reward: Array) -> Array:
    """Eq. 9: per-token −R·log π(σ); summed over a ranking's tokens its gradient is −R·∇log π(σ)."""
    return -reward * logp


def low_var_kl(logp: Array, ref_logp: Array) -> Array:
    """k3 estimator of KL(π_θ ‖ π_ref): exp(r) − r − 1 with r = log π_ref − log π_θ (β term of Eq. 13)."""
    r = jnp.clip(ref_logp - logp, -20.0, 20.0)
    return jnp.clip(jnp.exp(r) - r - 1.0, -KL_CLAMP, KL_CLAMP)


def _mean(total: Array, weight: Array) -> Array:
    """total / weight, 0 where the weight is 0 (a term without tokens). Rollout-mean weights 1/|τ_i| sum to the
    number of rollouts a mini-batch holds, which may be a fraction of one: no floor of 1 here."""
    return jnp.where(weight > 0, total / jnp.where(weight > 0, weight, 1.0), 0.0)


def aggregate(per_token: Array, mask: Array, row_id: Array, norm: LossNormalizers, term: str, mode: str) -> Array:
    """Mini-batch mean of ``per_token`` over ``mask`` (see module docstring); 0 when the term has no tokens.
    ``row_id`` [B, T] says which row of its sequence each token belongs to (``seq-mean-token-mean``)."""
    x = jnp.where(mask > 0, per_token, 0.0) * mask
    if mode in ("token-mean", "rollout-mean"):  # rollout-mean: the weights are in the mask
        return _mean(jnp.sum(x), norm.tokens[term])
    row_mean = row_sums(x, row_id) / jnp.maximum(row_sums(mask, row_id), 1.0)
    return jnp.sum(row_mean[:, 1:]) / jnp.maximum(norm.rows[term], 1.0)


def _shared_terms(logp: Array, entropy: Array, batch: TrainBatch, masks: dict[str, Array], norm: LossNormalizers,
                  cfg: RLConfig, ppo_terms: tuple[str, ...], clipped: Array,
                  dual_clipped: Array) -> tuple[Array, Metrics]:
    """β·KL − c_H·H over all response tokens, plus the PPO diagnostics over the ``ppo_terms`` tokens."""
    resp = masks["response"]
    kl = aggregate(low_var_kl(logp, batch.ref_logp), resp, batch.row_id, norm, "response", cfg.loss_agg)
    ent = aggregate(entropy, resp, batch.row_id, norm, "response", cfg.loss_agg)
    ppo_mask = sum(masks[t] for t in ppo_terms)
    ppo_weight = sum(norm.tokens[t] for t in ppo_terms)
    metrics = {
        "kl/ref": kl,
        "entropy": ent,
        "pg/clipfrac": _mean(jnp.sum(clipped * ppo_mask), ppo_weight),
        "pg/clipfrac_lower": _mean(jnp.sum(dual_clipped * ppo_mask), ppo_weight),
        "pg/approx_kl": _mean(jnp.sum(jnp.where(ppo_mask > 0, batch.old_logp - logp, 0.0) * ppo_mask), ppo_weight),
    }
    return cfg.kl_coef * kl - cfg.entropy_coef * ent, metrics


def skill1_objective(logp: Array, entropy: Array, batch: TrainBatch, norm: LossNormalizers,
                     cfg: RLConfig) -> tuple[Array, Metrics]:
    """Eq. 13: J_util + λ1·J_rerank + λ2·J_distill + β·KL − c_H·H (definitions in the module docstring).

    Args:
      logp, entropy: [B, T] current-policy token log-probs and entropies (``rl.logprobs`` alignment).
      batch: the rows (old/ref log-probs, masks, segment kinds, row ids, each token's row advantage).
      norm: mini-batch denominators (``loss_normalizers`` of the full mini-batch).
      cfg: coefficients and aggregation mode.

    Returns:
      (loss, metrics) with ``loss/util``, ``loss/rerank``, ``loss/distill``, ``kl/ref``, ``entropy``,
      ``pg/clipfrac``, ``pg/clipfrac_lower`` (the dual clip) and ``pg/approx_kl`` (all three over the PPO tokens:
      query, action, distill).
    """
    masks, adv, rows = term_masks(batch), batch.advantage, batch.row_id
    ppo, clipped, dual_clipped = ppo_clip_loss(logp, batch.old_logp, adv, cfg.clip_eps, cfg.dual_clip)
    j_util = aggregate(ppo, masks["util"], rows, norm, "util", cfg.loss_agg)
    j_rerank = aggregate(reinforce_loss(logp, adv), masks["rerank"], rows, norm, "rerank", cfg.loss_agg)
    j_distill = aggregate(ppo, masks["distill"], rows, norm, "distill", cfg.loss_agg)
    reg, metrics = _shared_terms(logp, entropy, batch, masks, norm, cfg, ("util", "distill"), clipped, dual_clipped)
    loss = j_util + cfg.lambda_rerank * j_rerank + cfg.lambda_distill * j_distill + reg
    return loss, {"loss": loss, "loss/util": j_util, "loss/rerank": j_rerank, "loss/distill": j_distill, **metrics}


def grpo_objective(logp: Array, entropy: Array, batch: TrainBatch, norm: LossNormalizers,
                   cfg: RLConfig) -> tuple[Array, Metrics]:
    """Plain GRPO baseline: PPO-clip on every response token with its row's advantage, + β·KL − c_H·H."""
    masks = term_masks(batch)
    ppo, clipped, dual_clipped = ppo_clip_loss(logp, batch.old_logp, batch.advantage, cfg.clip_eps, cfg.dual_clip)
    j_pg = aggregate(ppo, masks["response"], batch.row_id, norm, "response", cfg.loss_agg)
    reg, metrics = _shared_terms(logp, entropy, batch, masks, norm, cfg, ("response",), clipped, dual_clipped)
    loss = j_pg + reg
    return loss, {"loss": loss, "loss/util": j_pg, **metrics}


OBJECTIVE_FNS: dict[str, Callable[..., tuple[Array, Metrics]]] = {
    "skill1": skill1_objective,
    "grpo": grpo_objective,
}


def make_loss_fn(graphdef: nnx.GraphDef, cfg: RLConfig) -> Callable[..., tuple[Array, Metrics]]:
    """``loss_fn(params, batch, norm=None) -> (loss, metrics)``: forward + the configured objective.

    ``norm`` defaults to the batch's own normalizers (the loss of ``batch`` as a whole mini-batch); gradient
    accumulation and data parallelism pass the full mini-batch's normalizers instead.
    """
    objective = OBJECTIVE_FNS[cfg.objective]

    def loss_fn(params: nnx.State, batch: TrainBatch, norm: LossNormalizers | None = None):
        model = nnx.merge(graphdef, params)
        logp, entropy = token_logprobs(model, batch.tokens, batch.positions, batch.attention_mask,
                                       cfg.logprob_chunk, cfg.temperature, segment_ids=batch.row_id)
        if cfg.entropy_coef == 0.0:
            entropy = jax.lax.stop_gradient(entropy)  # a metric only: skip its backward pass
        return objective(logp, entropy, batch, loss_normalizers(batch) if norm is None else norm, cfg)

    return loss_fn
