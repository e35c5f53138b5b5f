"""Rollout collection: N tasks × G rollouts through the four Skill1 stages (paper Algorithm 1).

All G rollouts of a task play the same game (the env pool places them on one worker). A collection is one
``Generation`` of the policy (``train.policy``): stages A, B and D submit every rollout that needs them at once; in
stage C each rollout plays on its own, its next turn queued as soon as its environment step returns, so a long
episode never holds the others back (no per-turn barrier). The environments whose replies finished in the same
decode window are stepped together through the pool.

Stage by stage (``mode="train"``; what ``mode="eval"`` changes is in brackets):
  A. query: ``query_prompt`` → parse ``<query>``; an empty/missing query falls back to the task text (released code).
  retrieval: MiniLM embedding → ``SkillLibrary.retrieve`` with UCB [greedy]; read-only.
  B. re-rank, only for rollouts with ≥ 2 candidates: ``rerank_prompt`` → ``parse_rank`` → NDCG with the candidates'
     pre-update utilities as gains (Eq. 9). The top-ranked skill is injected into the play prompts [all K in the
     re-ranked order, or the top-ranked one: ``train.eval_injection``].
  C. play: ``play_prompt`` (W = 2 history) → ``parse_action`` → env step, up to ``max_turns``.
  D. distill [skipped]: ``distill_prompt`` with the contrastive reference trajectory of the same task (the most
     recent opposite-outcome attempt: of the same group in this step, else of earlier steps; ``train.reference_source``)
     → ``parse_distill``.

Nothing here writes to the library or the reference store: the trainer applies those writes after the update,
for training rollouts only, so evaluation can never leak into the skill bank.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from skill1_jax.agent import parsing, prompts
from skill1_jax.agent.history import EpisodeHistory, ReferenceTrajectories
from skill1_jax.config import ExperimentConfig
from skill1_jax.envs import base
from skill1_jax.rl import advantages as adv
from skill1_jax.rl.batch import Segment
from skill1_jax.skills import SkillLibrary
from skill1_jax.skills.search import Retrieval
from skill1_jax.train.policy import Generation, Policy, Reply, Request


@dataclasses.dataclass
class Episode:
    """One rollout: what it saw, chose, did and produced.

    ``slot`` is its env-pool slot in this collection; ``rollout`` its index among all the step's rollouts (attempt
    k at task i is rollout i·G + k, also when processes play shares of the tasks; ``multihost``) and ``group`` that
    task's index i. ``segments`` lists every generated reply with its kind, in generation order (the training rows).
    Play turn t (its t-th ``Segment.ACTION`` reply) acted on the observation ``history.turns[t].observation`` and
    earned the environment's reward ``turn_rewards[t]`` (r(τ) on the turn that completes the task, else 0);
    ``turn_invalid[t]`` says its reply did not parse (``parsing.parse_action``).
    """

    slot: int
    rollout: int
    task: base.TaskRef
    group: int
    task_text: str = ""
    task_type: str = ""
    observation: str = ""
    query: str = ""
    candidates: list[str] = dataclasses.field(default_factory=list)  # retrieved strategies, retrieval order
    candidate_utility: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    ranking: list[int] = dataclasses.field(default_factory=list)
    rank_parsed: bool = False
    ndcg: float = 0.0
    injected: list[str] = dataclasses.field(default_factory=list)
    history: EpisodeHistory | None = None
    success: bool = False
    score: float = 0.0
    turns: int = 0
    turn_rewards: list[float] = dataclasses.field(default_factory=list)
    turn_invalid: list[bool] = dataclasses.field(default_factory=list)
    error: str | None = None
    distill_text: str | None = None
    distillation: parsing.Distillation | None = None
    segments: list[tuple[Segment, Reply]] = dataclasses.field(default_factory=list)

    @property
    def invalid_turns(self) -> int:
        return sum(self.turn_invalid)

    @property
    def trajectory_text(self) -> str:
        return self.history.trajectory_text() if self.history is not None else ""


@dataclasses.dataclass
class Rollouts:
    """The result of one collection: episodes in slot order, the retrieval, per-stage seconds and the generation's
    work counters (``Generation.work``; summed over processes)."""

    episodes: list[Episode]
    retrieval: Retrieval | None
    seconds: dict[str, float]
    work: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def success(self) -> np.ndarray:
        return np.array([e.success for e in self.episodes], np.float64)

    @property
    def groups(self) -> np.ndarray:
        return np.array([e.group for e in self.episodes], np.int64)


@dataclasses.dataclass
class RolloutContext:
    """What collection reads: the policy, the env pool, the library (read-only) and the encoder."""

    config: ExperimentConfig
    policy: Policy
    pool: Any  # envs.pool.EnvPool or SerialPool
    library: SkillLibrary | None
    encoder: Any  # skills.SentenceEncoder-like: encode(list[str]) -> [n, 384]
    references: ReferenceTrajectories
    seed: int = 0
    on_stage: Callable[[str], None] | None = None  # told each stage as it starts (progress bars)


def _generate(ctx: RolloutContext, gen: Generation, stage: str, episodes: Sequence[Episode], texts: Sequence[str],
              kind: Segment, seconds: dict[str, float]) -> list[Reply]:
    """One stage's requests for ``episodes`` (stages A, B, D); records each reply as a segment of its episode."""
    if not episodes:
        return []
    if ctx.on_stage is not None:
        ctx.on_stage(stage)
    start = time.perf_counter()
    replies = gen.run(stage, [_request(e, t) for e, t in zip(episodes, texts)])
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
    for e, r in zip(episodes, replies):
        e.segments.append((kind, r))
    return replies


def _request(e: Episode, text: str) -> Request:
    return Request(prompt=text, rollout=e.rollout, task=e.task_text, task_id=e.task.task_id, turn=e.turns)


def reset_episodes(ctx: RolloutContext, tasks: Sequence[base.TaskRef], group_size: int, step: int, first_task: int,
                   seconds: dict[str, float]) -> tuple[list[Episode], list[list[str]]]:
    """Resets one environment slot per rollout (attempt k at task i: slot i·G + k) and opens its episode, with the
    task text as its query until stage A writes one. Returns the episodes in slot order and each one's admissible
    commands."""
    env = ctx.config.env.name
    slots = [(t, base.episode_seed(ctx.seed + step, t.task_id, k)) for t in tasks for k in range(group_size)]
    start = time.perf_counter()
    resets = ctx.pool.reset(slots)
    seconds["env"] = time.perf_counter() - start
    episodes = []
    for slot, ((task, _), (obs, info)) in enumerate(zip(slots, resets)):
        e = Episode(slot=slot, rollout=first_task * group_size + slot, task=task,
                    group=first_task + slot // group_size, task_text=info.get(base.TASK, ""),
                    task_type=info.get(base.TASK_TYPE, ""), observation=obs, error=info.get(base.ERROR))
        e.history = EpisodeHistory(env, e.task_text)
        e.query = e.task_text
        episodes.append(e)
    return episodes, [info.get(base.ADMISSIBLE, []) for _, info in resets]


def query_stage(ctx: RolloutContext, gen: Generation, episodes: Sequence[Episode],
                seconds: dict[str, float]) -> None:
    """Stage A (paper Sec. 3, Algorithm 1): every rollout writes its retrieval query; an empty or missing
    ``<query>`` falls back to the task text."""
    env = ctx.config.env.name
    replies = _generate(ctx, gen, "query", episodes,
                        [prompts.query_prompt(env, e.task_text, e.observation) for e in episodes], Segment.QUERY,
                        seconds)
    for e, r in zip(episodes, replies):
        e.query = parsing.parse_query(r.text) or e.task_text


def retrieve(ctx: RolloutContext, episodes: Sequence[Episode], mode: str, seconds: dict[str, float]) -> Retrieval:
    """Retrieval between stages A and B: each query's embedding against the library, UCB in training and greedy at
    evaluation; read-only. Sets each episode's candidates (retrieval order, also its ranking until stage B) and their
    pre-update utilities."""
    start = time.perf_counter()
    embeddings = ctx.encoder.encode([e.query for e in episodes])
    retrieval = ctx.library.retrieve(embeddings, mode="ucb" if mode == "train" else "greedy")
    strategies = ctx.library.strategies(retrieval.ids)
    seconds["retrieval"] = time.perf_counter() - start
    for e, cands, utils, valid in zip(episodes, strategies, retrieval.utilities, retrieval.valid):
        e.candidates = list(cands)
        e.candidate_utility = np.asarray(utils[valid], np.float64)
        e.ranking = list(range(len(e.candidates)))
    return retrieval


def rerank_stage(ctx: RolloutContext, gen: Generation, episodes: Sequence[Episode],
                 seconds: dict[str, float]) -> None:
    """Stage B (paper Sec. 3, Algorithm 1): every rollout with ≥ 2 candidates ranks them; the parsed ranking's NDCG
    with the candidates' pre-update utilities as gains is its re-rank reward (Eq. 9)."""
    env = ctx.config.env.name
    ranked = [e for e in episodes if len(e.candidates) >= 2]
    replies = _generate(ctx, gen, "rank", ranked,
                        [prompts.rerank_prompt(env, e.task_text, e.observation, e.candidates) for e in ranked],
                        Segment.RANK, seconds)
    for e, r in zip(ranked, replies):
        e.ranking, e.rank_parsed = parsing.parse_rank(r.text, len(e.candidates))
        e.ndcg = adv.ndcg(e.ranking if e.rank_parsed else None, e.candidate_utility)


def inject_skills(ctx: RolloutContext, episodes: Sequence[Episode], mode: str) -> None:
    """The skills each rollout plays with, in its ranking's order: the top-1 in training; at evaluation all K (the
    released code) or the top-1 (as the paper describes; ``train.eval_injection``)."""
    every = mode == "eval" and ctx.config.train.eval_injection == "all"
    for e in episodes:
        ordered = [e.candidates[j] for j in e.ranking]
        e.injected = ordered if every else ordered[:1]


def play_stage(ctx: RolloutContext, gen: Generation, episodes: Sequence[Episode], admissible: Sequence[list[str]],
               seconds: dict[str, float]) -> None:
    """Stage C (paper Sec. 3, Algorithm 1): each rollout plays up to ``env.max_turns`` turns on its own. Its first
    turn is queued with everyone's; whenever replies finish, their parsed actions step those environments together
    through the pool and each rollout still playing queues its next turn at once. An episode ends when its
    environment says so; the turn limit ends it as a failure."""
    cfg = ctx.config
    env = cfg.env.name
    current = {e.slot: e.observation for e in episodes}
    allowed = {e.slot: a for e, a in zip(episodes, admissible)}
    by_rollout = {e.rollout: e for e in episodes}
    deepest = -1  # progress is told the deepest turn queued so far

    def queue(live: Sequence[Episode]) -> None:
        nonlocal deepest
        if live and ctx.on_stage is not None and max(e.turns for e in live) > deepest:
            deepest = max(e.turns for e in live)
            ctx.on_stage(f"action {deepest + 1}")
        gen.submit("action", [_request(e, prompts.play_prompt(env, e.task_text, current[e.slot], allowed[e.slot],
                                                              e.history.turns, e.injected)) for e in live])

    queue([e for e in episodes if e.error is None])
    seconds.setdefault("action", 0.0)
    while gen.busy:
        start = time.perf_counter()
        finished = gen.step()
        seconds["action"] += time.perf_counter() - start
        actions = {}
        for request, reply in finished:
            e = by_rollout[request.rollout]
            e.segments.append((Segment.ACTION, reply))
            parsed = parsing.parse_action(reply.text, env)
            e.turn_invalid.append(not parsed.valid)
            e.history.record(current[e.slot], parsed.action)
            actions[e.slot] = parsed.action
        if not actions:
            continue
        start = time.perf_counter()
        results = ctx.pool.step(actions)
        seconds["env"] += time.perf_counter() - start
        playing = []
        for slot in actions:
            e = episodes[slot]
            obs, reward, finished_episode, info = results[slot]
            e.turns += 1
            e.turn_rewards.append(float(reward))
            current[slot], allowed[slot] = obs, info.get(base.ADMISSIBLE, [])
            e.success = e.success or bool(info.get(base.WON))
            e.score = float(info.get(base.SCORE, float(e.success)))
            if info.get(base.ERROR):
                e.error = info[base.ERROR]
            if not finished_episode and e.turns < cfg.env.max_turns:  # the turn limit ends it as a failure
                playing.append(e)
        queue(playing)


def distill_stage(ctx: RolloutContext, gen: Generation, episodes: Sequence[Episode],
                  seconds: dict[str, float]) -> None:
    """Stage D (paper Sec. 3, Algorithm 1): every rollout distills its trajectory into a lesson,
    contrasted with the most recent opposite-outcome attempt at the same task (``ReferenceTrajectories.reference_for``):
    with ``train.reference_source == "current_step"`` the last such rollout of its own group in this step (episodes
    are in rollout order), else the store of earlier steps. Admission is the trainer's, after the update, for
    successful rollouts only."""
    env = ctx.config.env.name
    groups: dict[int, list[tuple[bool, str]]] = {}
    if ctx.config.train.reference_source == "current_step":
        for e in episodes:
            groups.setdefault(e.group, []).append((e.success, e.trajectory_text))
    texts = [prompts.distill_prompt(env, e.task_text, e.success, e.trajectory_text,
                                    ctx.references.reference_for(e.task_text, e.success, groups.get(e.group, ())))
             for e in episodes]
    replies = _generate(ctx, gen, "distill", episodes, texts, Segment.DISTILL, seconds)
    for e, r in zip(episodes, replies):
        e.distill_text = r.text
        e.distillation = parsing.parse_distill(r.text, e.success)


def collect(ctx: RolloutContext, tasks: Sequence[base.TaskRef], group_size: int, mode: str, rng: jax.Array,
            step: int, first_task: int = 0) -> Rollouts:
    """Plays ``tasks`` × ``group_size`` rollouts through stages A–D (see module docstring).

    Args:
      ctx: policy, pool, library, encoder, reference trajectories.
      tasks: the N tasks; rollout ``i·G + k`` is the k-th attempt at task i, group id i.
      group_size: G.
      mode: "train" or "eval".
      rng: key for all sampling of this collection: a reply's tokens depend on it and on the reply's (stage,
        rollout, turn) only.
      step: training step (seeds the episodes; recorded nowhere else).
      first_task: index of ``tasks[0]`` among the step's tasks when this process plays only a share of them
        (``multihost``): rollouts and groups are numbered from there.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    spec = ctx.config.spec
    seconds: dict[str, float] = {}
    episodes, admissible = reset_episodes(ctx, tasks, group_size, step, first_task, seconds)
    gen = ctx.policy.open(mode, rng, len(episodes))
    retrieval = None
    if spec.library and ctx.library is not None:
        if spec.selection:
            query_stage(ctx, gen, episodes, seconds)
        retrieval = retrieve(ctx, episodes, mode, seconds)
        if spec.selection:
            rerank_stage(ctx, gen, episodes, seconds)
        inject_skills(ctx, episodes, mode)
    play_stage(ctx, gen, episodes, admissible, seconds)
    if mode == "train" and spec.distillation == "model":
        distill_stage(ctx, gen, episodes, seconds)
    return Rollouts(episodes=episodes, retrieval=retrieval, seconds=seconds, work=gen.work())


def work_metrics(work: dict[str, int]) -> dict[str, float]:
    """A collection's generation work as metrics: decode row-steps computed and the tokens they produced, prompt
    tokens prefilled (padded) and requested, and the two efficiency ratios of ``benchmarks/rollout.py``."""
    if not work:
        return {}
    out = {f"rollout/{k}": float(v) for k, v in work.items()}
    if work["decode_row_steps"]:
        out["rollout/useful_row_step_fraction"] = work["decode_tokens"] / work["decode_row_steps"]
    if work["prefill_requested"]:
        out["rollout/prefill_computed_over_requested"] = work["prefill_computed"] / work["prefill_requested"]
    return out
