"""Sampler claims on a tiny random Qwen2 (vocab 512): cache decoding equals the no-cache forward, log-probs are the
model's, sampling is reproducible, EOS ends rows, top-k/top-p stay inside the nucleus, compilations are bounded."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.sampling import Buckets, Sampler, SamplingConfig, generate, num_compiled_programs, sample_logits

VOCAB = 512
N_NEW = 10
REF_LEN = 128  # the reference forward runs right-padded to this length so it compiles once
# Ragged lengths spanning two prompt buckets (64, 96) in one batch of 5 (padded to the batch bucket 8).
PROMPT_LENGTHS = (3, 20, 41, 64, 70)


def scaled_tiny_model(seed: int = 0) -> Qwen2:
    """Tiny model with matrices scaled ×8: at the default 0.02 init the logits are near-uniform and greedy just
    repeats the input token, which would hide cache bugs; scaled, the argmax depends on the whole context."""
    model = Qwen2(ModelConfig.from_preset("tiny", vocab_size=VOCAB), rngs=nnx.Rngs(seed))
    nnx.update(model, jax.tree.map(lambda x: x * 8.0 if x.ndim >= 2 else x, nnx.state(model)))
    return model


@pytest.fixture(scope="module")
def model():
    return scaled_tiny_model()


@pytest.fixture(scope="module")
def full_forward(model):
    """Log-softmax of the no-cache forward of one unpadded sequence, [len(seq), V] (right padding is invisible
    to earlier positions under the causal mask)."""
    graphdef, params = nnx.split(model)

    @jax.jit
    def fwd(params, tokens):
        logits, _ = nnx.merge(graphdef, params)(tokens, jnp.arange(REF_LEN)[None])
        return jax.nn.log_softmax(logits[0], axis=-1)

    def run(seq):
        padded = np.zeros((1, REF_LEN), np.int32)
        padded[0, :len(seq)] = seq
        return np.asarray(fwd(params, padded))[:len(seq)]

    return run


@pytest.fixture(scope="module")
def prompts():
    rs = np.random.RandomState(0)
    return [list(rs.randint(0, VOCAB, n)) for n in PROMPT_LENGTHS]


def test_greedy_equals_repeated_argmax_of_full_forward(model, full_forward, prompts):
    rng = jax.random.key(0)
    with jax.transfer_guard("disallow"):  # only explicit device_put / device_get inside generate
        out = generate(model, prompts, max_new_tokens=N_NEW, temperature=0.0, rng=rng, eos_ids=())
    for i, prompt in enumerate(prompts):
        seq = list(prompt)
        for _ in range(N_NEW):
            seq.append(int(np.argmax(full_forward(seq)[-1])))
        assert list(out.tokens[i]) == seq[len(prompt):], f"row {i}"
    assert out.finish_reason == ["length"] * len(prompts)
    assert out.mask.all() and list(out.lengths) == [N_NEW] * len(prompts)
    assert (out.behavior_logprobs == 0).all()  # greedy is deterministic: log 1


def test_logprobs_equal_log_softmax_of_full_forward_at_sampled_tokens(model, full_forward, prompts):
    out = generate(model, prompts, max_new_tokens=N_NEW, temperature=1.0, rng=jax.random.key(1), eos_ids=())
    for i, prompt in enumerate(prompts):
        logp = full_forward(list(prompt) + list(out.tokens[i]))
        # position t predicts token t+1: the generated tokens are predicted from len(prompt)-1 on
        ref = logp[np.arange(len(prompt) - 1, len(prompt) - 1 + N_NEW), out.tokens[i]]
        np.testing.assert_allclose(out.logprobs[i], ref, atol=1e-4)
    # At temperature 1 without truncation the sampling distribution is the model's.
    np.testing.assert_allclose(out.behavior_logprobs, out.logprobs, atol=1e-5)


def test_same_rng_reproduces_samples_and_rows_draw_independently(model):
    same_prompt = [list(range(70))] * 8  # the shapes of `prompts`: reuses their compiled programs
    a = generate(model, same_prompt, max_new_tokens=N_NEW, temperature=1.0, rng=jax.random.key(3), eos_ids=())
    b = generate(model, same_prompt, max_new_tokens=N_NEW, temperature=1.0, rng=jax.random.key(3), eos_ids=())
    c = generate(model, same_prompt, max_new_tokens=N_NEW, temperature=1.0, rng=jax.random.key(4), eos_ids=())
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert len({tuple(r) for r in a.tokens}) == 8, "identical prompts must not share a random stream"
    assert not np.array_equal(a.tokens, c.tokens)


def test_eos_ends_row_and_later_tokens_do_not_count(model, prompts):
    greedy = generate(model, prompts, max_new_tokens=N_NEW, temperature=0.0, rng=jax.random.key(0), eos_ids=())
    eos = (int(greedy.tokens[0, 3]),)  # one id, like eos_ids=() (padded to one): no new compilation
    out = generate(model, prompts, max_new_tokens=N_NEW, temperature=0.0, rng=jax.random.key(0), eos_ids=eos)
    for i in range(len(prompts)):
        hits = [t for t in range(N_NEW) if greedy.tokens[i, t] in eos]
        length = hits[0] + 1 if hits else N_NEW  # the EOS token itself counts
        assert out.lengths[i] == length and out.finish_reason[i] == ("eos" if hits else "length"), f"row {i}"
        np.testing.assert_array_equal(out.tokens[i, :length], greedy.tokens[i, :length])
        assert (out.tokens[i, length:] == 0).all() and (out.logprobs[i, length:] == 0).all()
        assert out.mask[i].sum() == length
    assert out.lengths[0] <= 4 and out.finish_reason[0] == "eos"
    assert "length" in out.finish_reason or len(set(greedy.tokens[:, 3])) == 1


def test_top_k_and_top_p_never_sample_outside_nucleus_of_the_tempered_distribution():
    # probs in rank order 0.30, 0.25, 0.20, 0.10, 0.05, then 0.10 spread over 11 tokens; columns shuffled.
    probs = np.array([0.30, 0.25, 0.20, 0.10, 0.05] + [0.10 / 11] * 11)
    perm = np.random.RandomState(0).permutation(16)
    rank_of = np.argsort(perm)  # column -> rank
    logits_row = np.empty(16, np.float32)
    logits_row[perm] = np.log(probs)
    rows = 4000
    logits = jnp.asarray(np.tile(logits_row, (rows, 1)))
    # (temperature, top_k, top_p) -> ranks that may be drawn.
    #  T=1, k=3: ranks {0,1,2}.
    #  T=1, p=0.5: mass before ranks 0,1,2 is 0, 0.30, 0.55 -> {0,1}.
    #  T=0.5, k=3, p=0.75: tempered probs ∝ p² -> top 3 renormalised .468, .325, .208; mass before rank 2 is
    #  .792 >= .75 -> {0,1}. (At T=1 the same k, p keep {0,1,2}: .400, .333, .267, mass before rank 2 .733.)
    cases = {(1.0, 3, 1.0): [0, 1, 2], (1.0, 0, 0.5): [0, 1], (0.5, 3, 0.75): [0, 1]}
    for (t, k, p), ranks in cases.items():
        cfg = SamplingConfig(max_new_tokens=1, temperature=t, top_p=p, top_k=k)
        tok, policy, behavior = jax.jit(sample_logits, static_argnames="cfg")(
            logits, jax.random.key(7), jnp.arange(rows), jnp.int32(0), cfg=cfg)
        drawn = rank_of[np.asarray(tok)]
        assert set(drawn) == set(ranks), (t, k, p, collections.Counter(drawn))
        tempered = probs[ranks] ** (1 / t)
        kept = tempered / tempered.sum()
        freq = np.bincount(drawn, minlength=16)[ranks] / rows
        np.testing.assert_allclose(freq, kept, atol=0.035)  # ~4.5 standard errors at n=4000
        # behaviour log-prob: the renormalised tempered nucleus; policy log-prob: the tempered, untruncated model
        np.testing.assert_allclose(np.asarray(behavior), np.log(kept[np.searchsorted(ranks, drawn)]), atol=1e-5)
        all_tempered = probs ** (1 / t)
        np.testing.assert_allclose(np.asarray(policy), np.log(all_tempered[drawn] / all_tempered.sum()), atol=1e-5)


def test_traced_sampling_values_draw_exactly_what_a_static_config_draws():
    """Temperature, top-p and top-k are traced leaves of `SamplingConfig` (one program for every value); the draw and
    both log-probs equal those of the config compiled as a constant."""
    logits = jax.random.normal(jax.random.key(3), (16, 300)) * 3.0
    traced = jax.jit(sample_logits)
    static = jax.jit(sample_logits, static_argnames="cfg")
    for t, k, p in ((1.0, 0, 1.0), (0.4, 0, 1.0), (0.7, 5, 1.0), (0.7, 7, 1.0), (1.0, 0, 0.9), (0.5, 50, 0.8),
                    (1.3, 0, 0.3)):
        cfg = SamplingConfig(max_new_tokens=1, temperature=t, top_p=p, top_k=k)
        args = (logits, jax.random.key(1), jnp.arange(16), jnp.int32(2))
        for a, b in zip(traced(*args, cfg), static(*args, cfg=cfg)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str((t, k, p)))


def test_changing_temperature_top_p_or_top_k_within_its_bucket_compiles_nothing(model):
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]

    def sample(**values):
        return generate(model, prompts, max_new_tokens=N_NEW, rng=jax.random.key(0), eos_ids=(), **values)

    for first, second in (({"temperature": 1.0}, {"temperature": 0.4}),
                          ({"temperature": 0.7, "top_p": 0.9}, {"temperature": 1.0, "top_p": 0.5}),
                          ({"temperature": 1.0, "top_k": 5}, {"temperature": 0.4, "top_k": 8})):
        a = sample(**first)
        before = num_compiled_programs()
        b = sample(**second)
        assert num_compiled_programs() == before, (first, second)
        assert not np.array_equal(a.logprobs, b.logprobs)  # the new values did take effect
    before = num_compiled_programs()
    sample(temperature=1.0, top_k=9)  # top-k past its power-of-two bucket (8): a new program
    assert num_compiled_programs() > before


def test_buckets_pick_smallest_size_at_least_n_and_reject_oversize():
    b = Buckets()
    assert [b.prompt_length(n) for n in (1, 64, 65, 97, 700, 32768)] == [64, 64, 96, 128, 768, 32768]
    assert [b.batch_size(n) for n in (1, 2, 8, 9, 33)] == [1, 8, 8, 16, 64]
    with pytest.raises(ValueError, match="prompt length 40000 exceeds"):
        b.prompt_length(40000)
    with pytest.raises(ValueError, match="strictly increasing"):
        Buckets(batch_sizes=(8, 1))


def test_alfworld_like_episode_compiles_bounded_programs_and_new_params_do_not_recompile(model):
    """8 rollouts × 50 turns: rows leave when their episode ends and every turn brings new prompt lengths
    (70–128 tokens here, to keep the test fast). Unbucketed that is one program pair per distinct
    (batch, longest prompt): dozens."""
    rs = np.random.RandomState(0)
    ends = [6, 12, 19, 25, 31, 38, 44, 50]
    turns = [[list(rs.randint(0, VOCAB, rs.randint(70, 129))) for e in ends if t < e] for t in range(50)]
    raw_shapes = {(len(ps), max(map(len, ps))) for ps in turns}
    b = Buckets()
    bucket_pairs = {(b.batch_size(n), b.prompt_length(p)) for n, p in raw_shapes}
    assert len(raw_shapes) >= 30
    # batch 8..1 -> buckets {8, 1}; lengths 70..128 -> {96, 128}: at most 4 pairs, 2 programs each
    assert len(bucket_pairs) <= 4

    def run(m):
        for t, ps in enumerate(turns):
            generate(m, ps, max_new_tokens=N_NEW, temperature=1.0, rng=jax.random.fold_in(jax.random.key(0), t),
                     eos_ids=())

    before = num_compiled_programs()
    run(model)
    compiled = num_compiled_programs() - before
    assert compiled <= 2 * len(bucket_pairs) <= 8
    run(scaled_tiny_model(seed=1))  # same architecture, new parameter values: nothing recompiles
    assert num_compiled_programs() - before == compiled


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stage_over_the_kv_budget_runs_in_sub_batches_with_identical_tokens_and_logprobs(model, temperature):
    rs = np.random.RandomState(3)
    prompts = [list(rs.randint(0, VOCAB, n)) for n in rs.randint(2, 90, 32)]  # prompt bucket 96
    graphdef, params = nnx.split(model)
    cfg, rng = SamplingConfig(N_NEW, temperature=temperature), jax.random.key(5)
    whole = Sampler(VOCAB, eos_ids=()).generate(graphdef, params, prompts, cfg, rng)
    # 16 rows of 96 + 10 slots fit, 32 do not: two sub-batches, rows 16-31 drawing with their stage-wide keys.
    # (16, not 8: XLA:CPU sums a row reduction of >= 4,096 elements in a YNNPACK fusion and a smaller one in its own
    # emitter, in another order; 8-row sub-batches put the decode attention's softmax, 32 rows x ~100 slots, on the
    # other side of that line from the whole batch's, and log-probs then differ in the last bits; docs/sampling.md.)
    sampler = Sampler(VOCAB, eos_ids=(), kv_cache_tokens=16 * (96 + N_NEW))
    assert sampler.sub_batch_rows(len(prompts), 96, N_NEW) == 16
    split = sampler.generate(graphdef, params, prompts, cfg, rng)
    np.testing.assert_array_equal(split.tokens, whole.tokens)
    np.testing.assert_array_equal(split.logprobs, whole.logprobs)
    assert split.finish_reason == whole.finish_reason
    with pytest.raises(ValueError, match="kv_cache_tokens=100 holds no row of 106 cache slots"):
        Sampler(VOCAB, eos_ids=(), kv_cache_tokens=100).generate(graphdef, params, prompts, cfg, rng)
