"""The training loop of paper Algorithm 1: rollouts → rewards → batch → update → library → metrics.

One ``Trainer.train_step()``:
  1. the task sampler yields N training tasks (a seeded permutation per epoch; its position is checkpointed);
  2. ``rollout.collect`` plays N × G rollouts through stages A–D (with several processes each plays a share and
     all gather the whole step's rollouts: ``multihost``);
  3. rewards (``rewards_and_advantages``): r ∈ {0, 1}; Â_util over each group (Eq. 8); Û = max pre-update U over
     the retrieved candidates, R_distill = r − Û normalised separately (Eq. 10); raw NDCG for rank rows (Eq. 9);
     the action turns get Â_util too, or with ``rl.advantage="gigpo"`` GiGPO's episode- plus step-level advantage
     over anchor states (``play_turns``); a turn whose reply did not parse loses ``rl.invalid_format_penalty`` from
     its reward first (the released runs' invalid-format penalty);
  4. ``rl.rows`` turns every generated segment into a token-exact row and splits the rows into mini-batches of
     length-grouped micro-batches (one row per sequence, or with ``rl.row_layout = "packed"`` several); the frozen
     initial policy scores them (reference log-probs) and each mini-batch is one optimizer update
     (``rl.train_step.make_ragged_update``, or with ``train.update_layout = "replicated"`` its data-parallel twin
     ``rl.pmap_step.make_pmap_ragged_update``);
  5. the library (``update_library``): Eq. 5 EMA for every retrieved candidate of every rollout, admission of the
     parsed distillations of successful rollouts (merge / retirement inside ``SkillLibrary.admit``), and the
     contrastive reference store; training rollouts only;
  6. metrics (paper Fig. 3–5 quantities, tokens and seconds per stage) go to ``metrics.MetricsWriter``.

Randomness is a pure function of (seed, step): sampling keys are ``fold_in(key(seed), step)``, mini-batch
shuffles ``hash(seed, step)``, the task order a permutation per (seed, epoch). A resumed run therefore needs only
the step, the task position and the host state (library, references) to continue bit-identically.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from skill1_jax.agent.history import ReferenceTrajectories
from skill1_jax.config import ExperimentConfig
from skill1_jax.envs import base
from skill1_jax.envs.pool import EnvPool, SerialPool
from skill1_jax.model.qwen2 import compute_params
from skill1_jax.parallel import offload
from skill1_jax.rl import advantages as adv
from skill1_jax.rl.batch import Segment, TrainBatch, batch_shardings
from skill1_jax.rl.pmap_step import make_pmap_ragged_update
from skill1_jax.rl.config import RLConfig
from skill1_jax.rl.rows import Row, layout_stats, mini_batches, rollout_mean_weights, row_stats
from skill1_jax.rl.train_step import (TrainState, batch_devices, init_train_state, make_logprob_fn,
                                     make_ragged_update, train_state_shardings)
from skill1_jax.skills import SkillDraft, SkillLibrary
from skill1_jax.train.evaluate import EvalResult, eval_key, eval_panel, evaluate
from skill1_jax.train.multihost import collect_shared, coordinator_update, sampling_params
from skill1_jax.train.policy import ModelPolicy, Policy
from skill1_jax.train.rollout import RolloutContext, Rollouts, work_metrics

log = logging.getLogger(__name__)


# ---- task order ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TaskSampler:
    """Training tasks in a seeded random order, a fresh permutation each epoch; ``position`` counts tasks drawn."""

    num_tasks: int
    seed: int
    position: int = 0

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_tasks)

    def take(self, n: int) -> list[int]:
        out = []
        for p in range(self.position, self.position + n):
            out.append(int(self.order(p // self.num_tasks)[p % self.num_tasks]))
        self.position += n
        return out


# ---- rewards ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rewards:
    """Per-rollout rewards and advantages of one step ([R] arrays, rollout order), and each rollout's play-turn
    advantages."""

    success: np.ndarray  # r ∈ {0, 1}
    util_advantage: np.ndarray  # Â_util (Eq. 8)
    u_hat: np.ndarray  # Û = max pre-update U of the retrieved candidates, 0 if none
    distill_reward: np.ndarray  # r − Û (Eq. 10)
    distill_advantage: np.ndarray  # group-normalised r − Û
    ndcg: np.ndarray  # R_rerank (Eq. 9), 0 without a parsed ranking of ≥ 2 candidates
    action_advantage: list[np.ndarray]  # per rollout, one per play turn: Â_util, or GiGPO's A^E + ω·A^S
    anchor_group_size: float  # play turns per anchor state (task group, observation); 1 when no state repeats


@dataclasses.dataclass(frozen=True)
class PlayTurns:
    """Every play turn of one step's rollouts ([M] arrays, rollout then turn order)."""

    rollout: np.ndarray  # the turn's rollout (index into the step's episodes)
    group: np.ndarray  # its task group
    anchor: np.ndarray  # id of the observation the turn's action answered: equal ids ⇔ identical texts
    reward: np.ndarray  # the environment's reward of the turn (``Episode.turn_rewards``)
    invalid: np.ndarray  # the turn's reply did not parse (``Episode.turn_invalid``)


def play_turns(rollouts: Rollouts) -> PlayTurns:
    """The step's play turns with their anchor states keyed as GiGPO keys them (Feng et al. 2025, §4.2; verl-agent's
    ``anchor_obs``): the raw environment observation the turn's action answered, compared exactly. The texts are
    interned to integer ids here (no hashing, so no collisions): ``rl/`` never sees strings."""
    ids: dict[str, int] = {}
    turns = [(i, e.group, ids.setdefault(turn.observation, len(ids)), reward, invalid)
             for i, e in enumerate(rollouts.episodes)
             for turn, reward, invalid in zip(e.history.turns, e.turn_rewards, e.turn_invalid, strict=True)]
    rollout, group, anchor, reward, invalid = zip(*turns) if turns else ((),) * 5
    return PlayTurns(rollout=np.array(rollout, np.int64), group=np.array(group, np.int64),
                     anchor=np.array(anchor, np.int64), reward=np.array(reward, np.float64),
                     invalid=np.array(invalid, bool))


def rewards_and_advantages(rollouts: Rollouts, rl: RLConfig) -> Rewards:
    """Eq. 8–10 for one step's rollouts (see module docstring). The action turns' advantages follow
    ``rl.advantage``: the rollout's Â_util on every turn (``"grpo"``, Eq. 12) or GiGPO's A^E + ω·A^S (``"gigpo"``,
    ``rl.advantages.gigpo_advantage``, with A^E = Â_util when ``rl.gigpo_norm == "std"``).

    The invalid-format penalty p = ``rl.invalid_format_penalty`` lowers the reward of each turn whose reply did not
    parse before the group normalisation (``adv.turn_utilization_advantage``; p = 0: Eq. 8); under GiGPO it lowers
    both levels' rewards of that turn, as verl-agent lowers the turn sample's score and its step reward."""
    success, groups, eps = rollouts.success, rollouts.groups, rl.adv_eps
    u_hat = (rollouts.retrieval.max_utility().astype(np.float64) if rollouts.retrieval is not None
             else np.zeros(len(success)))
    turns = play_turns(rollouts)
    penalty = rl.invalid_format_penalty
    util, per_turn = adv.turn_utilization_advantage(success, groups, turns.rollout, turns.invalid, penalty, eps)
    if rl.advantage == "gigpo":
        std = rl.gigpo_norm == "std"
        episode = per_turn if std else adv.turn_utilization_advantage(success, groups, turns.rollout, turns.invalid,
                                                                      penalty, eps, std)[1]
        per_turn = adv.gigpo_advantage(episode, turns.reward - penalty * turns.invalid, turns.rollout, turns.group,
                                       turns.anchor, gamma=rl.gigpo_gamma, omega=rl.gigpo_omega, eps=eps, std=std)
    counts = np.bincount(turns.rollout, minlength=len(success))
    anchors = len(set(zip(turns.group.tolist(), turns.anchor.tolist())))
    return Rewards(success=success, util_advantage=util, u_hat=u_hat,
                   distill_reward=adv.distill_reward(success, u_hat),
                   distill_advantage=adv.distill_advantage(success, u_hat, groups, eps),
                   ndcg=np.array([e.ndcg for e in rollouts.episodes], np.float64),
                   action_advantage=np.split(per_turn, np.cumsum(counts)[:-1]),
                   anchor_group_size=len(turns.anchor) / anchors if anchors else 0.0)


def training_rows(rollouts: Rollouts, rewards: Rewards, trained: Sequence[Segment], rl: RLConfig) -> list[Row]:
    """Every generated segment of a kind in ``trained`` as a row with its advantage (query: Â_util, action: its
    turn's ``rewards.action_advantage``, rank: NDCG, distill: Â_distill), in rollout then generation order; with
    ``rl.loss_agg == "rollout-mean"`` weighted per rollout (``rl.rows.rollout_mean_weights``)."""
    per_kind = {Segment.QUERY: rewards.util_advantage, Segment.RANK: rewards.ndcg,
                Segment.DISTILL: rewards.distill_advantage}
    rows, rollout = [], []
    for i, e in enumerate(rollouts.episodes):
        turns = iter(rewards.action_advantage[i])
        for kind, reply in e.segments:
            advantage = next(turns) if kind == Segment.ACTION else per_kind[kind][i]
            if kind in trained:
                rows.append(Row(prompt_ids=reply.prompt_ids, response_ids=reply.response_ids,
                                logprobs=reply.logprobs, kind=kind, advantage=float(advantage),
                                group=e.group, truncated=reply.truncated, overlong=reply.overlong))
                rollout.append(e.rollout)
    return rollout_mean_weights(rows, rollout, rl.objective) if rl.loss_agg == "rollout-mean" else rows


# ---- learner ------------------------------------------------------------------------------------------------
def reference_params(graphdef: Any, params: Any, reference_dtype: str) -> Any:
    """π_ref's own copy of ``params`` (the update donates the train state): in the param dtype (``"param"``) or
    in the compute dtype (``"compute"``, ``RLConfig.reference_dtype``; the same log-probs at half the bytes)."""
    cast = compute_params(graphdef, params, for_gradients=False) if reference_dtype == "compute" else params
    # A cast to the dtype a leaf already has returns that very array: copy it, or the donation would free it.
    return jax.tree.map(lambda c, p: jnp.copy(c) if c is p else c, cast, params)


class Learner:
    """The device side: train state, frozen reference params, the jitted update and reference scorer."""

    def __init__(self, graphdef: Any, params: Any, cfg: ExperimentConfig, mesh: Any = None):
        self.rl = cfg.effective_rl
        self.graphdef = graphdef
        replicated = cfg.train.update_layout == "replicated"
        state = init_train_state(params, self.rl, cfg.train.seed)
        if mesh is not None:
            # On the mesh from the start: the update compiles once, for these shardings, and with several processes
            # it sees global arrays (placed by a jit: device_put cannot place an RNG key on other hosts' devices).
            shardings = NamedSharding(mesh, P()) if replicated else train_state_shardings(state, mesh)
            state = jax.jit(lambda s: s, out_shardings=shardings)(state)
        # π_ref: the initial policy, frozen. With β = 0 the KL term is zero whatever π_ref says, so neither its
        # copy of the params (a second model in memory) nor its scoring pass is paid for.
        self.ref_params = (reference_params(graphdef, state.params, self.rl.reference_dtype) if self.rl.kl_coef
                           else None)
        # ``train.offload``: what waits in host memory between the phases that read it (``parallel.offload``).
        self.offload = frozenset(cfg.train.offload)
        self.state: TrainState = self._rest(state)
        if "reference" in self.offload:
            self.ref_params = offload.place(self.ref_params, offload.HOST)
        self.mesh = mesh
        self.train_step = (make_pmap_ragged_update(graphdef, self.rl, mesh) if replicated
                           else make_ragged_update(graphdef, self.rl, self.state, mesh))
        self._batch_sharding = None if mesh is None else batch_shardings(mesh)
        self.ref_logprobs = make_logprob_fn(graphdef, self.rl, self.ref_params, mesh) if self.rl.kl_coef else None
        self.row_unit = self.rl.micro_batch_size * batch_devices(mesh)

    @property
    def params(self) -> Any:
        return self.state.params

    def _rest(self, state: TrainState) -> TrainState:
        """``state`` as it waits between updates: the AdamW moments in host memory under ``offload`` "moments"."""
        if "moments" not in self.offload:
            return state
        return dataclasses.replace(state, opt_state=offload.place(state.opt_state, offload.HOST))

    def update(self, batches: Sequence[Sequence[TrainBatch]], seconds: dict[str, float]) -> dict[str, float]:
        """One optimizer update per mini-batch (a list of micro-batches, ``rl.rows.mini_batches``); returns the mean
        metrics over updates. Two phases, as the memory plan counts them: π_ref scores every micro-batch, then the
        updates run.

        With β = 0 nothing is scored: ``ref_logp`` is set to the sampler's log-probs (finite, so the clamped k3
        term stays finite before its zero weight) and ``kl/ref`` is left out of the metrics.
        """
        start = time.perf_counter()
        put = lambda host: jax.device_put(host, self._batch_sharding)
        if self.ref_logprobs is None:
            ref_logp = [[None] * len(micro_batches) for micro_batches in batches]
        else:
            ref_params = offload.place(self.ref_params, offload.DEVICE)
            ref_logp = [[self.ref_logprobs(ref_params, put(host)) for host in micro_batches]
                        for micro_batches in batches]
            jax.block_until_ready(ref_logp)
            del ref_params  # an offloaded π_ref's device copy is freed before the update
        seconds["ref_logprobs"] = seconds.get("ref_logprobs", 0.0) + time.perf_counter() - start

        start = time.perf_counter()
        self.state = dataclasses.replace(self.state, opt_state=offload.place(self.state.opt_state, offload.DEVICE))
        totals: dict[str, float] = {}
        for micro_batches, refs in zip(batches, ref_logp):
            scored = []
            for host, ref in zip(micro_batches, refs):
                batch = put(host)
                ref = batch.old_logp if ref is None else ref
                scored.append(dataclasses.replace(batch, ref_logp=jnp.where(batch.loss_mask > 0, ref, 0.0)))
            self.state, metrics = self.train_step(self.state, scored)
            metrics = jax.device_get(metrics)
            for k, v in metrics.items():
                if k != "kl/ref" or self.ref_logprobs is not None:
                    totals[k] = totals.get(k, 0.0) + float(v)
        self.state = self._rest(self.state)
        seconds["update"] = seconds.get("update", 0.0) + time.perf_counter() - start
        return {k: v / len(batches) for k, v in totals.items()} if batches else {}


# ---- library ------------------------------------------------------------------------------------------------
def update_library(library: SkillLibrary, encoder: Any, rollouts: Rollouts, cfg: ExperimentConfig,
                   step: int) -> dict[str, float]:
    """After the update (paper Algorithm 1): EMA for all retrieved candidates (Eq. 5), then admissions.

    ``distillation="model"``: the parsed lesson of each successful rollout; ``"raw"`` (w/o Distillation): the raw
    trajectory text of each successful rollout, keyed by its task text, or with ``train.raw_skills == "all"`` of
    every rollout (a failed one stored with outcome "failure"; an episode lost to a crashed worker never).
    """
    updates = 0
    if rollouts.retrieval is not None:
        updates = library.update_utilities(rollouts.retrieval.ids, rollouts.success, step=step)
    drafts = []
    for e in rollouts.episodes:
        if cfg.spec.distillation == "model" and e.success and e.distillation is not None:
            drafts.append(e.distillation.to_draft(e.task_text, e.trajectory_text, created_step=step))
        elif (cfg.spec.distillation == "raw" and e.trajectory_text
              and (e.success or (cfg.train.raw_skills == "all" and e.error is None))):
            drafts.append(SkillDraft(strategy=e.trajectory_text, description=e.task_text, source_task=e.task_text,
                                     trajectory=e.trajectory_text, outcome="success" if e.success else "failure",
                                     created_step=step))
    evictions_before = library.evictions
    admitted = merged = 0
    if drafts:
        keys = encoder.encode([d.key_text for d in drafts])
        tasks = encoder.encode([d.source_task for d in drafts])
        for d, key, task in zip(drafts, keys, tasks):
            result = library.admit(d, key[None], task[None])
            merged += bool(result.merged)
            admitted += not result.merged
    return {"library/admitted": float(admitted), "library/merged": float(merged),
            "library/utility_updates": float(updates),
            "library/evicted_this_step": float(library.evictions - evictions_before)}


# ---- step metrics -------------------------------------------------------------------------------------------
def rollout_metrics(rollouts: Rollouts, rewards: Rewards) -> dict[str, float]:
    """The step's training-dynamics quantities (paper Fig. 3–5) and episode statistics.

    The paper's quantities and the names they are logged under:
      * Fig. 3 "selection precision", the average utility U of the library's skills (the released code's
        ``library_quality``): ``library/mean_utility``, from ``SkillLibrary.stats`` after the step's library update.
      * Fig. 3 task reward r(τ): ``reward/success``.
      * Fig. 3 "distillation positive rate", the share of rollouts whose r exceeds the retrieved skills' utility:
        ``distill/positive_rate``, the share with r − Û > 0 for Eq. 10's Û (the max pre-update U of the retrieved
        candidates; the paper's text says "the average of retrieved ones").
      * Fig. 4 task–skill similarity: ``selection/task_skill_similarity``, the cosine between a rollout's query (the
        task text without the selection stage) and its top-ranked skill's key, over rollouts that retrieved one.
      * Fig. 5 top-skill utility Û: ``distill/u_hat``, over all rollouts (0 for one that retrieved nothing).
    Not a paper quantity: ``selection/chosen_utility``, the pre-update U of the top-ranked (injected) skill, over
    rollouts that retrieved one.
    """
    eps = rollouts.episodes
    n = max(len(eps), 1)
    chosen_u, chosen_sim = [], []
    if rollouts.retrieval is not None:
        for i, e in enumerate(eps):
            if e.ranking:
                j = e.ranking[0]
                chosen_u.append(float(rollouts.retrieval.utilities[i, j]))
                chosen_sim.append(float(rollouts.retrieval.sims[i, j]))
    turns = sum(e.turns for e in eps)
    action_rows = [(k, r) for e in eps for k, r in e.segments if k == Segment.ACTION]
    ranked = [e for e in eps if len(e.candidates) >= 2]
    out = {
        "reward/success": float(rewards.success.mean()) if eps else 0.0,
        "reward/score": float(np.mean([e.score for e in eps])) if eps else 0.0,
        "reward/rerank_ndcg": float(np.mean([e.ndcg for e in ranked])) if ranked else 0.0,
        "reward/rank_parse_rate": float(np.mean([e.rank_parsed for e in ranked])) if ranked else 0.0,
        "selection/chosen_utility": float(np.mean(chosen_u)) if chosen_u else 0.0,
        "selection/task_skill_similarity": float(np.mean(chosen_sim)) if chosen_sim else 0.0,  # Fig. 4
        "distill/u_hat": float(rewards.u_hat.mean()) if eps else 0.0,  # Fig. 5
        "distill/positive_rate": float((rewards.distill_reward > 0).mean()) if eps else 0.0,  # Fig. 3
        "distill/parse_rate": float(np.mean([e.distillation is not None for e in eps if e.distill_text is not None]))
        if any(e.distill_text is not None for e in eps) else 0.0,
        "episode/turns": turns / n,
        "episode/invalid_format_rate": sum(e.invalid_turns for e in eps) / max(turns, 1),
        "episode/truncated_turns": float(sum(r.truncated for _, r in action_rows)),
        "episode/errors": float(sum(e.error is not None for e in eps)),
        "episode/anchor_group_size": rewards.anchor_group_size,  # GiGPO's step groups: > 1 when states repeat
    }
    if rollouts.retrieval is not None:
        out.update(rollouts.retrieval.metrics())
    return out


# ---- the trainer --------------------------------------------------------------------------------------------
def make_pool(cfg: ExperimentConfig) -> Any:
    spec = base.EnvSpec.of(cfg.env.name, **cfg.env.kwargs)
    return SerialPool(spec) if cfg.env.num_workers == 0 else EnvPool(spec, num_workers=cfg.env.num_workers)


class Trainer:
    """Owns one run's state: learner, policy, library, reference trajectories, task order, step counter.

    Args:
      config: the experiment.
      graphdef, params: the initial policy (``nnx.split(model)``); also the frozen reference.
      tokenizer: the policy's tokenizer (for ``ModelPolicy``).
      encoder: sentence encoder for retrieval keys (``skills.SentenceEncoder``).
      policy: replaces the model policy for rollouts (scripted tests); the learner still trains ``params``.
      pool: environment pool (default from ``config.env``).
      mesh: device mesh for the update (None: one device).
      writer: a ``metrics.MetricsWriter`` (or None).
    """

    def __init__(self, config: ExperimentConfig, graphdef: Any, params: Any, *, tokenizer: Any = None,
                 encoder: Any = None, policy: Policy | None = None, pool: Any = None, mesh: Any = None,
                 writer: Any = None, env: base.Environment | None = None):
        self.config = config
        spec = config.spec
        self.env = env or base.make_env(config.env.name, **config.env.kwargs)
        self.train_tasks = list(self.env.tasks(config.env.train_split))
        self.eval_tasks = eval_panel(config, self.env)
        self.final_eval_tasks = eval_panel(config, self.env, final=True)
        self.tasks = TaskSampler(len(self.train_tasks), config.train.seed)
        self.learner = Learner(graphdef, params, config, mesh)
        # The learner params the model policy samples from (``_sync_policy``); its own copy is on the sampling layout.
        self._policy_params = self.learner.params
        self.policy = policy or ModelPolicy(graphdef, sampling_params(self.learner.params), tokenizer,
                                            config.generation)
        self.pool = pool or make_pool(config)
        if spec.library and encoder is None:
            raise ValueError(f"variant {config.variant!r} retrieves skills: pass a sentence encoder")
        self.library = SkillLibrary(config.library) if spec.library else None
        self.references = ReferenceTrajectories()
        self.encoder = encoder
        self.writer = writer
        self.step = 0
        self.key = jax.random.key(config.train.seed)
        trained = [Segment.QUERY, Segment.ACTION]
        if self.learner.rl.lambda_rerank > 0:
            trained.append(Segment.RANK)
        if self.learner.rl.lambda_distill > 0:
            trained.append(Segment.DISTILL)
        self.trained_kinds = tuple(trained)  # a segment whose term has weight 0 is not worth a forward pass

    def context(self, on_stage: Callable[[str], None] | None = None) -> RolloutContext:
        self._sync_policy()
        return RolloutContext(config=self.config, policy=self.policy, pool=self.pool, library=self.library,
                              encoder=self.encoder, references=self.references, seed=self.config.train.seed,
                              on_stage=on_stage)

    def _sync_policy(self) -> None:
        """Points the model policy at the current params, once per update: it places them on its sampling layout
        (with several processes from a local full copy)."""
        if isinstance(self.policy, ModelPolicy) and self._policy_params is not self.learner.params:
            self.policy.params = sampling_params(self.learner.params)
            self._policy_params = self.learner.params

    def train_step(self, on_stage: Callable[[str], None] | None = None) -> dict[str, float]:
        """One step of Algorithm 1; returns its metrics (also written to the metrics writer). ``on_stage`` is told
        each stage as it starts (query, rank, action <turn>, distill, update, library)."""
        step = self.step + 1
        start = time.perf_counter()
        tell = on_stage or (lambda stage: None)
        tasks = [self.train_tasks[i] for i in self.tasks.take(self.config.train.tasks_per_step)]
        rollouts = collect_shared(self.context(on_stage), tasks, self.config.train.group_size, "train",
                                  jax.random.fold_in(self.key, step), step)
        seconds = dict(rollouts.seconds)
        rewards = rewards_and_advantages(rollouts, self.learner.rl)
        rows = training_rows(rollouts, rewards, self.trained_kinds, self.learner.rl)
        batches = mini_batches(rows, mini_batch_size=self.learner.rl.mini_batch_size,
                               row_unit=self.learner.row_unit, length_bucket=self.config.train.length_bucket,
                               seed=int(np.random.SeedSequence([self.config.train.seed, step]).generate_state(1)[0]),
                               layout=self.learner.rl.row_layout)
        tell("update")
        update_metrics = self.learner.update(batches, seconds)
        self._sync_policy()
        tell("library")
        lib_start = time.perf_counter()
        metrics = {}
        if self.library is not None:
            self.library, library_metrics = coordinator_update(  # process 0's update, on every process
                self.library, lambda library: update_library(library, self.encoder, rollouts, self.config, step))
            metrics.update(library_metrics)
            metrics.update(self.library.stats())
        for e in rollouts.episodes:  # the contrastive references for later steps' distillation prompts
            self.references.record(e.task_text, e.success, e.trajectory_text)
        seconds["library"] = time.perf_counter() - lib_start
        self.step = step
        metrics.update(rollout_metrics(rollouts, rewards))
        metrics.update(work_metrics(rollouts.work))
        metrics.update(row_stats(rows))
        metrics.update(layout_stats(batches))
        metrics.update({f"train/{k}": v for k, v in update_metrics.items()})
        metrics["train/updates"] = float(len(batches))
        metrics.update({f"seconds/{k}": v for k, v in seconds.items()})
        metrics["seconds/step"] = time.perf_counter() - start
        self.last_rollouts, self.last_rewards, self.last_rows = rollouts, rewards, rows
        if self.writer is not None:
            self.writer.write(step, metrics)
        return metrics

    def evaluate(self, tasks: Sequence[base.TaskRef] | None = None, final: bool = False) -> EvalResult:
        """Evaluates the current policy on the periodic panel, the final one (``final``) or ``tasks``
        (``evaluate.eval_panel``); never writes the library."""
        key = eval_key(self.config.train.seed)
        if tasks is None:
            tasks = self.final_eval_tasks if final else self.eval_tasks
        result = evaluate(self.context(), tasks, key, step=self.step)
        if self.writer is not None:
            self.writer.write(self.step, result.metrics())
        return result

    def run(self, steps: int | None = None, progress: bool = True) -> list[EvalResult]:
        """Trains up to ``steps`` total steps (default ``config.train.steps``) with evaluation every k steps."""
        from tqdm import tqdm

        total = self.config.train.steps if steps is None else steps
        t = self.config.train
        results = []
        if t.eval_before_train and self.step == 0:
            results.append(self.evaluate())
        bar = tqdm(range(self.step, total), initial=self.step, total=total, desc="skill1", disable=not progress)
        for _ in bar:
            m = self.train_step(on_stage=lambda stage: bar.set_description_str(f"skill1 [{stage}]"))
            bar.set_postfix(success=f"{m['reward/success']:.2f}", lib=int(m.get("library/size", 0)),
                            s=f"{m['seconds/step']:.1f}")
            if (t.eval_every and self.step % t.eval_every == 0) or self.step == total:
                results.append(self.evaluate(final=self.step == t.steps))
        return results

    def close(self) -> None:
        self.pool.close()
