"""The rollout engine (sampling/engine.py): a request's tokens and log-probs depend only on the request, and they are
the static sampler's, with log-probs a teacher-forced forward reproduces."""

import jax
import numpy as np
import pytest
from flax import nnx

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.rl.logprobs import token_logprobs
from skill1_jax.sampling import SamplingConfig, generate
from skill1_jax.sampling.engine import Engine, EngineConfig, EngineRequest

PROMPTS = [[11, 12, 13, 14, 15], [21, 22, 23], [5] * 40, [7, 8], [11, 12, 13, 14, 15], [9] * 70, [21, 22, 23]]
LIMITS = [6, 3, 8, 1, 6, 5, 7]
EOS = tuple(range(0, 512, 8))  # one id in 8, so that some sampled replies end early


def _model():
    return Qwen2(ModelConfig.from_preset("tiny", vocab_size=512, compute_dtype="float32"), rngs=nnx.Rngs(1))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_engine_replies_are_identical_for_1_3_16_slots_shuffled_arrival_and_a_growing_cache(temperature):
    graphdef, params = nnx.split(_model())
    requests = [EngineRequest(tuple(p), (7, r, 2, 0), n) for r, (p, n) in enumerate(zip(PROMPTS, LIMITS))]
    runs = []
    for slots, order, cache in ((1, range(7), 96), (3, [6, 2, 0, 5, 1, 4, 3], 96), (16, [3, 4, 1, 5, 0, 2, 6], 96),
                                (3, [5, 1, 0, 2, 6, 3, 4], 10)):
        # row_tile 4: 1 and 3 slots decode 8 rows, 16 slots 16 rows, so the step shapes differ too; a 10-slot cache
        # must grow (doubling) to hold the 96-token prompt bucket
        config = EngineConfig(slots=slots, cache_length=cache, window=3, row_tile=4, prompt_bucket=96, span_bucket=96)
        engine = Engine(graphdef, params, SamplingConfig(max_new_tokens=8, temperature=temperature),
                        jax.random.key(3), config, eos_ids=EOS)
        done = {c.request.identity: c for c in engine.generate([requests[i] for i in order])}
        runs.append([done[r.identity] for r in requests])
        assert engine.cache_length == (96 if cache == 96 else 160)
        # identical prompts were prefilled once: 5 distinct prompts, one bucket of 96 tokens
        assert engine.stats.prefill_computed == 5 * 96 and engine.stats.prefill_requested == sum(map(len, PROMPTS))
    reasons = {c.finish_reason for c in runs[0]}
    assert "length" in reasons and (temperature == 0 or "eos" in reasons)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(a.tokens, b.tokens)
            np.testing.assert_array_equal(a.logprobs, b.logprobs)  # bitwise: no tolerance
            np.testing.assert_array_equal(a.behavior_logprobs, b.behavior_logprobs)


def test_engine_reproduces_static_sampler_and_teacher_forced_logprobs():
    """Identity (r,) gives the static sampler's row-r key stream: the same tokens; log-probs as the learner's
    forward recomputes them at the sampling temperature."""
    model = _model()
    graphdef, params = nnx.split(model)
    rng, temperature, prompts = jax.random.key(0), 0.7, PROMPTS[:4]
    static = generate(model, prompts, max_new_tokens=6, rng=rng, eos_ids=(), temperature=temperature)
    engine = Engine(graphdef, params, SamplingConfig(max_new_tokens=6, temperature=temperature), rng,
                    EngineConfig(slots=2, cache_length=96, window=4, row_tile=4, prompt_bucket=96, span_bucket=96),
                    eos_ids=())
    replies = engine.generate([EngineRequest(tuple(p), (r,), 6) for r, p in enumerate(prompts)])
    for r, (p, c) in enumerate(zip(prompts, replies)):
        np.testing.assert_array_equal(c.tokens, static.tokens[r])
        full = np.array(p + list(c.tokens))[None]
        logp, _ = token_logprobs(model, full, np.arange(full.shape[1])[None], np.ones_like(full, bool), chunk=16,
                                 temperature=temperature)
        np.testing.assert_allclose(c.logprobs, np.asarray(logp)[0, len(p):], atol=1e-4)


def test_tail_requests_moved_to_lower_slots_keep_their_replies_and_fewer_rows_are_decoded():
    """16 slots in tiles of 2: as requests finish, the survivors are moved into the lowest slots and the windows
    decode 8, then 4 rows; every reply equals the one a 2-slot engine (4 rows throughout) gives."""
    graphdef, params = nnx.split(_model())
    requests = [EngineRequest(tuple(p), (r,), n) for r, (p, n) in enumerate(zip(PROMPTS, [2, 1, 8, 1, 2, 8, 1]))]
    runs, engines = [], []
    for slots in (16, 2):
        engine = Engine(graphdef, params, SamplingConfig(max_new_tokens=8, temperature=1.0), jax.random.key(4),
                        EngineConfig(slots=slots, cache_length=96, window=2, row_tile=2, prompt_bucket=96,
                                     span_bucket=96), eos_ids=())
        runs.append(engine.generate(requests))
        engines.append(engine)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.logprobs, b.logprobs)
    many, few = engines
    assert many.stats.moved > 0  # requests 2 and 5 (8 tokens) outlive the rest; 5 sat in slot 5, past 4 rows
    tokens = sum(len(c.tokens) - 1 for c in runs[0])
    # the 16-slot engine never decodes its 16 rows: 8 while 7 requests run, 4 once at most 4 do
    assert many.stats.decode_row_steps < 8 * (many.stats.decode_row_steps // 4) and many.stats.decode_tokens == tokens


def test_a_keyed_rollouts_turns_prefill_their_shared_head_once_with_replies_independent_of_slots_and_head_eviction():
    """Two rollouts' turns share their system-and-task head (40 tokens; 32 of them, two 16-token granules, are the
    head): each head is prefilled once on its own and each turn only its tail. Replies are bitwise the same on 1
    and 16 slots, in any interleaving of the rollouts (so with different attention spans), and when the head cache
    is too small to keep a head (it is then prefilled again); their log-probs are the model's."""
    model = _model()
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(0)
    heads = [tuple(rng.integers(1, 512, 40)) for _ in range(2)]
    requests = [EngineRequest(heads[r] + tuple(rng.integers(1, 512, 5 + 7 * t)), (r, t), 6, prefix_key=r)
                for t in range(3) for r in range(2)]
    runs, computed = [], []
    for slots, order, head_cache in ((1, range(6), 1 << 15), (16, [1, 0, 3, 5, 2, 4], 1 << 15), (1, range(6), 16)):
        # span_bucket 16: a window's attention span (16 to 96 slots) follows the longest neighbour's reach
        engine = Engine(graphdef, params, SamplingConfig(max_new_tokens=6, temperature=1.0), jax.random.key(5),
                        EngineConfig(slots=slots, cache_length=96, window=2, row_tile=4, prompt_bucket=16,
                                     span_bucket=16, head_cache_tokens=head_cache), eos_ids=())
        done = {c.request.identity: c for c in engine.generate([requests[i] for i in order])}
        runs.append([done[r.identity] for r in requests])
        computed.append(engine.stats.prefill_computed)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(a.tokens, b.tokens)
            np.testing.assert_array_equal(a.logprobs, b.logprobs)
    # Turn 0 of each rollout is prefilled whole (48 tokens); turns 1 and 2 run tails of 20 and 27 tokens (32 each
    # padded) over the rollout's 32-token head, which is prefilled once, or once per turn when it cannot be kept.
    assert computed[0] == computed[1] == 2 * (48 + 32 + 32 + 32) and computed[2] == computed[0] + 2 * 32
    for r, c in zip(requests, runs[0]):
        full = np.array(r.prompt + tuple(c.tokens))[None]
        logp, _ = token_logprobs(model, full, np.arange(full.shape[1])[None], np.ones_like(full, bool), chunk=16)
        np.testing.assert_allclose(c.logprobs, np.asarray(logp)[0, len(r.prompt):], atol=1e-4)
