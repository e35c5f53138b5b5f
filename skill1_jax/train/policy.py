"""The policy as the rollout collector sees it: text prompts in, token-exact replies out, as they finish.

``Policy.open(mode, rng, rollouts)`` starts the generation of one collection (``Generation``): requests of any stage
are ``submit``-ted, and ``step`` hands back the replies that have finished, so a rollout's next play turn can be
queued as soon as its environment step returns, with no barrier across rollouts (``train.rollout``). Each ``Reply``
carries the exact prompt and response token ids and the sampler's raw-policy log-probs, which become training rows
unchanged (never re-tokenized from the decoded text).

* ``ModelPolicy`` runs a collection through one continuous-batching ``Engine`` (``sampling.engine``) over the params
  of this update: a slot per rollout (fewer under a KV budget), refilled at decode-window boundaries, identical
  prompts prefilled once. Token i of a request is drawn with the collection key folded with (stage, rollout, turn)
  and i, so a reply never depends on its slot, its neighbours or when it was queued.
* ``ScriptedPolicy`` answers with strings chosen by a function (tests, expert demonstrations): the reply text is
  tokenized once, so its rows are just as token-exact; log-probs are a constant. Its ``step`` returns everything
  submitted since the last one, so a play stage runs turn by turn.

Stop rules per stage: ``</query>``, ``</rank>``, ``</action>``; the distillation reply stops only at EOS (or its
length limit), so a fenced ```` ```json ```` block is never cut at its opening fence and the whole JSON survives.

Prompt limit (``GenerationConfig.max_prompt_tokens``; paper Appendix C and the released scripts: 16,384): a prompt is
never truncated. Over the limit, ``overlong_prompt="error"`` stops with a message naming the prompt (the release's
``truncation=error``); ``"drop"`` answers it from the whole prompt and flags the reply ``overlong``, so its row is left
out of the update and counted (``rl.rows``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx

from skill1_jax.config import GenerationConfig
from skill1_jax.model.tokenizer import encode_prompts, eos_token_ids
from skill1_jax.sampling import SamplingConfig
from skill1_jax.sampling.engine import Engine, EngineConfig, EngineRequest
from skill1_jax.sampling.layout import SamplingLayout

STAGES = ("query", "rank", "action", "distill")
STOP_STRINGS = {"query": ("</query>",), "rank": ("</rank>",), "action": ("</action>",), "distill": ()}
# A collection's engine starts with this many cache slots per row (without a prompt limit) and doubles them when a
# longer request arrives.
INITIAL_CACHE = 512


@dataclasses.dataclass(frozen=True)
class Reply:
    """One generated segment.

    Attributes:
      text: the decoded reply (what the parsers read).
      prompt_ids: token ids the policy was prompted with.
      response_ids: token ids it produced (stop string / EOS included).
      logprobs: raw-policy log-probs of ``response_ids`` (π_old).
      truncated: the reply hit the stage's token limit.
      overlong: the prompt is longer than ``GenerationConfig.max_prompt_tokens`` (``overlong_prompt="drop"``).
    """

    text: str
    prompt_ids: np.ndarray
    response_ids: np.ndarray
    logprobs: np.ndarray
    truncated: bool
    overlong: bool = False


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt plus who asks (the scripted policy uses it; the model ignores it)."""

    prompt: str
    rollout: int
    task: str = ""
    task_id: str = ""
    turn: int = 0


class Generation:
    """The generation of one collection: ``submit`` requests of any stage, ``step`` until not ``busy``."""

    def submit(self, stage: str, requests: Sequence[Request]) -> None:
        raise NotImplementedError

    def step(self) -> list[tuple[Request, Reply]]:
        """Generates for a while and returns the requests that finished meanwhile with their replies (possibly
        none while others are still being generated)."""
        raise NotImplementedError

    @property
    def busy(self) -> bool:
        """Some submitted request has not been handed back yet."""
        raise NotImplementedError

    def work(self) -> dict[str, int]:
        """What generating has cost so far, as counters (``sampling.engine.EngineStats``); none for a script."""
        return {}

    def run(self, stage: str, requests: Sequence[Request]) -> list[Reply]:
        """Submits ``requests`` and steps until they are all answered; replies in request order. Requests submitted
        before and not yet handed back are answered too, but not returned."""
        self.submit(stage, requests)
        replies: dict[int, Reply] = {}
        while self.busy and len(replies) < len(requests):
            replies.update((id(request), reply) for request, reply in self.step())
        return [replies[id(r)] for r in requests]


class Policy:
    """What the collector samples from; subclasses implement ``open``."""

    def open(self, mode: str, rng: jax.Array, rollouts: int) -> Generation:
        """Starts the generation of one collection of ``rollouts`` rollouts; ``mode`` is "train" (training
        temperature) or "eval" (evaluation temperature), ``rng`` the collection's key."""
        raise NotImplementedError

    def generate(self, stage: str, requests: Sequence[Request], mode: str, rng: jax.Array) -> list[Reply]:
        """Replies to every request of ``stage`` ("query", "rank", "action", "distill"), in order: a collection of
        just these requests."""
        return self.open(mode, rng, len(requests)).run(stage, requests)


def stage_limit(gen: GenerationConfig, stage: str) -> int:
    return {"query": gen.max_query_tokens, "rank": gen.max_rank_tokens, "action": gen.max_action_tokens,
            "distill": gen.max_distill_tokens}[stage]


def longest_reply(gen: GenerationConfig) -> int:
    """The largest reply limit of any stage: the engine's reply buffer width."""
    return max(stage_limit(gen, stage) for stage in STAGES)


def overlong_prompts(gen: GenerationConfig, stage: str, requests: Sequence[Request],
                     prompt_ids: Sequence[Sequence[int]]) -> list[bool]:
    """Which prompts are longer than ``gen.max_prompt_tokens`` (none when it is 0); under ``overlong_prompt="error"``
    the first such prompt raises a ValueError naming its stage, task, rollout, turn and length."""
    limit = gen.max_prompt_tokens
    over = [bool(limit) and len(ids) > limit for ids in prompt_ids]
    if gen.overlong_prompt == "error" and any(over):
        request, n = next((r, len(ids)) for r, ids, o in zip(requests, prompt_ids, over) if o)
        turn = f", turn {request.turn + 1}" if stage == "action" else ""
        raise ValueError(f"the {stage} prompt of rollout {request.rollout} (task {request.task_id!r}{turn}) has {n} "
                         f"tokens, over generation.max_prompt_tokens={limit}; prompts are never truncated: raise the "
                         "limit, or set generation.overlong_prompt=drop to leave such rows out of training")
    return over


def engine_config(generation: GenerationConfig, rollouts: int) -> EngineConfig:
    """The engine of a collection of ``rollouts``: a slot per rollout, each with ``request_cache_tokens`` of cache
    (default ``max_prompt_tokens`` + the longest reply limit, or ``INITIAL_CACHE``); under ``kv_cache_tokens`` as
    many slots as the budget holds at that length, in whole row tiles."""
    g = generation
    cache = g.request_cache_tokens or (g.max_prompt_tokens + longest_reply(g) if g.max_prompt_tokens else INITIAL_CACHE)
    tile = EngineConfig.row_tile
    slots = -(-max(rollouts, 1) // tile) * tile
    if g.kv_cache_tokens:
        fitting = g.kv_cache_tokens // cache // tile * tile
        if not fitting:
            raise ValueError(f"generation.kv_cache_tokens={g.kv_cache_tokens} holds no {tile} requests of {cache} "
                             f"cache slots (generation.request_cache_tokens, or max_prompt_tokens + the longest "
                             f"reply limit); raise it to at least {tile * cache}")
        slots = min(slots, fitting)
    return EngineConfig(slots=slots, cache_length=cache)


class ModelPolicy(Policy):
    """Samples from ``params`` on the sampling layout (``generation.sampling_layout``): setting ``policy.params``
    (the trainer does after each update) places them there once; under ``"train"`` no copy is made.

    Args:
      graphdef: the model graph (``nnx.split``).
      params: the current params (nnx State), possibly sharded.
      tokenizer: the policy's tokenizer (byte-level BPE with ChatML tokens).
      generation: per-stage limits and temperatures, sampling layout, KV budget.
    """

    def __init__(self, graphdef: Any, params: Any, tokenizer: Any, generation: GenerationConfig):
        self.graphdef, self.tokenizer, self.generation = graphdef, tokenizer, generation
        self.layout = SamplingLayout(generation.sampling_layout, nnx.merge(graphdef, params).cfg.num_kv_heads,
                                     generation.sampling_tensor_parallel)
        self.params = params
        self.eos_ids = eos_token_ids(tokenizer)

    @property
    def params(self) -> Any:
        """The params the sampler reads, on the sampling layout."""
        return self._params

    @params.setter
    def params(self, params: Any) -> None:
        self._params = None  # the previous copy is freed before the new one is made, not after
        self._params = self.layout.place(self.graphdef, params)

    def open(self, mode: str, rng: jax.Array, rollouts: int) -> Generation:
        g = self.generation
        sampling = SamplingConfig(max_new_tokens=longest_reply(g),
                                  temperature=g.temperature if mode == "train" else g.eval_temperature,
                                  top_p=g.top_p, top_k=g.top_k)
        engine = Engine(self.graphdef, self.params, sampling, rng, engine_config(g, rollouts),
                        tokenizer=self.tokenizer, stop_sets=[STOP_STRINGS[s] for s in STAGES], eos_ids=self.eos_ids)
        return EngineGeneration(engine, self.tokenizer, g)


class EngineGeneration(Generation):
    """``ModelPolicy``'s generation: requests become ``EngineRequest``s named (stage, rollout, turn)."""

    def __init__(self, engine: Engine, tokenizer: Any, generation: GenerationConfig):
        self.engine, self.tokenizer, self.generation = engine, tokenizer, generation

    def submit(self, stage: str, requests: Sequence[Request]) -> None:
        if not requests:
            return
        prompt_ids = encode_prompts(self.tokenizer, [r.prompt for r in requests])
        overlong = overlong_prompts(self.generation, stage, requests, prompt_ids)
        index, limit = STAGES.index(stage), stage_limit(self.generation, stage)
        # A rollout's play turns share their head (system prompt, injected skill, task: paper Appendix G's template
        # puts the turn history after them), which the engine then prefills once.
        key = (lambda r: r.rollout) if stage == "action" else (lambda r: None)
        self.engine.submit([EngineRequest(prompt=tuple(ids), identity=(index, r.rollout, r.turn), max_new_tokens=limit,
                                          stop_set=index, tag=(r, over), prefix_key=key(r))
                            for r, ids, over in zip(requests, prompt_ids, overlong)])

    @property
    def busy(self) -> bool:
        return self.engine.busy

    def work(self) -> dict[str, int]:
        return dataclasses.asdict(self.engine.stats)

    def step(self) -> list[tuple[Request, Reply]]:
        out = []
        for c in self.engine.step():
            request, overlong = c.request.tag
            out.append((request, Reply(text=c.text, prompt_ids=np.asarray(c.request.prompt, np.int32),
                                       response_ids=c.tokens.astype(np.int32), logprobs=c.logprobs.astype(np.float32),
                                       truncated=c.finish_reason == "length", overlong=overlong)))
        return out


ScriptFn = Callable[[str, Request], str]


class ScriptedPolicy(Policy):
    """Replies ``script(stage, request)``; each reply is tokenized once and ends with ``<|im_end|>``.

    A reply longer than the stage limit is cut to the limit and flagged truncated, as the sampler would.
    ``calls`` records (stage, number of requests) per ``submit``, for tests of the batching contract.
    """

    def __init__(self, script: ScriptFn, tokenizer: Any, generation: GenerationConfig, logprob: float = -1.0):
        self.script, self.tokenizer, self.generation, self.logprob = script, tokenizer, generation, logprob
        self.eos = eos_token_ids(tokenizer)[0]
        self.calls: list[tuple[str, int]] = []

    def open(self, mode: str, rng: jax.Array, rollouts: int) -> Generation:
        del mode, rng, rollouts
        return ScriptedGeneration(self)

    def replies(self, stage: str, requests: Sequence[Request]) -> list[Reply]:
        """The scripted replies to ``requests`` (recorded in ``calls``)."""
        self.calls.append((stage, len(requests)))
        prompt_ids = encode_prompts(self.tokenizer, [r.prompt for r in requests])
        overlong = overlong_prompts(self.generation, stage, requests, prompt_ids)
        limit = stage_limit(self.generation, stage)
        replies = []
        for ids, request, over in zip(prompt_ids, requests, overlong):
            text = self.script(stage, request)
            response = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.eos]
            truncated = len(response) > limit
            response = response[:limit]
            if truncated:
                text = self.tokenizer.decode(response, skip_special_tokens=True)
            replies.append(Reply(text=text, prompt_ids=np.asarray(ids, np.int32),
                                 response_ids=np.asarray(response, np.int32),
                                 logprobs=np.full(len(response), self.logprob, np.float32), truncated=truncated,
                                 overlong=over))
        return replies


class ScriptedGeneration(Generation):
    """``ScriptedPolicy``'s generation: each ``step`` returns everything submitted since the previous one."""

    def __init__(self, policy: ScriptedPolicy):
        self.policy = policy
        self.pending: list[tuple[Request, Reply]] = []

    def submit(self, stage: str, requests: Sequence[Request]) -> None:
        if requests:
            self.pending.extend(zip(requests, self.policy.replies(stage, requests)))

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def step(self) -> list[tuple[Request, Reply]]:
        out, self.pending = self.pending, []
        return out
