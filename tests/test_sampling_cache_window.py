"""Decoding in cache windows: segments attend over the filled part of the cache (rounded up to a window of
``Buckets.decode_chunk`` slots), stay token-for-token and log-prob equal to a one-window decode and to the no-cache
forward, and compile only the windows a batch reaches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax.sampling import Buckets, Sampler, SamplingConfig, num_compiled_programs
from test_sampling import VOCAB, scaled_tiny_model

PROMPT_LENGTHS = (5, 17, 40, 9)  # one prompt bucket (64), batch bucket 8
N_NEW = 11
CHUNK = 4  # windows 68, 72, 74: three segments
REF_LEN = 64 + N_NEW


@pytest.fixture(scope="module")
def model_parts():
    return nnx.split(scaled_tiny_model())


@pytest.fixture(scope="module")
def prompts():
    rs = np.random.RandomState(5)
    return [list(rs.randint(0, VOCAB, n)) for n in PROMPT_LENGTHS]


def _run(graphdef, params, prompts, buckets, cfg, eos_ids=()):
    """(result, cache slots at the end) of one generation."""
    sampler = Sampler(VOCAB, eos_ids=eos_ids, buckets=buckets)
    state = sampler.decode(graphdef, params, sampler.prefill(graphdef, params, prompts, cfg, jax.random.key(2)), cfg)
    return sampler.finish(state, len(prompts)), state.cache.length


def test_decode_windows_add_one_chunk_each_and_end_at_the_last_fed_token():
    # Feeding tokens 1..N-1 after a P-slot prefill fills P + N - 1 slots.
    assert Buckets(decode_chunk=4).decode_windows(64, 11) == (68, 72, 74)
    assert Buckets(decode_chunk=4).decode_windows(64, 9) == (68, 72)
    assert Buckets(decode_chunk=128).decode_windows(128, 32) == (159,)
    assert Buckets().decode_windows(96, 1) == ()
    with pytest.raises(ValueError, match="decode_chunk must be positive"):
        Buckets(decode_chunk=0)


def test_windowed_decode_equals_one_window_and_the_no_cache_forward(model_parts, prompts):
    graphdef, params = model_parts
    cfg = SamplingConfig(max_new_tokens=N_NEW, temperature=0.0)
    windowed, slots = _run(graphdef, params, prompts, Buckets(decode_chunk=CHUNK), cfg)
    whole, whole_slots = _run(graphdef, params, prompts, Buckets(decode_chunk=1024), cfg)
    assert slots == whole_slots == 64 + N_NEW - 1
    np.testing.assert_array_equal(windowed.tokens, whole.tokens)
    np.testing.assert_allclose(windowed.logprobs, whole.logprobs, atol=1e-5)

    # Independent reference: the no-cache forward over prompt ⧺ generated tokens, right-padded to one length
    # (invisible to earlier positions under the causal mask) so it compiles once.
    @jax.jit
    def forward(tokens):
        logits, _ = nnx.merge(graphdef, params)(tokens, jnp.arange(REF_LEN)[None])
        return jax.nn.log_softmax(logits[0], axis=-1)

    for i, prompt in enumerate(prompts):
        seq = np.zeros((1, REF_LEN), np.int32)
        seq[0, :len(prompt) + N_NEW] = list(prompt) + list(windowed.tokens[i])
        logp = np.asarray(forward(seq))
        at = np.arange(len(prompt) - 1, len(prompt) - 1 + N_NEW)  # position t predicts token t + 1
        np.testing.assert_array_equal(windowed.tokens[i], logp[at].argmax(-1))
        np.testing.assert_allclose(windowed.logprobs[i], logp[at, windowed.tokens[i]], atol=1e-4)


def test_rows_that_stop_early_leave_later_windows_unallocated_and_uncompiled(model_parts, prompts):
    graphdef, params = model_parts
    buckets = Buckets(decode_chunk=CHUNK)
    greedy, _ = _run(graphdef, params, prompts, buckets, SamplingConfig(max_new_tokens=N_NEW, temperature=0.0))
    # Every row's 2nd greedy token is an EOS: all rows finish inside the first window (slots 64..67).
    eos = tuple(sorted({int(t) for t in greedy.tokens[:, 1]}))
    cfg = SamplingConfig(max_new_tokens=N_NEW + 2, temperature=0.0)  # a config nothing else compiles
    assert len(buckets.decode_windows(64, cfg.max_new_tokens)) == 3
    before = num_compiled_programs()
    stopped, slots = _run(graphdef, params, prompts, buckets, cfg, eos_ids=eos)
    assert num_compiled_programs() - before == 2  # the prefill and the first window's decode, not the later two
    assert slots == 64 + CHUNK
    assert all(n <= 2 for n in stopped.lengths) and set(stopped.finish_reason) == {"eos"}
