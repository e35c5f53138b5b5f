"""The policy as the rollout collector sees it: batched text prompts in, token-exact replies out.

``Policy.generate(stage, prompts, mode, rng)`` answers every prompt of one stage in **one** call (one batched sampler
call per stage / per play turn). Each ``Reply`` carries the exact prompt and response token ids and the sampler's
raw-policy log-probs, which become training rows unchanged (never re-tokenized from the decoded text).

* ``ModelPolicy`` samples from the Qwen2 params with one ``Sampler`` per stage (its stop string).
* ``ScriptedPolicy`` answers with strings chosen by a function (tests, expert demonstrations): the reply text is
  tokenized once, so its rows are just as token-exact; log-probs are a constant.

Stop rules per stage: ``</query>``, ``</rank>``, ``</action>``; the distillation reply stops only at EOS (or its
length limit), so a fenced ```` ```json ```` block is never cut at its opening fence and the whole JSON survives.

Prompt limit (``GenerationConfig.max_prompt_tokens``; paper Appendix C and the released scripts: 16,384): a prompt is
never truncated. Over the limit, ``overlong_prompt="error"`` stops with a message naming the prompt (the release's
``truncation=error``); ``"drop"`` answers it from the whole prompt and flags the reply ``overlong``, so its row is left
out of the update and counted (``rl.rows``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np
from flax import nnx

from skill1_jax.config import GenerationConfig
from skill1_jax.model.tokenizer import encode_prompts, eos_token_ids
from skill1_jax.sampling import Sampler, SamplingConfig
from skill1_jax.sampling.layout import SamplingLayout

STAGES = ("query", "rank", "action", "distill")
STOP_STRINGS = {"query": ("</query>",), "rank": ("</rank>",), "action": ("</action>",), "distill": ()}


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


class Policy(Protocol):
    def generate(self, stage: str, requests: Sequence[Request], mode: str, rng: jax.Array) -> list[Reply]:
        """Replies to every request of ``stage`` ("query", "rank", "action", "distill"); ``mode`` is "train"
        (training temperature) or "eval" (evaluation temperature)."""


def stage_limit(gen: GenerationConfig, stage: str) -> int:
    return {"query": gen.max_query_tokens, "rank": gen.max_rank_tokens, "action": gen.max_action_tokens,
            "distill": gen.max_distill_tokens}[stage]


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


class ModelPolicy:
    """Samples from ``params`` on the sampling layout (``generation.sampling_layout``): setting ``policy.params``
    (the trainer does after each update) places them there once; under ``"train"`` no copy is made.

    Args:
      graphdef: the model graph (``nnx.split``).
      params: the current params (nnx State), possibly sharded.
      tokenizer: the policy's tokenizer (byte-level BPE with ChatML tokens).
      vocab_size: the model's vocabulary size.
      generation: per-stage limits and temperatures, sampling layout, KV budget.
    """

    def __init__(self, graphdef: Any, params: Any, tokenizer: Any, vocab_size: int, generation: GenerationConfig):
        self.graphdef, self.tokenizer, self.generation = graphdef, tokenizer, generation
        num_kv_heads = nnx.merge(graphdef, params).cfg.num_kv_heads
        self.layout = SamplingLayout(generation.sampling_layout, num_kv_heads, generation.sampling_tensor_parallel)
        self.params = params
        eos = eos_token_ids(tokenizer)
        self.samplers = {stage: Sampler(vocab_size, tokenizer, stop_strings=STOP_STRINGS[stage], eos_ids=eos,
                                        kv_cache_tokens=generation.kv_cache_tokens)
                         for stage in STAGES}

    @property
    def params(self) -> Any:
        """The params the sampler reads, on the sampling layout."""
        return self._params

    @params.setter
    def params(self, params: Any) -> None:
        self._params = None  # the previous copy is freed before the new one is made, not after
        self._params = self.layout.place(self.graphdef, params)

    def sampling_config(self, stage: str, mode: str) -> SamplingConfig:
        g = self.generation
        temperature = g.temperature if mode == "train" else g.eval_temperature
        return SamplingConfig(max_new_tokens=stage_limit(g, stage), temperature=temperature, top_p=g.top_p,
                              top_k=g.top_k)

    def generate(self, stage: str, requests: Sequence[Request], mode: str, rng: jax.Array) -> list[Reply]:
        if not requests:
            return []
        prompt_ids = encode_prompts(self.tokenizer, [r.prompt for r in requests])
        overlong = overlong_prompts(self.generation, stage, requests, prompt_ids)
        out = self.samplers[stage].generate(self.graphdef, self.params, prompt_ids,
                                            self.sampling_config(stage, mode), rng)
        replies = []
        for i, ids in enumerate(prompt_ids):
            n = int(out.lengths[i])
            replies.append(Reply(text=out.text[i], prompt_ids=np.asarray(ids, np.int32),
                                 response_ids=out.tokens[i, :n].astype(np.int32),
                                 logprobs=out.logprobs[i, :n].astype(np.float32),
                                 truncated=out.finish_reason[i] == "length", overlong=overlong[i]))
        return replies


ScriptFn = Callable[[str, Request], str]


class ScriptedPolicy:
    """Replies ``script(stage, request)``; each reply is tokenized once and ends with ``<|im_end|>``.

    A reply longer than the stage limit is cut to the limit and flagged truncated, as the sampler would.
    ``calls`` records (stage, number of requests) per ``generate`` call, for tests of the batching contract.
    """

    def __init__(self, script: ScriptFn, tokenizer: Any, generation: GenerationConfig, logprob: float = -1.0):
        self.script, self.tokenizer, self.generation, self.logprob = script, tokenizer, generation, logprob
        self.eos = eos_token_ids(tokenizer)[0]
        self.calls: list[tuple[str, int]] = []

    def generate(self, stage: str, requests: Sequence[Request], mode: str, rng: jax.Array) -> list[Reply]:
        del mode, rng
        self.calls.append((stage, len(requests)))
        if not requests:
            return []
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
