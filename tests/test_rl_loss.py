"""The pure Skill1 loss against an independent NumPy implementation, and the re-rank gradient identity."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.rl.batch import Segment
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.logprobs import token_logprobs
from skill1_jax.rl.loss import OBJECTIVE_FNS, loss_normalizers, make_loss_fn, ppo_clip_loss
from skill1_jax.rl.rows import Row, pack_rows, rollout_mean_weights
from synthetic import synthetic_batch

VOCAB = 512


# ---- independent reference: explicit loops over rows and tokens, float64 ----------------------------------
def _mean(values):
    return float(np.mean(values)) if values else 0.0


def reference_loss(logp, entropy, batch, cfg):
    """Eq. 13 as documented in rl/loss.py, written token by token."""
    b = jax.tree.map(np.asarray, batch)
    logp, entropy = np.asarray(logp, np.float64), np.asarray(entropy, np.float64)
    terms = {"util": {1, 3}, "rerank": {2}, "distill": {4}, "response": {1, 2, 3, 4}}
    if cfg.objective == "grpo":
        terms["util"] = terms["response"]
    values = {k: [] for k in ("util", "rerank", "distill", "kl", "entropy")}
    rows = {k: {} for k in values}
    clipped, lower, approx, ppo_n = 0.0, 0.0, 0.0, 0
    eps, c = cfg.clip_eps, cfg.dual_clip
    for i in range(logp.shape[0]):
        adv = float(b.advantage[i, 0])  # the row's advantage, on each of its tokens
        for t in range(logp.shape[1]):
            kind = int(b.segment[i, t])
            if b.loss_mask[i, t] == 0 or kind == Segment.PAD:
                continue
            ratio = np.exp(logp[i, t] - b.old_logp[i, t])
            ppo = max(-adv * ratio, -adv * min(max(ratio, 1 - eps), 1 + eps))
            capped = c > 0 and adv < 0 and ppo > -c * adv  # dual clip: the loss of Â < 0 is at most −c·Â
            ppo = -c * adv if capped else ppo
            r = b.ref_logp[i, t] - logp[i, t]
            entries = {"kl": min(np.exp(r) - r - 1, 10.0), "entropy": entropy[i, t]}
            if kind in terms["util"]:
                entries["util"] = ppo
            elif kind == Segment.RANK:
                entries["rerank"] = -adv * logp[i, t]
            else:
                entries["distill"] = ppo
            if "util" in entries or "distill" in entries:
                ppo_n += 1
                # the clipped branch is the active (larger) loss, as verl counts pg_clipfrac
                clipped += float(-adv * min(max(ratio, 1 - eps), 1 + eps) > -adv * ratio)
                lower += float(capped)
                approx += b.old_logp[i, t] - logp[i, t]
            for k, v in entries.items():
                values[k].append(v)
                rows[k].setdefault(i, []).append(v)
    if cfg.loss_agg == "token-mean":
        agg = {k: _mean(v) for k, v in values.items()}
    else:
        agg = {k: _mean([np.mean(v) for v in r.values()]) for k, r in rows.items()}
    loss = (agg["util"] + cfg.lambda_rerank * agg["rerank"] + cfg.lambda_distill * agg["distill"]
            + cfg.kl_coef * agg["kl"] - cfg.entropy_coef * agg["entropy"])
    return loss, {"loss/util": agg["util"], "loss/rerank": agg["rerank"], "loss/distill": agg["distill"],
                  "kl/ref": agg["kl"], "entropy": agg["entropy"], "pg/clipfrac": clipped / max(ppo_n, 1),
                  "pg/clipfrac_lower": lower / max(ppo_n, 1), "pg/approx_kl": approx / max(ppo_n, 1)}


def _random_inputs(seed, rows=8, seq_len=12, kind_probs=(0.2, 0.2, 0.4, 0.2)):
    batch = synthetic_batch(seed, rows, seq_len, VOCAB, kind_probs=kind_probs)
    rng = np.random.default_rng(seed + 100)
    # Current log-probs within ±0.5 of the sampler's, so some ratios leave [0.8, 1.2] and some stay inside.
    logp = np.where(batch.loss_mask > 0, batch.old_logp + rng.uniform(-0.5, 0.5, batch.old_logp.shape), 0.0)
    entropy = rng.uniform(0.0, 5.0, batch.old_logp.shape)
    return logp.astype(np.float32), entropy.astype(np.float32), batch


@functools.lru_cache(maxsize=None)
def _jitted_objective(cfg):
    fn = OBJECTIVE_FNS[cfg.objective]
    return jax.jit(lambda logp, ent, batch: fn(logp, ent, batch, loss_normalizers(batch), cfg))


CONFIGS = [
    RLConfig(),
    RLConfig(loss_agg="seq-mean-token-mean"),
    RLConfig(entropy_coef=0.01, lambda_rerank=0.7, lambda_distill=0.1, kl_coef=0.2, clip_eps=0.1),
    RLConfig(objective="grpo"),
    RLConfig(dual_clip=3.0, entropy_coef=0.001),  # the released runs' loss
    RLConfig(dual_clip=1.3, entropy_coef=0.05),  # ratios reach e^0.5 ≈ 1.65: the dual clip is active
    RLConfig(objective="grpo", dual_clip=1.3, entropy_coef=0.05, loss_agg="seq-mean-token-mean"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper", "seq-mean", "other-coefs", "plain-grpo", "released",
                                              "dual-clip-active", "grpo-dual-clip-seq-mean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_every_term_match_numpy_reference(cfg, seed):
    logp, entropy, batch = _random_inputs(seed)
    loss, metrics = _jitted_objective(cfg)(logp, entropy, batch)
    ref_loss, ref_metrics = reference_loss(logp, entropy, batch, cfg)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    for k, v in ref_metrics.items():
        if k in metrics or k not in ("loss/rerank", "loss/distill"):  # plain GRPO has no rerank / distill term
            assert float(metrics[k]) == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert ref_metrics["pg/clipfrac"] > 0  # the clip branch is exercised
    assert (ref_metrics["pg/clipfrac_lower"] > 0) == (cfg.dual_clip == 1.3)  # and the dual clip where reachable


def test_dual_clip_caps_the_loss_of_negative_advantages_at_c_times_minus_advantage():
    """ε = 0.2, c = 3, by hand. ρ = 4, Â = −1: PPO-clip loss max(4, 1.2) = 4, capped at 3 (and no gradient);
    ρ = 4, Â = +1: −min(4, 1.2) = −1.2, untouched (the dual clip is for Â < 0 only); ρ = 0.5, Â = −2:
    max(1, 1.6) = 1.6 < 6, untouched; ρ = 2.5, Â = −1: 2.5 < 3, untouched."""
    ratio = np.array([4.0, 4.0, 0.5, 2.5])
    adv = np.array([-1.0, 1.0, -2.0, -1.0])
    old = np.zeros(4, np.float32)

    def loss(logp, c):
        return ppo_clip_loss(logp, old, adv, 0.2, c)

    logp = np.log(ratio).astype(np.float32)
    plain, _, plain_lower = loss(logp, 0.0)
    dual, clip_active, lower = loss(logp, 3.0)
    np.testing.assert_allclose(plain, [4.0, -1.2, 1.6, 2.5], rtol=1e-6)
    np.testing.assert_allclose(dual, [3.0, -1.2, 1.6, 2.5], rtol=1e-6)
    np.testing.assert_array_equal(lower, [1, 0, 0, 0])
    np.testing.assert_array_equal(plain_lower, [0, 0, 0, 0])
    np.testing.assert_array_equal(clip_active, [0, 1, 1, 0])  # ρ = 2.5, Â < 0: max(2.5, 1.2) is the unclipped ρ
    grad = jax.grad(lambda lp: jnp.sum(loss(lp, 3.0)[0]))(logp)
    np.testing.assert_allclose(grad, [0.0, 0.0, 0.0, 2.5], rtol=1e-6)  # d(−ρÂ)/d log ρ = −ρÂ = 2.5 for the last


def _as_rows(batch, rollouts):
    """The synthetic batch's rows as ``Row``s (advantage, kind, log-probs kept) with ``rollout_mean_weights``."""
    rows = []
    for i in range(batch.num_rows):
        resp = np.flatnonzero(batch.loss_mask[i])
        p = int(resp[0])
        rows.append(Row(prompt_ids=batch.tokens[i, :p], response_ids=batch.tokens[i, resp],
                        logprobs=batch.old_logp[i, resp], kind=Segment(int(batch.segment[i, p])),
                        advantage=float(batch.advantage[i, p]), group=int(batch.group_id[i, p])))
    return rollout_mean_weights(rows, rollouts, "skill1")


@pytest.mark.parametrize("seed", [0, 1])
def test_rollout_mean_is_the_mean_over_rollouts_of_each_rollouts_token_mean(seed):
    """Paper Eq. 13 / Appendix B: 1/|τ_i| over rollout i's tokens of a term, then 1/(#rollouts) over rollouts."""
    _, _, synth = _random_inputs(seed, rows=12)
    rollouts = np.random.default_rng(seed).integers(0, 4, synth.num_rows)  # rows of one rollout: several turns
    batch = pack_rows(_as_rows(synth, rollouts), synth.num_rows, synth.seq_len)
    batch = dataclasses.replace(batch, ref_logp=synth.ref_logp)
    rng = np.random.default_rng(seed + 7)
    logp = np.where(batch.loss_mask > 0, batch.old_logp + rng.uniform(-0.5, 0.5, batch.old_logp.shape), 0.0)
    entropy = rng.uniform(0.0, 5.0, logp.shape)
    cfg = RLConfig(loss_agg="rollout-mean")
    loss, metrics = _jitted_objective(cfg)(logp.astype(np.float32), entropy.astype(np.float32), batch)

    # Reference: per (rollout, term) token lists, explicit loops, float64, no weights.
    terms = {Segment.QUERY: "util", Segment.ACTION: "util", Segment.RANK: "rerank", Segment.DISTILL: "distill"}
    per = {}
    for i in range(batch.num_rows):
        adv = float(batch.advantage[i, 0])
        for t in np.flatnonzero(batch.loss_mask[i]):
            kind = Segment(int(batch.segment[i, t]))
            ratio = np.exp(logp[i, t] - batch.old_logp[i, t])
            ppo = max(-adv * ratio, -adv * min(max(ratio, 0.8), 1.2))
            r = batch.ref_logp[i, t] - logp[i, t]
            value = -adv * logp[i, t] if kind == Segment.RANK else ppo
            per.setdefault((rollouts[i], terms[kind]), []).append((value, min(np.exp(r) - r - 1, 10.0)))
    mean_over = lambda term: _mean([np.mean([v for v, _ in vals]) for (_, t), vals in per.items() if t == term])
    ref = {f"loss/{t}": mean_over(t) for t in ("util", "rerank", "distill")}
    ref["kl/ref"] = _mean([np.mean([k for _, k in vals]) for vals in per.values()])
    assert len({i for i, t in per if t == "util"}) > 1 and any(len(v) > 1 for v in per.values())
    for k, v in ref.items():
        assert float(metrics[k]) == pytest.approx(v, rel=1e-5, abs=1e-6), k
    expected = ref["loss/util"] + 0.3 * ref["loss/rerank"] + 0.3 * ref["loss/distill"] + 0.01 * ref["kl/ref"]
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # Token counts stay counts (metrics), whatever the weights.
    assert float(loss_normalizers(batch).counts["util"]) == float(((batch.segment == 1) | (batch.segment == 3)).sum())


def test_term_without_tokens_contributes_zero():
    logp, entropy, batch = _random_inputs(3, kind_probs=(0.5, 0.0, 0.5, 0.0))  # no rank / distill rows
    _, metrics = _jitted_objective(RLConfig())(logp, entropy, batch)
    assert float(metrics["loss/rerank"]) == 0.0 and float(metrics["loss/distill"]) == 0.0


def test_token_mean_differs_from_seq_mean_on_uneven_lengths():
    logp, entropy, batch = _random_inputs(4)
    a = _jitted_objective(RLConfig())(logp, entropy, batch)[0]
    b = _jitted_objective(RLConfig(loss_agg="seq-mean-token-mean"))(logp, entropy, batch)[0]
    assert abs(float(a) - float(b)) > 1e-4


# ---- through the model --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    model = Qwen2(ModelConfig.from_preset("tiny", vocab_size=VOCAB), rngs=nnx.Rngs(0))
    return nnx.split(model, nnx.Param)


def test_chunked_token_logprobs_match_full_log_softmax(tiny):
    graphdef, params = tiny
    batch = synthetic_batch(5, 4, 13, VOCAB)  # 12 predicted positions: chunk 5 leaves a ragged last chunk

    @jax.jit
    def both(params):
        model = nnx.merge(graphdef, params)
        logp, ent = token_logprobs(model, batch.tokens, batch.positions, batch.attention_mask, chunk=5)
        logits, _ = model(batch.tokens, batch.positions, batch.attention_mask)
        full = jax.nn.log_softmax(logits, axis=-1)
        # Position t-1's distribution scores token t.
        ref = jnp.take_along_axis(full[:, :-1], batch.tokens[:, 1:, None], axis=-1)[..., 0]
        ref_ent = -jnp.sum(jnp.exp(full) * full, axis=-1)[:, :-1]
        return logp, ent, ref, ref_ent

    logp, ent, ref, ref_ent = both(params)
    np.testing.assert_allclose(logp[:, 1:], ref, atol=1e-5)
    np.testing.assert_allclose(ent[:, 1:], ref_ent, atol=1e-4)
    assert np.all(np.asarray(logp[:, 0]) == 0.0)


def test_rerank_gradient_is_ndcg_times_grad_log_prob_of_ranking(tiny):
    graphdef, params = tiny
    batch = synthetic_batch(6, 3, 12, VOCAB, kind_probs=(0, 1, 0, 0))  # rank rows only
    cfg = RLConfig(lambda_rerank=1.0, kl_coef=0.0)
    loss_fn = make_loss_fn(graphdef, cfg)

    def seq_logp(params):  # log π(σ_b) of each row from the full (unchunked) softmax
        logits, _ = nnx.merge(graphdef, params)(batch.tokens, batch.positions, batch.attention_mask)
        full = jax.nn.log_softmax(logits, axis=-1)
        tok = jnp.take_along_axis(full[:, :-1], batch.tokens[:, 1:, None], axis=-1)[..., 0]
        return jnp.sum(tok * batch.loss_mask[:, 1:], axis=-1)

    grads, jac = jax.jit(lambda p: (jax.grad(lambda q: loss_fn(q, batch)[0])(p), jax.jacrev(seq_logp)(p)))(params)
    n_tokens = batch.loss_mask.sum()
    ndcg = batch.advantage[:, 0]
    # J_rerank = -(1/N) Σ_b NDCG_b log π(σ_b)  =>  ∇J = -(1/N) Σ_b NDCG_b ∇log π(σ_b)
    expected = jax.tree.map(lambda j: -np.tensordot(ndcg, np.asarray(j), axes=1) / n_tokens, jac)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=1e-4)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-4


def test_entropy_bonus_gradient_through_the_chunked_head_equals_the_full_softmax_one(tiny):
    """With Â = 0 and β = 0 the loss is −c_H·H alone: H = the token-mean over response tokens of the policy's
    entropy. Its gradient, through the chunked, rematerialised head (``rl.logprobs``), equals the gradient of the same
    mean computed from the full [B, T, V] log-softmax."""
    graphdef, params = tiny
    batch = dataclasses.replace(synthetic_batch(7, 4, 13, VOCAB), advantage=np.zeros((4, 13), np.float32))
    cfg = RLConfig(entropy_coef=0.001, kl_coef=0.0, logprob_chunk=5)
    loss_fn = make_loss_fn(graphdef, cfg)

    def reference(params):
        logits, _ = nnx.merge(graphdef, params)(batch.tokens, batch.positions, batch.attention_mask)
        full = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        ent = -jnp.sum(jnp.exp(full) * full, axis=-1)[:, :-1]  # position t-1's distribution produced token t
        mask = batch.loss_mask[:, 1:]
        return -cfg.entropy_coef * jnp.sum(ent * mask) / jnp.sum(mask)

    (loss, metrics), grads = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, batch), has_aux=True))(params)
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(reference))(params)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    assert float(metrics["entropy"]) == pytest.approx(float(ref_loss) / -cfg.entropy_coef, rel=1e-5)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, e, atol=1e-9, rtol=1e-4)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-7
