"""The jitted update: gradient accumulation is exact, a non-finite loss skips the update, no hidden transfers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.rl.config import RLConfig
from synthetic import ragged_rows, synthetic_batch
from skill1_jax.rl.train_step import init_train_state, make_logprob_fn, make_train_step

VOCAB, ROWS, SEQ = 512, 16, 16
CFG = RLConfig(learning_rate=1e-3, micro_batch_size=4, logprob_chunk=8)


def _model(compute_dtype="float32"):
    model = Qwen2(ModelConfig.from_preset("tiny", vocab_size=VOCAB, compute_dtype=compute_dtype), rngs=nnx.Rngs(0))
    return nnx.split(model, nnx.Param)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)  # the step donates its state: give each run its own buffers


@pytest.fixture(scope="module")
def tiny():
    return _model()


@pytest.fixture(scope="module")
def batch():
    return jax.device_put(synthetic_batch(0, ROWS, SEQ, VOCAB))


@pytest.fixture(scope="module")
def step4(tiny):
    graphdef, params = tiny
    return make_train_step(graphdef, CFG, init_train_state(params, CFG))


def test_gradient_accumulation_over_4_micro_batches_equals_one_big_batch(tiny, batch, step4):
    graphdef, params = tiny
    big_cfg = CFG.replace(micro_batch_size=ROWS)
    step1 = make_train_step(graphdef, big_cfg, init_train_state(params, big_cfg))
    s4, m4 = step4(init_train_state(_copy(params), CFG), batch)
    s1, m1 = step1(init_train_state(_copy(params), big_cfg), batch)
    assert float(m4["grad/norm"]) == pytest.approx(float(m1["grad/norm"]), rel=1e-5)
    for k in ("loss", "loss/util", "loss/rerank", "loss/distill", "kl/ref", "pg/clipfrac"):
        assert float(m4[k]) == pytest.approx(float(m1[k]), rel=1e-5, abs=1e-7), k
    # AdamW's first update is ~lr·g/|g|: on an element whose gradient is near float32 rounding noise, summation order
    # shows at 1e-6 (lr 1e-3); a wrong accumulation moves params by ~lr.
    for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(m4["skipped"]) == 0.0
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(params))]
    assert all(changed)


def test_non_finite_loss_skips_update_and_keeps_state_bit_identical(tiny, batch, step4):
    _, params = tiny
    state, _ = step4(init_train_state(_copy(params), CFG), batch)  # non-trivial Adam moments
    before = jax.device_get(state)
    host = jax.device_get(batch)
    old_logp = np.array(host.old_logp)
    row, col = np.argwhere(host.loss_mask * (host.segment > 0))[0]
    old_logp[row, col] = np.nan  # one corrupt sampler log-prob on a trained token
    bad = jax.device_put(dataclasses.replace(host, old_logp=old_logp))
    after, metrics = step4(state, bad)
    assert not np.isfinite(float(metrics["loss"]))
    assert float(metrics["skipped"]) == 1.0
    for a, b in zip(jax.tree.leaves(jax.device_get(after.params)), jax.tree.leaves(before.params)):
        assert np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(jax.device_get(after.opt_state)), jax.tree.leaves(before.opt_state)):
        assert np.array_equal(a, b)
    assert int(after.step) == int(before.step) + 1


def test_train_and_reference_logprob_steps_run_under_transfer_guard(tiny, step4):
    graphdef, params = tiny
    state = init_train_state(_copy(params), CFG)
    logprob_fn = make_logprob_fn(graphdef, CFG, params)
    host_batch = synthetic_batch(1, ROWS, SEQ, VOCAB)
    batch = jax.device_put(host_batch)  # the one explicit host -> device copy per update
    with jax.transfer_guard("disallow"):
        ref_logp = logprob_fn(params, batch)
        for _ in range(2):
            state, metrics = step4(state, batch)
        metrics = jax.device_get(metrics)  # explicit device -> host
        # A host array slipping into the step is caught.
        with pytest.raises(Exception, match="[Dd]isallowed"):
            step4(state, host_batch)
    assert np.isfinite(metrics["loss"]) and metrics["skipped"] == 0.0
    mask = np.asarray(host_batch.attention_mask)[:, 1:]
    assert np.all(np.asarray(ref_logp)[:, 1:][mask] < 0)


def test_bf16_compute_reference_logprobs_track_float32_with_float32_masters(tiny):
    graphdef32, params = tiny
    graphdef16, params16 = _model("bfloat16")
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))  # masters stay float32
    batch = jax.device_put(synthetic_batch(2, ROWS, SEQ, VOCAB))
    lp32 = make_logprob_fn(graphdef32, CFG, params)(params, batch)
    lp16 = make_logprob_fn(graphdef16, CFG, params16)(params16, batch)
    mask = np.asarray(batch.attention_mask)[:, 1:]
    diff = np.abs(np.asarray(lp32) - np.asarray(lp16))[:, 1:][mask]
    # Same weights (same init seed); bf16 activations cost ~3 significant digits on log-probs around -6.
    assert 0 < diff.max() < 0.1


def test_ragged_update_over_length_grouped_micro_batches_equals_one_padded_mini_batch(tiny):
    from skill1_jax.rl.rows import mini_batches, pack_rows
    from skill1_jax.rl.train_step import make_ragged_update
    graphdef, params = tiny
    steps = [ragged_rows(s, ROWS, VOCAB) for s in (1, 2)]
    padded_step = make_train_step(graphdef, CFG, init_train_state(params, CFG))
    ragged_update = make_ragged_update(graphdef, CFG, init_train_state(params, CFG))
    padded, ragged = init_train_state(_copy(params), CFG), init_train_state(_copy(params), CFG)
    for rows in steps:
        [micro] = mini_batches(rows, mini_batch_size=ROWS, row_unit=4, length_bucket=8, seed=0)
        assert len(micro) == 4 and len({b.seq_len for b in micro}) > 1  # really ragged
        padded, mp = padded_step(padded, jax.device_put(pack_rows(rows, ROWS, 48)))
        ragged, mr = ragged_update(ragged, [jax.device_put(b) for b in micro])
    for k in ("loss", "loss/util", "loss/rerank", "loss/distill", "grad/norm", "tokens/util", "tokens/distill"):
        assert float(mr[k]) == pytest.approx(float(mp[k]), rel=1e-5, abs=1e-7), k
    # Float32 rounding only (different summation order); leaving out any micro-batch moves these by percents.
    for a, b in zip(jax.tree.leaves(ragged.params), jax.tree.leaves(padded.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(jax.tree.leaves(ragged.opt_state), jax.tree.leaves(padded.opt_state)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert int(ragged.step) == 2


def test_sharded_ragged_update_equals_single_device_ragged_update(tiny):
    from skill1_jax.parallel.sharding import make_mesh
    from skill1_jax.rl.batch import batch_shardings
    from skill1_jax.rl.rows import mini_batches
    from skill1_jax.rl.train_step import make_ragged_update, train_state_shardings
    graphdef, params = tiny
    rows = ragged_rows(3, ROWS, VOCAB)
    cfg = CFG.replace(micro_batch_size=2)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)  # batch split over data × fsdp = 4 devices: 8-row micro-batches
    [micro] = mini_batches(rows, mini_batch_size=ROWS, row_unit=8, length_bucket=8, seed=0)
    single = make_ragged_update(graphdef, cfg.replace(micro_batch_size=8), init_train_state(params, cfg))(
        init_train_state(_copy(params), cfg), [jax.device_put(b) for b in micro])
    state = init_train_state(_copy(params), cfg)
    state = jax.device_put(state, train_state_shardings(state, mesh))
    sharded, metrics = make_ragged_update(graphdef, cfg, state, mesh)(
        state, [jax.device_put(b, batch_shardings(mesh)) for b in micro])
    assert any("fsdp" in str(p.sharding.spec) for p in jax.tree.leaves(sharded.params))  # stays FSDP-sharded
    assert float(metrics["loss"]) == pytest.approx(float(single[1]["loss"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(jax.device_get(sharded.params)), jax.tree.leaves(single[0].params)):
        np.testing.assert_allclose(a, b, atol=1e-5)  # as tests/test_parallel_steps.py: reduction order differs


def test_learner_with_zero_kl_skips_the_reference_and_updates_as_if_it_had_scored_it(tiny):
    from skill1_jax import config as C
    from skill1_jax.rl.rows import mini_batches
    from skill1_jax.rl.train_step import make_ragged_update
    from skill1_jax.train.trainer import Learner
    graphdef, params = tiny
    learner = Learner(graphdef, _copy(params), C.cpu_tiny().replace(rl=CFG.replace(kl_coef=0.0)))
    cfg = learner.rl  # cpu_tiny's: also scores at its rollout temperature, 0.7
    assert learner.ref_params is None and learner.ref_logprobs is None  # no second copy of the model
    [micro] = mini_batches(ragged_rows(4, ROWS, VOCAB), mini_batch_size=ROWS, row_unit=4, length_bucket=8, seed=0)
    metrics = learner.update([micro], {})
    assert "kl/ref" not in metrics and metrics["loss"] != 0.0
    # The same update with π_ref really scored: β = 0 makes the KL term's input irrelevant.
    score = make_logprob_fn(graphdef, cfg, params)
    scored = [dataclasses.replace(b, ref_logp=score(params, jax.device_put(b)) * b.loss_mask) for b in micro]
    reference, ref_metrics = make_ragged_update(graphdef, cfg, init_train_state(params, cfg))(
        init_train_state(_copy(params), cfg), [jax.device_put(b) for b in scored])
    assert metrics["loss"] == pytest.approx(float(ref_metrics["loss"]), rel=1e-6)
    for a, b in zip(jax.tree.leaves(learner.state.params), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(a, b, atol=1e-7)
