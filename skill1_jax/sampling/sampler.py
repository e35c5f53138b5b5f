"""Batched sampling with a KV cache: one jitted prefill, then jitted ``lax.while_loop`` decode segments.

Axis letters: B batch (bucketed), P prompt length (bucketed), N max new tokens, W cache slots of a decode window
(P < W ≤ P + N − 1), V vocabulary, Q stop-automaton states, E end-of-sequence ids.

Flow of ``Sampler.generate``: prompts are left-padded to a prompt bucket and the batch is filled with dummy rows
(done from the start) up to a batch bucket, then moved to the device explicitly. ``_prefill`` slices each decoder
block's weights out of the stacked params (once per generation), runs the prompt through the model into a cache of
exactly P slots and samples the first token. ``_decode`` then runs one segment per decode window
(``Buckets.decode_windows``: P + chunk, P + 2·chunk, ...) on those weights: it grows the cache to W slots and runs
the while loop until the window is full, every row is done or N tokens exist, so each step attends over the filled
part of the cache rounded up to the window, never over the whole P + N allocation. Between segments the host reads
the rows' done flags (one small explicit fetch) and stops early; no Python runs between the tokens of a segment.
Rows that finish earlier still ride along in the batched matmuls (static shapes do not allow dropping them).
Finally the state is fetched explicitly and each row is cut after its first stop string on the host
(``stops.StopMatcher``).

Log-probs: ``logprobs`` is the log-softmax of logits / temperature (no top-k/top-p; temperature 1 when greedy) at
the sampled token: exactly what a learner recomputes as π_θ from the same params at ``RLConfig.temperature``, so
it is the PPO/GRPO π_old of rollouts sampled without truncation (the Skill1 training setting: temperature 1;
``cpu_tiny`` samples and trains at 0.7). ``behavior_logprobs`` is the log-prob under the distribution actually
sampled from (also truncated by top-k, top-p; 0 for greedy); it differs from ``logprobs`` whenever truncation is
active.

Randomness: token i of row r uses ``fold_in(fold_in(rng, r), i)``, r the row's index in the whole ``generate`` call,
so rows have independent streams, the same rng reproduces the same samples, and a call split into sub-batches by its
KV budget (``kv_cache_tokens``) draws what the unsplit call draws.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from skill1_jax.model.qwen2 import CACHE_AXES, KVCache, positions_from_mask
from skill1_jax.parallel.sharding import activation_sharding, constrain, logical_sharding
from skill1_jax.sampling.buckets import Buckets
from skill1_jax.sampling.logits import SamplingConfig, sample_logits
from skill1_jax.sampling.stops import QWEN_EOS_IDS, StopMatcher

Array = jax.Array

# Finish codes on device; FINISH_REASONS names them on the host. Dummy rows keep code 0.
_RUNNING, _EOS, _STOP, _LENGTH = 0, 1, 2, 3
FINISH_REASONS = ("none", "eos", "stop", "length")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    """Everything the decode loop carries. Per-row arrays are [B] unless noted."""

    cache: KVCache
    tokens: Array  # [B, N] int32, 0 where nothing was generated
    logprobs: Array  # [B, N] float32, policy log-prob of each token (at the sampling temperature)
    behavior_logprobs: Array  # [B, N] float32, sampling-distribution log-prob
    last: Array  # int32, the latest token (the next decode input)
    positions: Array  # int32, position id of ``last``
    stop_state: Array  # int32, stop-automaton state
    done: Array  # bool
    finish: Array  # int32 finish code
    lengths: Array  # int32, tokens generated
    step: Array  # int32 scalar, tokens generated so far by the loop
    rng: Array  # key
    first_row: Array  # int32 scalar, the stage-wide index of row 0 (its sampling key; see ``Sampler.generate``)
    # Each decoder block's weights in the compute dtype (``Qwen2.layer_weights``): sliced out of the stacked
    # params by the prefill, read by every decode segment, dropped when decoding ends. Not carried by the loop.
    layers: tuple[dict[str, Array], ...] = ()


@dataclasses.dataclass
class SampleResult:
    """Generated continuations, host-side, in the caller's row order.

    Attributes:
      tokens: [B, N] int32 generated ids; 0 past ``lengths``.
      logprobs: [B, N] float32 policy log-probs at the sampling temperature (see module docstring); 0 where
        ``mask`` is False.
      behavior_logprobs: [B, N] float32 log-probs under the sampling distribution; 0 where ``mask`` is False.
      mask: [B, N] bool, True for tokens that count (up to and including EOS or the stop string's last token).
      lengths: [B] int32, number of True entries of ``mask`` per row.
      text: decoded text per row (ends with the stop string when finish_reason is "stop"; EOS is not included;
        empty strings when no tokenizer was given).
      finish_reason: "eos", "stop" or "length" per row.
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    behavior_logprobs: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    text: list[str]
    finish_reason: list[str]


# ---- on-device pieces ---------------------------------------------------------------------------------------

def _constrain_cache(cache: KVCache) -> KVCache:
    """Places every layer's cache by the ``CACHE_AXES`` rule (a no-op outside an activation-sharding context)."""
    return dataclasses.replace(cache, k=tuple(constrain(k, CACHE_AXES) for k in cache.k),
                               v=tuple(constrain(v, CACHE_AXES) for v in cache.v))


def finish_code(tok: Array, stop_state: Array, produced: Array, limit: Array, eos_ids: Array) -> tuple[Array, Array]:
    """(ended, finish code) of rows whose latest token is ``tok``, with their stop automaton now in ``stop_state``
    (< 0: a stop string completed) and ``produced`` tokens generated of at most ``limit``: EOS first, then the stop
    string, then the limit. Shared by the static sampler and the rollout engine."""
    hit_eos = jnp.any(tok[:, None] == eos_ids[None, :], axis=-1)
    hit_stop = ~hit_eos & (stop_state < 0)
    at_limit = produced >= limit
    code = jnp.where(hit_eos, _EOS, jnp.where(hit_stop, _STOP, jnp.where(at_limit, _LENGTH, _RUNNING)))
    return hit_eos | hit_stop | at_limit, code


def _advance(state: DecodeState, logits: Array, stop_table: Array, eos_ids: Array, cfg: SamplingConfig) -> DecodeState:
    """Samples the next token of every row from ``logits`` [B, V] and records it at ``state.step``."""
    active = ~state.done
    rows = state.first_row + jnp.arange(logits.shape[0])
    tok, policy, behavior = sample_logits(logits, state.rng, rows, state.step, cfg, active)
    tok = jnp.where(active, tok, 0)

    def write(buf, value):
        return jax.lax.dynamic_update_slice(buf, jnp.where(active, value, 0).astype(buf.dtype)[:, None],
                                            (0, state.step))

    stop_state = jnp.where(active, stop_table[state.stop_state, tok], state.stop_state)
    ended, code = finish_code(tok, stop_state, state.step + 1, cfg.max_new_tokens, eos_ids)
    return dataclasses.replace(
        state,
        tokens=write(state.tokens, tok), logprobs=write(state.logprobs, policy),
        behavior_logprobs=write(state.behavior_logprobs, behavior),
        last=tok, positions=state.positions + 1, stop_state=stop_state,
        done=state.done | (active & ended),
        finish=jnp.where(active, code, state.finish), lengths=state.lengths + active.astype(jnp.int32),
        step=state.step + 1)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefill(graphdef: Any, params: Any, tokens: Array, mask: Array, done: Array, stop_table: Array,
             eos_ids: Array, rng: Array, first_row: Array, *, cfg: SamplingConfig) -> DecodeState:
    """Runs left-padded prompts [B, P] through the model into a fresh P-slot cache; samples token 1."""
    model = nnx.merge(graphdef, params)
    b, p = tokens.shape
    positions = positions_from_mask(mask)
    layers = model.layer_weights()
    hidden, cache = model.cached_hidden_states(tokens, positions, mask, _constrain_cache(model.init_cache(b, p)),
                                               layers)
    logits = model.logits(hidden[:, -1])  # left padding: the last column is every real row's last prompt token
    n = cfg.max_new_tokens
    zeros_i = jnp.zeros((b,), jnp.int32)
    state = DecodeState(
        cache=cache, tokens=jnp.zeros((b, n), jnp.int32), logprobs=jnp.zeros((b, n), jnp.float32),
        behavior_logprobs=jnp.zeros((b, n), jnp.float32), last=zeros_i, positions=positions[:, -1],
        stop_state=zeros_i, done=done, finish=zeros_i, lengths=zeros_i, step=jnp.zeros((), jnp.int32), rng=rng,
        first_row=first_row, layers=layers)
    return _advance(state, logits, stop_table, eos_ids, cfg)


# Nothing is donated: the cache grows, so its buffers could not be reused for the output anyway (inside the
# while loop XLA updates the cache in place), and the rest of the state is a few small arrays.
@functools.partial(jax.jit, static_argnames=("graphdef", "window"))
def _decode(graphdef: Any, params: Any, layers: tuple[dict[str, Array], ...], state: DecodeState, stop_table: Array,
            eos_ids: Array, *, window: int, cfg: SamplingConfig) -> DecodeState:
    """One decode segment: grows the cache to ``window`` slots, then feeds the latest token of every row until the
    window is full, all rows are done or N tokens exist. ``layers``: the prefill's per-layer weights (slicing them
    here copied every decoder weight once per segment: 133 ms of a 31-token batch-1 decode on the benchmark model).
    ``state`` comes without them (a jitted function copies an input it returns)."""
    model = nnx.merge(graphdef, params)

    def cond(s: DecodeState) -> Array:
        return (s.cache.index < window) & (s.step < cfg.max_new_tokens) & ~jnp.all(s.done)

    def body(s: DecodeState) -> DecodeState:
        hidden, cache = model.cached_hidden_states(s.last[:, None], s.positions[:, None], None, s.cache, layers)
        s = dataclasses.replace(s, cache=cache)
        return _advance(s, model.logits(hidden[:, 0]), stop_table, eos_ids, cfg)

    state = dataclasses.replace(state, cache=_constrain_cache(state.cache.grow(window)))
    return jax.lax.while_loop(cond, body, state)


def num_compiled_programs() -> int:
    """Programs compiled so far by the sampler's two jitted functions (prefill and decode), all configs."""
    return _prefill._cache_size() + _decode._cache_size()


# ---- host side ----------------------------------------------------------------------------------------------

def placement(params: Any) -> tuple[Any, Any]:
    """(mesh or None, sharding for replicated inputs): the params' mesh, or their single device."""
    for leaf in jax.tree.leaves(params):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
            return sharding.mesh, NamedSharding(sharding.mesh, P())
    return None, jax.tree.leaves(params)[0].sharding


def activation_context(mesh: Any):
    """Activation constraints on ``mesh`` while tracing; nothing for single-device params."""
    return activation_sharding(mesh) if mesh is not None else contextlib.nullcontext()


def _check_prompts(prompts: Sequence[Sequence[int]]) -> None:
    if not prompts:
        raise ValueError("generate() got no prompts")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError(f"prompt {lengths.index(0)} is empty; every prompt needs at least one token")


def _pad_prompts(prompts: Sequence[Sequence[int]], buckets: Buckets,
                 prompt_length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-pads prompts into bucketed [B, P] tokens and mask (P: ``prompt_length``, default the bucket of the
    longest prompt); ``done`` [B] marks the dummy rows."""
    _check_prompts(prompts)
    b = buckets.batch_size(len(prompts))
    p = prompt_length or buckets.prompt_length(max(len(x) for x in prompts))
    tokens = np.zeros((b, p), np.int32)
    mask = np.zeros((b, p), bool)
    for i, prompt in enumerate(prompts):
        tokens[i, p - len(prompt):] = np.asarray(prompt, np.int32)
        mask[i, p - len(prompt):] = True
    done = np.arange(b) >= len(prompts)
    return tokens, mask, done


class Sampler:
    """Generates continuations for batches of token-id prompts with fixed stop strings and EOS ids.

    Build one per (tokenizer, stop strings) and reuse it: the stop automaton is built once (about a second for
    the Qwen vocabulary) and kept on device.

    Args:
      vocab_size: the model's vocabulary size.
      tokenizer: byte-level BPE tokenizer used to decode text and match stop strings; None returns no text.
      stop_strings: texts that end a sequence (e.g. ``("</action>",)``).
      eos_ids: ids that end a sequence (default Qwen's ``<|im_end|>``, ``<|endoftext|>``).
      buckets: padded shapes (see ``buckets.py``).
      kv_cache_tokens: KV budget of one sampling call, in cache slots (rows × slots per row; 0: none). A larger
        call runs in sub-batches (``generate``).
    """

    def __init__(self, vocab_size: int, tokenizer: Any | None = None, *, stop_strings: Sequence[str] = (),
                 eos_ids: Sequence[int] = QWEN_EOS_IDS, buckets: Buckets = Buckets(), kv_cache_tokens: int = 0):
        if kv_cache_tokens < 0:
            raise ValueError(f"kv_cache_tokens must be >= 0 (0: no budget), got {kv_cache_tokens}")
        self.matcher = StopMatcher(tokenizer, stop_strings, eos_ids, vocab_size)
        self.buckets = buckets
        self.kv_cache_tokens = kv_cache_tokens

    def prefill(self, graphdef: Any, params: Any, prompts: Sequence[Sequence[int]], cfg: SamplingConfig,
                rng: Array, *, first_row: int = 0, prompt_length: int | None = None) -> DecodeState:
        """Pads, places and prefills ``prompts``; returns the device state after the first sampled token.
        ``first_row``: the stage-wide index of ``prompts[0]`` (rows draw with keys of their stage-wide index);
        ``prompt_length``: the padded prompt length P (default: the bucket of the longest prompt)."""
        tokens, mask, done = _pad_prompts(prompts, self.buckets, prompt_length)
        mesh, replicated = placement(params)
        if mesh is None:
            tokens, mask, done = jax.device_put((tokens, mask, done), replicated)
        else:  # rows follow the "batch" rule (replicated when the bucket does not divide the batch axes)
            tokens, mask = (jax.device_put(x, logical_sharding(("batch", "length"), x.shape, mesh))
                            for x in (tokens, mask))
            done = jax.device_put(done, logical_sharding(("batch",), done.shape, mesh))
        stop_table, eos_ids = self.matcher.device_arrays(replicated)
        rng = jax.device_put(rng, replicated)  # the caller's key may live on another device
        cfg = jax.device_put(cfg, replicated)  # temperature, top-p, top-k: traced values, placed explicitly
        first_row = jax.device_put(np.int32(first_row), replicated)  # traced: every sub-batch shares one program
        with activation_context(mesh):
            return _prefill(graphdef, params, tokens, mask, done, stop_table, eos_ids, rng, first_row, cfg=cfg)

    def decode(self, graphdef: Any, params: Any, state: DecodeState, cfg: SamplingConfig) -> DecodeState:
        """Runs the decode segments on a state fresh from ``prefill``; the result no longer holds its layers."""
        mesh, replicated = placement(params)
        stop_table, eos_ids = self.matcher.device_arrays(replicated)
        layers, state = state.layers, dataclasses.replace(state, layers=())
        values = jax.device_put(cfg, replicated)
        for window in self.buckets.decode_windows(state.cache.length, cfg.max_new_tokens):
            if jax.device_get(state.done).all():  # every row hit EOS, a stop string or N tokens
                break
            with activation_context(mesh):
                state = _decode(graphdef, params, layers, state, stop_table, eos_ids, window=window, cfg=values)
        return state

    def lower_decode(self, graphdef: Any, params: Any, *, batch: int, prompt_length: int, cfg: SamplingConfig,
                     window: int | None = None) -> tuple[Any, Any]:
        """Compiles, without running, the prefill and the decode segment of ``window`` cache slots (default the
        last one, P + N − 1) that ``generate`` would run for ``batch`` rows of ``prompt_length`` (bucketed) tokens
        on ``params`` (concrete, or ``jax.ShapeDtypeStruct`` leaves carrying their shardings, e.g. for a
        deviceless compile). Returns the two ``jax.stages.Compiled`` programs: ``.as_text()`` of the second is what
        ``collectives.decode_collectives`` reads, ``.memory_analysis()`` their footprint."""
        mesh, replicated = placement(params)

        def spec(shape, dtype, names):
            sharding = replicated if mesh is None else logical_sharding(names, shape, mesh)
            return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

        tokens = spec((batch, prompt_length), jnp.int32, ("batch", "length"))
        mask = spec((batch, prompt_length), jnp.bool_, ("batch", "length"))
        done = spec((batch,), jnp.bool_, ("batch",))
        stop_table, eos_ids = (jax.ShapeDtypeStruct(x.shape, jnp.int32, sharding=replicated)
                               for x in (self.matcher.transitions, np.array(self.matcher.eos_ids or (-1,))))
        rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=replicated)
        first_row = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
        values = jax.tree.map(lambda x: jax.ShapeDtypeStruct((), jnp.asarray(x).dtype, sharding=replicated), cfg)
        with activation_context(mesh):
            prefill = _prefill.lower(graphdef, params, tokens, mask, done, stop_table, eos_ids, rng, first_row,
                                     cfg=values).compile()
        state = prefill.out_info
        layers, state = state.layers, dataclasses.replace(state, layers=())
        window = prompt_length + cfg.max_new_tokens - 1 if window is None else window
        with activation_context(mesh):
            decode = _decode.lower(graphdef, params, layers, state, stop_table, eos_ids, window=window,
                                   cfg=values).compile()
        return prefill, decode

    def generate(self, graphdef: Any, params: Any, prompts: Sequence[Sequence[int]], cfg: SamplingConfig,
                 rng: Array) -> SampleResult:
        """Samples up to ``cfg.max_new_tokens`` tokens after each prompt; see ``SampleResult``.

        Within the KV budget (``kv_cache_tokens``) the prompts run in sub-batches of consecutive rows
        (``sub_batch_rows``), all padded to the same prompt length; row i draws with the keys of row i of the whole
        call, so the result is the one unsplit call's."""
        _check_prompts(prompts)
        prompt_length = self.buckets.prompt_length(max(len(p) for p in prompts))
        rows = self.sub_batch_rows(len(prompts), prompt_length, cfg.max_new_tokens)
        parts = []
        for start in range(0, len(prompts), rows):
            chunk = prompts[start:start + rows]
            state = self.prefill(graphdef, params, chunk, cfg, rng, first_row=start, prompt_length=prompt_length)
            parts.append(self.finish(self.decode(graphdef, params, state, cfg), len(chunk)))
        return parts[0] if len(parts) == 1 else _concatenate(parts)

    def sub_batch_rows(self, num_rows: int, prompt_length: int, max_new_tokens: int) -> int:
        """Prompts per sampling call so that the batch bucket × (P + N) cache slots stay within ``kv_cache_tokens``:
        all ``num_rows`` when they fit (or without a budget), else the largest batch bucket that fits."""
        slots = prompt_length + max_new_tokens
        if not self.kv_cache_tokens or self.buckets.batch_size(num_rows) * slots <= self.kv_cache_tokens:
            return num_rows
        fitting = [b for b in self.buckets.batch_sizes if b * slots <= self.kv_cache_tokens]
        if not fitting:
            raise ValueError(f"generation.kv_cache_tokens={self.kv_cache_tokens} holds no row of {slots} cache slots "
                             f"(prompt bucket {prompt_length} + {max_new_tokens} new tokens); raise it to at least "
                             f"{self.buckets.batch_sizes[0] * slots}")
        return fitting[-1]

    def finish(self, state: DecodeState, num_rows: int) -> SampleResult:
        """Fetches a finished state explicitly and applies the exact host-side stop-string cut."""
        tokens, logprobs, behavior, lengths, finish = jax.device_get(
            (state.tokens, state.logprobs, state.behavior_logprobs, state.lengths, state.finish))
        tokens, logprobs, behavior = (np.array(x[:num_rows]) for x in (tokens, logprobs, behavior))
        lengths, finish = np.array(lengths[:num_rows]), np.array(finish[:num_rows])
        texts, reasons = [], []
        for i in range(num_rows):
            row = self.matcher.finalize(tokens[i, :lengths[i]])
            if row.stopped:
                lengths[i], finish[i] = row.num_tokens, _STOP
            texts.append(row.text)
            reasons.append(FINISH_REASONS[finish[i]])
        mask = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
        return SampleResult(tokens=np.where(mask, tokens, 0), logprobs=np.where(mask, logprobs, 0.0),
                            behavior_logprobs=np.where(mask, behavior, 0.0), mask=mask, lengths=lengths,
                            text=texts, finish_reason=reasons)


def _concatenate(parts: Sequence[SampleResult]) -> SampleResult:
    """The sub-batches' results as one, rows in order."""
    arrays = {f: np.concatenate([getattr(r, f) for r in parts]) for f in
              ("tokens", "logprobs", "behavior_logprobs", "mask", "lengths")}
    return SampleResult(**arrays, text=[t for r in parts for t in r.text],
                        finish_reason=[f for r in parts for f in r.finish_reason])


@functools.lru_cache(maxsize=8)
def _sampler(tokenizer: Any, stop_strings: tuple[str, ...], eos_ids: tuple[int, ...], vocab_size: int,
             buckets: Buckets) -> Sampler:
    return Sampler(vocab_size, tokenizer, stop_strings=stop_strings, eos_ids=eos_ids, buckets=buckets)


def generate(model: nnx.Module, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, rng: Array,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, stop_strings: Sequence[str] = (),
             tokenizer: Any | None = None, eos_ids: Sequence[int] = QWEN_EOS_IDS,
             buckets: Buckets = Buckets()) -> SampleResult:
    """One-call sampling from an nnx ``Qwen2`` (the ``Sampler`` for these stop strings is cached).

    Args:
      model: the policy; its params may be sharded on a mesh (inputs then follow the ``batch`` rule).
      prompts: token ids per row (ragged; e.g. rendered single-turn chat prompts).
      max_new_tokens, temperature, top_p, top_k: see ``SamplingConfig``.
      rng: a JAX PRNG key.
      stop_strings, tokenizer, eos_ids, buckets: see ``Sampler``.

    Returns:
      A ``SampleResult`` with one row per prompt.
    """
    cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    sampler = _sampler(tokenizer, tuple(stop_strings), tuple(eos_ids), model.cfg.vocab_size, buckets)
    graphdef, params = nnx.split(model)
    return sampler.generate(graphdef, params, prompts, cfg, rng)
