"""Top-k / top-p truncation without a vocabulary sort keeps exactly the tokens a NumPy sort-based reference keeps,
with the same renormalised probabilities, on logits with ties and on nuclei wider than the candidate set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skill1_jax.sampling import SamplingConfig, sample_logits, sampling_log_probs

V = 1000  # not a multiple of the 32-entry blocks: the last block is padded


def reference_log_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Log-probs [V] (-inf outside the kept set), by sorting: temperature, the k largest (ties with the k-th
    included), then the fewest most likely tokens whose renormalised mass reaches top_p (ties with the last
    included). Asserts the mass is not within 1e-5 of top_p at any tie-group boundary, so float32 rounding cannot
    decide the set."""
    x = logits / np.float32(temperature) if temperature != 1.0 else logits  # float32, as the sampler computes it
    keep = np.ones(len(x), bool)
    order = np.argsort(-x, kind="stable")
    if top_k:
        keep &= x >= x[order[top_k - 1]]
    if top_p < 1.0:
        w = np.where(keep, np.exp(x.astype(np.float64) - x.max()), 0.0)
        cum = np.cumsum(w[order] / w.sum())
        group_end = np.r_[x[order][1:] != x[order][:-1], True]
        assert np.min(np.abs(cum[group_end] - top_p)) > 1e-5, "degenerate case: mass at top_p"
        keep &= x >= x[order][np.argmax(cum >= top_p)]
    w = np.where(keep, np.exp(x.astype(np.float64) - x.max()), 0.0)
    with np.errstate(divide="ignore"):
        return np.log(w / w.sum())


def logits_with_ties() -> np.ndarray:
    """Rows [7, V] float32: peaked, flat (nuclei of hundreds of tokens: the bisection fallback), on a coarse grid
    (many ties, also at the k-th value), and one with all but three logits tied."""
    rs = np.random.RandomState(0)
    z = rs.randn(5, V)
    rows = [4.0 * z[0], 0.3 * z[1], 1.0 * z[2], np.round(2.0 * z[3]) / 2, np.round(8.0 * z[4]) / 4]
    plateau = np.zeros(V)
    plateau[[17, 500, 999]] = [3.0, 2.0, 1.0]
    rows += [plateau, np.round(0.5 * z[0], 1)]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 0.9), (1.0, 50, 1.0), (1.0, 50, 0.9), (0.7, 0, 0.95), (1.0, 5, 0.5), (2.0, 0, 0.35), (0.5, 300, 0.8)])
def test_kept_tokens_and_probabilities_equal_numpy_sort_reference(temperature, top_k, top_p):
    logits = logits_with_ties()
    cfg = SamplingConfig(max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p)
    ours = np.asarray(jax.jit(sampling_log_probs, static_argnames="cfg")(jnp.asarray(logits), cfg=cfg))
    for r, row in enumerate(logits):
        ref = reference_log_probs(row, temperature, top_k, top_p)
        kept = np.isfinite(ref)
        np.testing.assert_array_equal(np.isfinite(ours[r]), kept, err_msg=f"kept set of row {r}")
        np.testing.assert_allclose(ours[r][kept], ref[kept], rtol=0, atol=2e-6, err_msg=f"row {r}")
    # The sampler draws inside that set and reports that distribution's log-prob as the behaviour log-prob.
    rows = np.repeat(logits, 64, axis=0)
    tokens, policy, behavior = jax.jit(sample_logits, static_argnames="cfg")(
        jnp.asarray(rows), jax.random.key(0), jnp.arange(len(rows)), jnp.int32(0), cfg=cfg)
    tokens = np.asarray(tokens)
    picked = ours[np.arange(len(rows)) // 64, tokens]
    assert np.isfinite(picked).all()
    np.testing.assert_allclose(np.asarray(behavior), picked, atol=2e-6)
    # The policy log-prob: tempered, untruncated (what the learner scores at RLConfig.temperature).
    tempered = jax.nn.log_softmax(rows / np.float32(temperature))
    np.testing.assert_allclose(np.asarray(policy), np.asarray(tempered)[np.arange(len(rows)), tokens], atol=2e-6)
