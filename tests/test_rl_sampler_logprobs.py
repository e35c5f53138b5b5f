"""The learner's token log-probs use the sampler's alignment: old_logp[t] = log π(token t | prefix), on rows built
by the real batch builder (``rl.rows.pack_rows``), at the rollouts' sampling temperature."""

import jax
import pytest
import numpy as np
from flax import nnx

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.rl.batch import Segment
from skill1_jax.rl.logprobs import token_logprobs
from skill1_jax.rl.rows import Row, pack_rows
from skill1_jax.sampling import generate


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_training_forward_reproduces_sampler_logprobs_under_transfer_guard(temperature):
    model = Qwen2(ModelConfig.from_preset("tiny", vocab_size=512, compute_dtype="float32"), rngs=nnx.Rngs(1))
    prompts = [[11, 12, 13, 14, 15], [21, 22, 23]]
    rng = jax.random.key(0)
    with jax.transfer_guard("disallow"):  # sampling moves data only through explicit device_put / device_get
        result = generate(model, prompts, max_new_tokens=6, rng=rng, eos_ids=(), temperature=temperature)
    rows = [Row(prompt_ids=np.array(p), response_ids=result.tokens[b, :result.lengths[b]],
                logprobs=result.logprobs[b, :result.lengths[b]], kind=Segment.ACTION, advantage=1.0, group=0)
            for b, p in enumerate(prompts)]
    batch = pack_rows(rows, num_rows=2, seq_len=16)
    tokens, positions, mask = jax.device_put((batch.tokens, batch.positions, batch.attention_mask))
    with jax.transfer_guard("disallow"):
        logp, _ = jax.jit(lambda t, p, m: token_logprobs(model, t, p, m, chunk=4, temperature=temperature))(
            tokens, positions, mask)
        logp = jax.device_get(logp)
    for b, p in enumerate(prompts):
        n = int(result.lengths[b])
        assert n > 0
        np.testing.assert_allclose(logp[b, len(p):len(p) + n], result.logprobs[b, :n], atol=1e-4)
        if temperature != 1.0:  # ... and not the untempered model's (the mismatch this guards against)
            untempered = jax.device_get(token_logprobs(model, tokens, positions, mask, chunk=4)[0])
            assert np.abs(untempered[b, len(p):len(p) + n] - result.logprobs[b, :n]).max() > 1e-2
        # The builder stored the sampler's log-probs at the same positions: exactly what the loss reads as π_old.
        np.testing.assert_array_equal(batch.old_logp[b, len(p):len(p) + n], result.logprobs[b, :n])
        assert batch.loss_mask[b].sum() == n and (batch.segment[b] == Segment.ACTION).sum() == n
