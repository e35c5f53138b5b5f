"""Host offload (``train.offload``): the AdamW moments and π_ref wait in host memory outside the phase that reads
them, are in device memory inside it, the update trains the same bits as a resident one, and a checkpoint restores
the offloaded state."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skill1_jax import config as C
from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.parallel.offload import DEVICE, HOST, memory_kinds
from skill1_jax.parallel.sharding import make_mesh
from skill1_jax.rl.batch import Segment
from skill1_jax.rl.rows import Row, mini_batches
from skill1_jax.train.trainer import Learner

from test_train_resume import assert_same_tree, resume_config, run
from train_helpers import household_walkthroughs

VOCAB = 512
BOTH = ("moments", "reference")


def _rows(seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    return [Row(prompt_ids=rng.integers(3, VOCAB, 6 + 3 * i), response_ids=rng.integers(3, VOCAB, 4),
                logprobs=np.full(4, -6.0, np.float32), kind=Segment.ACTION, advantage=float(rng.normal()), group=0)
            for i in range(16)]


def test_offloaded_moments_and_reference_sit_on_host_between_phases_and_train_the_same_bits_on_an_fsdp_mesh():
    graphdef, params = nnx.split(Qwen2(ModelConfig.from_preset("tiny", vocab_size=VOCAB), rngs=nnx.Rngs(0)), nnx.Param)
    base = C.cpu_tiny().replace(rl=C.cpu_tiny().rl.replace(micro_batch_size=1, mini_batch_size=8, logprob_chunk=8))
    mesh = make_mesh(data=1, fsdp=8, tensor=1)
    learners = {}
    for offload in ((), BOTH):
        cfg = base.replace(train=dataclasses.replace(base.train, offload=offload))
        learners[offload] = learner = Learner(graphdef, jax.tree.map(jnp.copy, params), cfg, mesh)
        seen = {"update": set(), "reference": set()}
        update, score = learner.train_step, learner.ref_logprobs

        def recorded_update(state, micro, update=update, seen=seen):
            seen["update"] |= memory_kinds(state.opt_state)
            return update(state, micro)

        def recorded_score(ref, batch, score=score, seen=seen):
            seen["reference"] |= memory_kinds(ref)
            return score(ref, batch)

        learner.train_step, learner.ref_logprobs = recorded_update, recorded_score
        resting = HOST if offload else DEVICE
        assert memory_kinds(learner.state.opt_state) == memory_kinds(learner.ref_params) == {resting}
        for step in range(2):  # two steps of two optimizer updates each
            batches = mini_batches(_rows(step), mini_batch_size=8, row_unit=learner.row_unit, length_bucket=16,
                                   seed=step)
            metrics = learner.update(batches, {})
            assert metrics["skipped"] == 0.0 and len(batches) == 2
            assert memory_kinds(learner.state.opt_state) == memory_kinds(learner.ref_params) == {resting}
            assert memory_kinds(learner.state.params) == {DEVICE}  # the rollout's weights stay on device
        # Each phase reads its arrays from device memory.
        assert seen == {"update": {DEVICE}, "reference": {DEVICE}}
        learner.metrics = metrics
    resident, offloaded = learners[()], learners[BOTH]
    assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(offloaded.state.opt_state))
    assert_same_tree(jax.device_get((offloaded.state.params, offloaded.state.opt_state)),
                     jax.device_get((resident.state.params, resident.state.opt_state)))
    assert offloaded.metrics == resident.metrics and resident.metrics["kl/ref"] != 0.0
    assert int(offloaded.state.step) == 4


def test_offload_takes_only_moments_and_reference():
    with pytest.raises(ValueError, match=r"train.offload must name some of \('moments', 'reference'\)"):
        C.override(C.cpu_tiny(), ['train.offload=["params"]'])
    assert C.override(C.cpu_tiny(), ['train.offload=["moments", "reference"]']).train.offload == BOTH


def test_an_offloaded_runs_checkpoint_restores_its_state_bit_for_bit_with_the_moments_on_host(tmp_path, demo_policy_dir,
                                                                                              demo_tokenizer):
    """A real training step with both offloaded, its checkpoint, and a resumed run that restores it: the same
    params, moments and step, the moments in host memory again. (That the update trains the same bits as a resident
    one is the test above; that a restored run continues bit-exactly, tests/test_train_resume.py.)"""
    cfg = resume_config()
    off = cfg.replace(train=dataclasses.replace(cfg.train, steps=2, offload=BOTH))
    walk = household_walkthroughs(off)
    first = run(off, tmp_path / "run", demo_policy_dir, walk, demo_tokenizer, max_steps=1)
    restored = run(off, tmp_path / "run", demo_policy_dir, walk, demo_tokenizer, resume=True, max_steps=0)
    a, b = first["trainer"].learner, restored["trainer"].learner
    assert first["step"] == restored["step"] == 1 and int(a.state.step) == int(b.state.step) > 0
    assert memory_kinds(a.state.opt_state) == memory_kinds(b.state.opt_state) == {HOST}
    assert memory_kinds(b.ref_params) == {HOST} and memory_kinds(b.state.params) == {DEVICE}
    assert_same_tree(jax.device_get((a.state.params, a.state.opt_state)),
                     jax.device_get((b.state.params, b.state.opt_state)))
