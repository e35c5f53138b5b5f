"""A tiny random Qwen2 runs two real steps of every variant end to end (sampler → envs → library → update), and
the learner trains on exactly the token ids the sampler produced."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from skill1_jax import config as C
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.model.tokenizer import eos_token_ids
from skill1_jax.rl.batch import Segment
from skill1_jax.skills import SkillDraft
from skill1_jax.train.trainer import Trainer

from train_helpers import TEST_MODEL, ConstantEncoder, ending_policy_params

SEED_SKILLS = ("Action Insight: find the object first, then carry it to the target receptacle.",
               "Navigation Insight: visit countertops and tables before closed cabinets.",
               "Action Insight: heat with the microwave, cool with the fridge, clean in the sinkbasin.")

# Segment kinds each variant may train on (a λ of 0 removes its rows; no_library is plain GRPO on actions).
EXPECTED_KINDS = {
    "skill1": {Segment.QUERY, Segment.RANK, Segment.ACTION, Segment.DISTILL},
    "no_selection": {Segment.ACTION, Segment.DISTILL},
    "no_distillation": {Segment.QUERY, Segment.RANK, Segment.ACTION},
    "no_library": {Segment.ACTION},
    "lambda1_0": {Segment.QUERY, Segment.ACTION, Segment.DISTILL},
    "lambda2_0": {Segment.QUERY, Segment.RANK, Segment.ACTION},
    "lambda_both_0": {Segment.QUERY, Segment.ACTION},
}


@pytest.fixture(scope="module")
def tokenizer(demo_tokenizer):
    return demo_tokenizer


def tiny_config(variant: str) -> C.ExperimentConfig:
    base = C.cpu_tiny()
    return base.replace(
        model=TEST_MODEL,
        variant=variant,
        env=dataclasses.replace(base.env, options=(("num_eval", 4), ("num_train", 20), ("preset", "easy")),
                                max_turns=2),
        generation=dataclasses.replace(base.generation, max_query_tokens=8, max_rank_tokens=6, max_action_tokens=8,
                                       max_distill_tokens=8),
        rl=base.rl.replace(micro_batch_size=4, mini_batch_size=16),
        train=dataclasses.replace(base.train, tasks_per_step=1, group_size=2, eval_tasks=2))


def seed_library(trainer, encoder):
    for s in SEED_SKILLS:
        key = encoder.encode([s])
        trainer.library.admit(SkillDraft(strategy=s, description=s, source_task="seed"), key, key)


@pytest.mark.parametrize("variant", sorted(C.VARIANTS))
def test_two_real_steps_of_each_variant(variant, tokenizer):
    cfg = tiny_config(variant)
    graphdef, params = nnx.split(Qwen2(cfg.model, rngs=nnx.Rngs(0)))
    params = ending_policy_params(params, eos_token_ids(tokenizer)[0])  # replies end, so rows carry loss
    before = jax.tree.map(np.array, params)
    encoder = ConstantEncoder()
    trainer = Trainer(cfg, graphdef, params, tokenizer=tokenizer, encoder=encoder)
    if trainer.library is not None:
        seed_library(trainer, encoder)
    kinds = set()
    for step in range(2):
        m = trainer.train_step()
        kinds |= {r.kind for r in trainer.last_rows}
        assert m["train/updates"] >= 1 and np.isfinite(m["train/loss"]) and m["train/skipped"] == 0
        if step == 0:
            # One update, at the params that sampled: π_θ / π_old is 1, both at the rollouts' temperature (the
            # sampler's log-probs are tempered: test_rl_sampler_logprobs).
            assert trainer.learner.rl.temperature == cfg.generation.temperature == 0.7
            assert m["train/updates"] == 1 and abs(m["train/pg/approx_kl"]) < 1e-5, m["train/pg/approx_kl"]
        # Token-exact: every row is the sampler's prompt and reply ids, unchanged.
        segs = [r for e in trainer.last_rollouts.episodes for k, r in e.segments if k in trainer.trained_kinds]
        assert len(segs) == len(trainer.last_rows)
        for row, reply in zip(trainer.last_rows, segs):
            assert row.prompt_ids is reply.prompt_ids and row.response_ids is reply.response_ids
        # The step's metrics count the engine's work: every reply's tokens but its first (the prefill samples it)
        # came out of decode row-steps, and every prompt was prefilled (identical ones once).
        replies = [r for e in trainer.last_rollouts.episodes for _, r in e.segments]
        assert m["rollout/decode_tokens"] == sum(len(r.response_ids) - 1 for r in replies)
        assert m["rollout/prefill_requested"] == sum(len(r.prompt_ids) for r in replies)
        assert 0 < m["rollout/useful_row_step_fraction"] <= 1
    assert kinds == EXPECTED_KINDS[variant]
    assert (trainer.library is None) == (variant == "no_library")
    after = jax.tree.map(np.array, trainer.learner.params)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    result = trainer.evaluate()
    assert result.num_tasks == 2 and set(result.columns()) >= {"All"}
    trainer.close()


def test_model_policy_rows_are_the_sampled_ids_not_a_retokenization(tokenizer):
    """The sampled reply ids of a random policy are rarely the tokenizer's canonical encoding of their own text:
    training on re-encoded text would change the tokens (and π_old alignment); the rows keep the sampled ids."""
    cfg = tiny_config("no_library")
    graphdef, params = nnx.split(Qwen2(cfg.model, rngs=nnx.Rngs(3)))
    trainer = Trainer(cfg, graphdef, params, tokenizer=tokenizer)
    trainer.train_step()
    differs = 0
    for e in trainer.last_rollouts.episodes:
        for _, reply in e.segments:
            assert len(reply.logprobs) == len(reply.response_ids) and np.all(reply.logprobs <= 0)
            reencoded = tokenizer(tokenizer.decode(reply.response_ids), add_special_tokens=False)["input_ids"]
            differs += list(reencoded) != reply.response_ids.tolist()
    assert differs > 0, "the check needs at least one reply whose re-encoding differs"
    trainer.close()
