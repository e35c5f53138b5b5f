"""The real training loop driven by a scripted policy on the household world: every reward, advantage, mask,
segment kind, library change and admission of two steps checked against hand-computed values."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest
from flax import nnx

from launch import plot
from skill1_jax import config as C
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.rl.batch import Segment
from skill1_jax.train import run
from skill1_jax.train.policy import Generation, ScriptedPolicy
from skill1_jax.train.rollout import collect
from skill1_jax.train.trainer import Trainer, training_rows

from train_helpers import TEST_MODEL, ConstantEncoder, HouseholdScript, Recorder, expert_actions

INV_SQRT2 = 1.0 / math.sqrt(2.0)  # GRPO advantage of a {1, 0} group: (1 − 0.5) / std_bessel = 0.5 / 0.7071


@pytest.fixture(scope="module")
def tokenizer(demo_tokenizer):
    return demo_tokenizer


def household_config(**train) -> C.ExperimentConfig:
    base = C.cpu_tiny()
    return base.replace(
        model=TEST_MODEL,
        env=dataclasses.replace(base.env, options=(("num_eval", 8), ("num_train", 40), ("preset", "easy")),
                                max_turns=8),
        library=dataclasses.replace(base.library, top_k=3),
        generation=dataclasses.replace(base.generation, max_query_tokens=64, max_rank_tokens=16,
                                       max_action_tokens=64, max_distill_tokens=256),
        rl=base.rl.replace(micro_batch_size=4, mini_batch_size=64),
        train=dataclasses.replace(base.train, tasks_per_step=2, group_size=2, **train))


@pytest.fixture(scope="module")
def scripted_run(tokenizer):
    """Two real Skill1 steps (tiny random model as the learner) with experts on rollouts 0 and 2."""
    cfg = household_config()
    model = Qwen2(cfg.model, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    trainer = Trainer(cfg, graphdef, params, tokenizer=tokenizer, encoder=ConstantEncoder())
    kw = dict(cfg.env.kwargs)
    order = list(trainer.tasks.order(0))
    tasks = [trainer.train_tasks[i] for i in order[:4]]
    walk = {t.task_id: expert_actions("household", kw, t) for t in tasks}
    script = Recorder(walk, experts={0, 2})
    trainer.policy = ScriptedPolicy(script, tokenizer, cfg.generation)
    steps = []
    for _ in range(2):
        lib_before = [dataclasses.replace(r) for r in trainer.library.records()]
        calls_before = len(trainer.policy.calls)
        stages = []
        metrics = trainer.train_step(on_stage=stages.append)
        steps.append(dict(metrics=metrics, stages=stages, rollouts=trainer.last_rollouts, rewards=trainer.last_rewards,
                          rows=trainer.last_rows, lib_before=lib_before,
                          lib_after=trainer.library.records(), calls=trainer.policy.calls[calls_before:]))
    yield trainer, steps, walk, script
    trainer.close()


def test_progress_is_told_every_stage_in_order(scripted_run):
    _, steps, _, _ = scripted_run
    for s in steps:
        turns = max(e.turns for e in s["rollouts"].episodes)
        ranked = any(len(e.candidates) >= 2 for e in s["rollouts"].episodes)
        assert s["stages"] == (["query"] + ["rank"] * ranked + [f"action {t + 1}" for t in range(turns)]
                               + ["distill", "update", "library"])
    assert "rank" not in steps[0]["stages"] and "rank" in steps[1]["stages"]  # step 2 retrieves step 1's skills


def test_step1_rewards_and_advantages_match_hand_computation(scripted_run):
    _, steps, walk, _ = scripted_run
    s = steps[0]
    np.testing.assert_array_equal(s["rewards"].success, [1, 0, 1, 0])
    np.testing.assert_allclose(s["rewards"].util_advantage, [INV_SQRT2, -INV_SQRT2] * 2, atol=1e-5)
    np.testing.assert_array_equal(s["rewards"].u_hat, [0, 0, 0, 0])  # empty library: nothing retrieved
    np.testing.assert_allclose(s["rewards"].distill_reward, [1, 0, 1, 0])
    np.testing.assert_allclose(s["rewards"].distill_advantage, [INV_SQRT2, -INV_SQRT2] * 2, atol=1e-5)
    eps = s["rollouts"].episodes
    assert [e.group for e in eps] == [0, 0, 1, 1]
    assert [e.turns for e in eps] == [len(walk[eps[0].task.task_id]), 8, len(walk[eps[2].task.task_id]), 8]
    assert s["metrics"]["reward/success"] == 0.5
    assert s["metrics"]["distill/positive_rate"] == 0.5


def test_step1_one_batched_call_per_stage_and_turn(scripted_run):
    _, steps, walk, _ = scripted_run
    calls = steps[0]["calls"]
    eps = steps[0]["rollouts"].episodes
    assert calls[0] == ("query", 4)
    assert all(stage != "rank" for stage, _ in calls), "no re-rank with fewer than 2 candidates"
    # Every live rollout in one call per turn; an expert drops out on the turn after it wins.
    lengths = [len(walk[eps[k].task.task_id]) for k in (0, 2)]
    expected = [2 + sum(turn < n for n in lengths) for turn in range(8)]
    assert [n for stage, n in calls if stage == "action"] == expected
    assert calls[-1] == ("distill", 4)


def test_step1_rows_are_token_exact_with_right_masks_kinds_and_advantages(scripted_run):
    _, steps, _, _ = scripted_run
    s = steps[0]
    eps, rows = s["rollouts"].episodes, s["rows"]
    expected = [(k, r, i) for i, e in enumerate(eps) for k, r in e.segments]
    assert len(rows) == len(expected)
    kinds = [row.kind for row in rows]
    assert kinds.count(Segment.QUERY) == 4 and kinds.count(Segment.DISTILL) == 4 and Segment.RANK not in kinds
    assert kinds.count(Segment.ACTION) == sum(e.turns for e in eps)
    adv = s["rewards"]
    for row, (kind, reply, i) in zip(rows, expected):
        assert row.kind == kind and row.group == eps[i].group
        np.testing.assert_array_equal(row.prompt_ids, reply.prompt_ids)
        np.testing.assert_array_equal(row.response_ids, reply.response_ids)
        want = adv.distill_advantage[i] if kind == Segment.DISTILL else adv.util_advantage[i]
        assert row.advantage == pytest.approx(want)
        assert not row.truncated


def test_rollout_mean_rows_weigh_every_rollouts_util_and_distill_tokens_to_one(scripted_run):
    """Paper Eq. 13 (``loss_agg="rollout-mean"``): the step's rows, rebuilt with that aggregation, give each
    rollout's query + action tokens total weight 1 and its distill tokens total weight 1; token-mean leaves 1 each."""
    trainer, steps, _, _ = scripted_run
    s = steps[0]
    rl = dataclasses.replace(trainer.learner.rl, loss_agg="rollout-mean")
    rows = training_rows(s["rollouts"], s["rewards"], trainer.trained_kinds, rl)
    assert [r.weight for r in s["rows"]] == [1.0] * len(s["rows"])
    totals = {}
    for row, (i, e) in zip(rows, [(i, e) for i, e in enumerate(s["rollouts"].episodes) for _ in e.segments]):
        term = "distill" if row.kind == Segment.DISTILL else "util"
        totals[i, term] = totals.get((i, term), 0.0) + row.weight * len(row.response_ids)
    assert len(totals) == 2 * len(s["rollouts"].episodes)
    assert list(totals.values()) == pytest.approx([1.0] * len(totals))


def test_step1_admits_exactly_the_successful_distillations(scripted_run):
    _, steps, _, _ = scripted_run
    s = steps[0]
    assert s["lib_before"] == []
    after = s["lib_after"]
    eps = s["rollouts"].episodes
    assert [r.source_task for r in after] == [eps[0].task_text, eps[2].task_text]
    for r, slot in zip(after, (0, 2)):
        assert r.strategy == (f"Action Insight: lesson from rollout {slot} on {eps[slot].task_text} | "
                              f"Navigation Insight: check every open receptacle in turn")
        assert r.description == f"when the task is like {eps[slot].task_text}"
        assert (r.utility, r.count, r.created_step, r.outcome) == (0.5, 1, 1, "success")
    assert s["metrics"]["library/admitted"] == 2 and s["metrics"]["library/size"] == 2


def test_step2_retrieves_reranks_injects_top1_and_updates_utilities(scripted_run):
    trainer, steps, _, script = scripted_run
    s = steps[1]
    eps = s["rollouts"].episodes
    ids_before = [r.skill_id for r in s["lib_before"]]
    # Equal U and n: ties go to the lower id, so every rollout retrieves [skill 0, skill 1].
    for e in eps:
        assert e.candidates == [r.strategy for r in s["lib_before"]]
        assert e.ranking == [1, 0] and e.rank_parsed  # "<rank>2,1</rank>"
        assert e.injected == [s["lib_before"][1].strategy]  # top-1 only in training
        assert e.ndcg == pytest.approx(1.0)  # equal gains: every order is ideal
    assert ("rank", 4) in s["calls"]
    np.testing.assert_allclose(s["rewards"].u_hat, [0.5] * 4)
    np.testing.assert_allclose(s["rewards"].distill_reward, [0.5, -0.5, 0.5, -0.5])
    play = [p for stage, slot, p in script.prompts if stage == "action"]
    assert all(s["lib_before"][1].strategy in p for p in play[-8:])
    # Eq. 5 applied once per rollout in order r = 1, 0, 1, 0 to both candidates.
    u = 0.5
    for r in (1, 0, 1, 0):
        u = 0.95 * u + 0.05 * r
    before = {r.skill_id: r for r in s["lib_after"] if r.skill_id in ids_before}
    for sid in ids_before:
        assert before[sid].utility == pytest.approx(u, abs=1e-12)
        assert before[sid].count == 5 and before[sid].last_retrieved_step == 2
    assert len(s["lib_after"]) == 4 and s["metrics"]["library/admitted"] == 2
    assert s["metrics"]["selection/chosen_utility"] == pytest.approx(0.5)
    rank_rows = [r for r in s["rows"] if r.kind == Segment.RANK]
    assert len(rank_rows) == 4 and all(r.advantage == pytest.approx(1.0) for r in rank_rows)
    assert trainer.references.reference_for(eps[1].task_text, True) is not None


def test_figure_readers_read_names_a_step_writes_and_selection_precision_is_the_library_mean_utility(scripted_run):
    """The training metrics ``launch.plot`` and ``run.PLOTTED`` draw (paper Fig. 3–5) are names a Skill1 step logs.
    Fig. 3's selection precision, the average utility of the library's skills, is ``library/mean_utility``: after
    step 2 the two step-1 skills hold 0.95·(0.95·(0.95·(0.95·0.5 + 0.05) + 0) + 0.05) + 0 = 0.497621875 (Eq. 5 for
    r = 1, 0, 1, 0) and the two new ones 0.5, so the mean is 0.4988109375."""
    _, steps, _, _ = scripted_run
    m = steps[1]["metrics"]
    assert [n for n in (*plot.FIGURE_METRICS, *run.PLOTTED) if not n.startswith("eval/") and n not in m] == []
    assert m["library/mean_utility"] == pytest.approx(0.4988109375, abs=1e-12)


def test_update_ran_and_changed_params(scripted_run):
    _, steps, _, _ = scripted_run
    m = steps[1]["metrics"]
    assert m["train/updates"] >= 1 and m["train/skipped"] == 0
    assert m["train/grad/norm"] > 0
    for stage in ("query", "rank", "action", "distill", "ref_logprobs", "update", "library", "env"):
        assert m[f"seconds/{stage}"] >= 0


def test_truncated_replies_carry_no_loss_and_are_not_admitted(tokenizer):
    cfg = household_config()
    cfg = cfg.replace(generation=dataclasses.replace(cfg.generation, max_distill_tokens=12))
    model = Qwen2(cfg.model, rngs=nnx.Rngs(1))
    graphdef, params = nnx.split(model)
    trainer = Trainer(cfg, graphdef, params, tokenizer=tokenizer, encoder=ConstantEncoder())
    tasks = [trainer.train_tasks[i] for i in trainer.tasks.order(0)[:2]]
    walk = {t.task_id: expert_actions("household", dict(cfg.env.kwargs), t) for t in tasks}
    trainer.policy = ScriptedPolicy(HouseholdScript(walk, experts={0, 1, 2, 3}), tokenizer, cfg.generation)
    m = trainer.train_step()
    distill = [r for r in trainer.last_rows if r.kind == Segment.DISTILL]
    assert len(distill) == 4 and all(r.truncated and len(r.response_ids) == 12 for r in distill)
    assert m["rows/truncated"] == 4
    assert len(trainer.library) == 0, "a cut JSON reply must not become a skill"
    from skill1_jax.rl.rows import pack_rows
    batch = pack_rows(distill, 4, 2048)
    assert batch.loss_mask.sum() == 0 and (batch.segment == Segment.DISTILL).sum() == 48
    trainer.close()


def test_eval_samples_plays_every_task_that_many_times_and_averages(scripted_run, tokenizer):
    """``train.eval_samples = 2``: 8 tasks × 2 plays; only play 0 of task 0 (rollout 0) follows the expert, so
    success is 1 of 16 plays, per type too, and the panel is still 8 tasks."""
    trainer, _, _, _ = scripted_run
    walk = {t.task_id: expert_actions("household", dict(trainer.config.env.kwargs), t) for t in trainer.eval_tasks}
    script = Recorder(walk, experts={0})
    trainer.policy = ScriptedPolicy(script, tokenizer, trainer.config.generation)
    config = trainer.config
    trainer.config = config.replace(train=dataclasses.replace(config.train, eval_samples=2))
    try:
        result = trainer.evaluate()
    finally:
        trainer.config = config
    assert (result.num_tasks, result.samples_per_task) == (8, 2)
    assert result.success == pytest.approx(100 / 16) and result.per_type == {"pick_and_place_simple": 100 / 16}
    assert sorted({r for stage, r, _ in script.prompts if stage == "action"}) == list(range(16))


def test_evaluation_injects_all_k_and_never_writes_the_library(scripted_run, tokenizer):
    trainer, _, _, _ = scripted_run
    records = trainer.library.records()
    embeddings = trainer.library.embeddings.copy()
    references = trainer.references.to_json()
    script = Recorder({}, experts=set())
    trainer.policy = ScriptedPolicy(script, tokenizer, trainer.config.generation)
    result = trainer.evaluate()
    assert result.num_tasks == 8 and result.success == 0.0
    assert result.columns() == {"Pick": 0.0, "Look": None, "Clean": None, "Heat": None, "Cool": None, "Pick2": None,
                                "All": 0.0}  # all six columns; the easy world holds pick tasks only
    assert trainer.library.records() == records and np.array_equal(trainer.library.embeddings, embeddings)
    assert trainer.references.to_json() == references
    assert all(stage != "distill" for stage, _, _ in script.prompts)
    play = [p for stage, _, p in script.prompts if stage == "action"]
    # Greedy retrieval with equal similarities ranks by U (ties: lower id): the two fresh skills (U = 0.5), then the
    # older skill 0 (U < 0.5). All K = 3 are injected at evaluation, not only the top-1.
    top3 = [r.strategy for r in sorted(records, key=lambda r: (-r.utility, r.skill_id))[:3]]
    assert all(all(s in p for s in top3) for p in play)


class _OneAtATime(Generation):
    """Hands back one finished reply per step, the most recently submitted first, and logs every submission."""

    def __init__(self, inner, log):
        self.inner, self.log, self.held = inner, log, []

    def submit(self, stage, requests):
        self.log.append([(stage, r.rollout, r.turn) for r in requests])
        self.inner.submit(stage, requests)

    @property
    def busy(self):
        return bool(self.held) or self.inner.busy

    def step(self):
        self.held.extend(self.inner.step())
        return [self.held.pop()]


def test_each_rollout_plays_its_next_turn_as_soon_as_its_reply_returns_with_the_same_episodes(scripted_run):
    """No per-turn barrier: with replies handed back one at a time, a rollout's next turn is queued while other
    rollouts' replies of its previous turn are still outstanding, and every episode (turns, rewards, success,
    token ids of every segment) is the one the turn-by-turn collection plays."""
    trainer, _, walk, script = scripted_run
    tasks = [trainer.train_tasks[i] for i in list(trainer.tasks.order(0))[:2]]
    log = []

    class Slow:
        def open(self, mode, rng, rollouts):
            return _OneAtATime(trainer.policy.open(mode, rng, rollouts), log)

    ctx = trainer.context()
    plain = collect(ctx, tasks, 2, "train", jax.random.key(0), step=7)
    slow = collect(dataclasses.replace(ctx, policy=Slow()), tasks, 2, "train", jax.random.key(0), step=7)
    for a, b in zip(plain.episodes, slow.episodes):
        assert (a.turns, a.turn_rewards, a.success, a.query, a.injected) == (b.turns, b.turn_rewards, b.success,
                                                                                  b.query, b.injected)
        assert [(k, r.response_ids.tolist(), r.prompt_ids.tolist()) for k, r in a.segments] == \
            [(k, r.response_ids.tolist(), r.prompt_ids.tolist()) for k, r in b.segments]
    plays = [batch for batch in log if batch and batch[0][0] == "action"]
    assert plays[0] == [("action", r, 0) for r in range(4)]  # the first turn of every rollout, queued together
    assert all(len(batch) == 1 for batch in plays[1:])  # then each rollout's next turn on its own
    # rollout 3 (answered first) queued its turn 2 while rollouts 0-2 still waited for their turn-1 replies
    assert plays[1] == [("action", 3, 1)]
    assert max(e.turns for e in slow.episodes) > 1
