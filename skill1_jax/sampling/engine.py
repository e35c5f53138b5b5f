"""Continuous-batching rollout engine: a fixed set of KV slots, a request queue, refills at decode-window boundaries.

Axis letters: S slots (rows of every decode step), C cache slots per row, N reply buffer width, P prompt bucket,
R requests of one prefill call, V vocabulary, Q stop-automaton states, Z stop-string sets.

The static sampler (``sampler.py``) pads a stage's prompts into one batch and decodes until its longest reply ends,
so finished rows ride along and every play turn is a barrier. Here each of S slots holds one request at a time with
its own length (its next cache write index, which is also the position of its next token):

* ``submit`` queues requests. At a window boundary every free slot takes the next queued request: its prompt is
  prefilled (right-padded to its ``bucket``) and its keys and values are copied
  into slots 0..len−1 of the row's cache, whose other slots become invalid; the first token is sampled there.
* ``_decode`` runs one window of ``EngineConfig.window`` steps in a ``lax.while_loop`` (no Python between tokens):
  every slot feeds its last token, writes its keys and values at its own index and attends over its valid slots.
  A slot ends on EOS, a stop string (the automaton of ``stops.py``, one table per stop-string set) or its request's
  token limit, and idles until the boundary.
* After each window the host fetches the finished rows and hands them back at once (``step`` returns them), so a
  caller can queue a rollout's next turn while the other slots keep their state. A window decodes only the
  occupied slots' row tiles; when few requests remain, those in high slots first move to free low ones.

Shared prefixes: identical prompts queued together (the G query prompts of a task, their first play prompts) are
prefilled once; the prefill result stays on device while a queued request still needs it, and each such request's
slot gets a copy of its keys and values. Requests that share a ``prefix_key`` (one rollout's play turns, submitted
in order) share a head: the longest run of whole ``prompt_bucket`` granules a prompt has in common with the key's
previous prompt (the system prompt, task and injected skill before the turn history), when it is at least two
granules. A head is prefilled once on its own and kept (least recently used first out, within
``EngineConfig.head_cache_tokens``); each request then prefills only the rest of its prompt, attending over the
head's keys and values. Whether a head is kept or recomputed changes no bit, and which head a request uses depends
only on the key's earlier prompts, so the determinism below holds for keyed requests too.

Keys and determinism: a request carries its identity (e.g. step, rollout, stage, turn); its key is the engine key
folded with each identity entry in turn, and token i is drawn with ``fold_in(request key, i)`` (identity ``(r,)``
reproduces the static sampler's row-r stream). Nothing depends on the slot, the neighbours or the arrival order,
and neither do the numerics: CPU matmul kernels (YNNPACK, Eigen) pick their blocking by the row count M, so a row's
float32 sums change with M (on the 128-wide demo model, M = 2..32 differs from M = 1 and M ≥ 64 by ~1e-5). So a
prefill runs one prompt per matmul (a loop over the call's requests, M = its own bucket), and decode steps run
their projections, MLPs and sampling over fixed tiles of ``EngineConfig.row_tile`` slots (the slot count is
rounded up to a multiple of it, at least two tiles): every row sees the same shapes whatever the slot count. A
window's attention span follows its longest row, so decode attention sums over fixed chunks of ``span_bucket``
slots one after the other (``Qwen2.slot_hidden_states``): the chunks past a row's end add exact zeros.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Hashable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import CACHE_AXES, KVCache
from skill1_jax.parallel.sharding import logical_sharding
from skill1_jax.sampling.logits import SamplingConfig, sample_logits_keyed
from skill1_jax.sampling.sampler import FINISH_REASONS, activation_context, finish_code, placement
from skill1_jax.sampling.stops import QWEN_EOS_IDS, StopMatcher

Array = jax.Array

# Entries of a request identity (step, rollout, stage, turn); shorter identities fold only their own entries.
IDENTITY_WIDTH = 4


def bucket(n: int, granule: int) -> int:
    """``n`` rounded up to a multiple of ``granule``, or of an eighth of the power of two above ``n`` when that is
    coarser: at most eight padded shapes per octave (so a few compiled programs), at most 1/8 of padding past the
    first octaves."""
    step = max(granule, (1 << max(n - 1, 1).bit_length()) // 8)
    return -(-n // step) * step


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Shapes of the engine.

    Attributes:
      slots: requests decoded together (``rows`` are computed); ``from_kv_budget`` sizes it.
      cache_length: C, KV slots per row to start with: a request needs prompt + max_new_tokens − 1 of them (and
        its prompt bucket); a longer one grows every row's cache (``Engine.submit``).
      window: decode steps between refills (shorter idles finished slots less, longer runs less host code).
      row_tile: rows per projection / MLP matmul in a decode step (see the module docstring).
      prompt_bucket: prompts are right-padded to ``bucket(length, prompt_bucket)`` (one prefill program per bucket).
      prefill_rows: prompts per prefill call at most.
      span_bucket: a window attends over the first slots up to the longest row's end, rounded up by ``bucket``
        with this granule (one decode program per bucket), not over all C, in chunks of this many slots (so that
        a row's numerics do not depend on how far its neighbours reach).
      head_cache_tokens: prompt heads (see the module docstring) kept on device at most, in padded tokens.
    """

    slots: int = 64
    cache_length: int = 512
    window: int = 8
    row_tile: int = 8
    prompt_bucket: int = 32
    prefill_rows: int = 16
    span_bucket: int = 64
    head_cache_tokens: int = 1 << 15

    def __post_init__(self):
        for name in ("slots", "cache_length", "window", "row_tile", "prompt_bucket", "prefill_rows", "span_bucket",
                     "head_cache_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def rows(self) -> int:
        """Rows actually decoded: ``slots`` rounded up to a multiple of ``row_tile``, and at least two tiles (XLA
        drops a loop of one trip and fuses its body with its neighbours, which changes a row's rounding)."""
        return max(2, -(-self.slots // self.row_tile)) * self.row_tile

    @classmethod
    def from_kv_budget(cls, model: ModelConfig, budget_bytes: int, cache_length: int, **kwargs) -> "EngineConfig":
        """As many slots as ``budget_bytes`` of keys and values hold at ``cache_length`` (a multiple of row_tile)."""
        tile = kwargs.get("row_tile", cls.row_tile)
        itemsize = jnp.dtype(model.compute_dtype).itemsize
        per_slot = 2 * model.num_layers * model.num_kv_heads * model.head_dim * cache_length * itemsize
        slots = budget_bytes // per_slot // tile * tile
        if slots < 1:
            raise ValueError(f"a KV budget of {budget_bytes} bytes holds no slot of {per_slot} bytes "
                             f"(cache_length {cache_length}); raise the budget or shorten the cache")
        return cls(slots=slots, cache_length=cache_length, **kwargs)


@dataclasses.dataclass(frozen=True)
class EngineRequest:
    """One generation request.

    Attributes:
      prompt: token ids (non-empty).
      identity: up to ``IDENTITY_WIDTH`` ints naming the request (e.g. step, rollout, stage, turn): its key.
      max_new_tokens: its reply limit (at most the engine's ``SamplingConfig.max_new_tokens``).
      stop_set: index of its stop strings among the engine's ``stop_sets``.
      tag: anything; handed back with the completion.
      prefix_key: requests with one key (submitted in order) share the head their prompts have in common (module
        docstring); None shares none.
    """

    prompt: tuple[int, ...]
    identity: tuple[int, ...]
    max_new_tokens: int
    stop_set: int = 0
    tag: Hashable = None
    prefix_key: Hashable = None


@dataclasses.dataclass(frozen=True)
class Completion:
    """A finished request: ``tokens`` (stop string or EOS included), their policy and behaviour log-probs (as
    ``SampleResult``'s), the decoded text and why it ended ("eos", "stop" or "length")."""

    request: EngineRequest
    tokens: np.ndarray
    logprobs: np.ndarray
    behavior_logprobs: np.ndarray
    text: str
    finish_reason: str


@dataclasses.dataclass
class EngineStats:
    """Work done, for throughput accounting: decode row-steps computed (rows decoded × steps) and the tokens they
    made (every token but each request's first, which its prefill samples); prompt tokens prefilled (padded) and
    submitted; requests moved to a lower slot so that a window could decode fewer rows (``Engine._compact``)."""

    decode_row_steps: int = 0
    decode_tokens: int = 0
    prefill_computed: int = 0
    prefill_requested: int = 0
    windows: int = 0
    moved: int = 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotState:
    """Per-slot device state; arrays are [S] unless noted."""

    k: tuple[Array, ...]  # per layer [S, K, C, H]
    v: tuple[Array, ...]
    valid: Array  # [S, C] bool
    length: Array  # int32, filled cache slots = next write index = position of ``last``
    last: Array  # int32, the latest token
    keys: Array  # uint32 [S, 2], the request key's data
    count: Array  # int32, tokens generated
    limit: Array  # int32, the request's max_new_tokens
    stop_set: Array  # int32
    stop_state: Array  # int32
    done: Array  # bool; free slots are done
    finish: Array  # int32 finish code
    tokens: Array  # [S, N] int32
    logprobs: Array  # [S, N] float32
    behavior_logprobs: Array  # [S, N] float32
    steps: Array  # int32 scalar, decode steps run


def _rows_in_tiles(tile: int):
    """``rows(fn, *xs)``: fn over consecutive tiles of ``tile`` rows of its [B, ...] inputs (B a multiple)."""
    def rows(fn, *xs):
        b = xs[0].shape[0]
        out = jax.lax.map(lambda t: fn(*t), tuple(x.reshape(b // tile, tile, *x.shape[1:]) for x in xs))
        return jax.tree.map(lambda y: y.reshape(b, *y.shape[2:]), out)
    return rows


def _sample_in_tiles(tile: int, logits: Array, keys: Array, cfg: SamplingConfig,
                     active: Array) -> tuple[Array, Array, Array]:
    """``sample_logits_keyed`` over tiles of ``tile`` rows: its reductions then see the same shapes whatever the
    number of rows (they round differently for a handful of rows than for many)."""
    return _rows_in_tiles(tile)(lambda x, k, a: sample_logits_keyed(x, k, cfg, a), logits, keys, active)


def _request_keys(base: Array, identity: Array, width: Array) -> Array:
    """Key data [R, 2] of each request: ``base`` folded with identity[r, :width[r]] in order."""
    def one(ident, n):
        key = base
        for j in range(IDENTITY_WIDTH):
            key = jnp.where(j < n, jax.random.fold_in(key, ident[j]), key)
        return jax.random.key_data(key)
    return jax.vmap(one)(identity, width)


def _token_keys(keys: Array, count: Array) -> Array:
    """Typed keys [S]: token ``count[s]`` of the request whose key data is ``keys[s]``."""
    return jax.vmap(lambda k, i: jax.random.fold_in(jax.random.wrap_key_data(k), i))(keys, count)


def _step_outcome(tok: Array, stop_set: Array, stop_state: Array, count: Array, limit: Array, tables: Array,
                  eos_ids: Array) -> tuple[Array, Array, Array]:
    """(new stop state, done, finish code) of rows that just produced token number ``count`` + 1 (``tok``)."""
    stop_state = tables[stop_set, stop_state, tok]
    return (stop_state, *finish_code(tok, stop_state, count + 1, limit, eos_ids))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _layer_weights(graphdef: Any, params: Any) -> tuple[dict[str, Array], ...]:
    return nnx.merge(graphdef, params).layer_weights()


def _prefill_rows(model: Any, layers: tuple[dict[str, Array], ...], cache: KVCache, tokens: Array, lengths: Array,
                  count: Array) -> tuple[tuple[Array, ...], tuple[Array, ...], Array]:
    """Runs the first ``count`` right-padded prompts [R, P] one at a time (so each prompt's matmuls have the same
    shape whatever its neighbours), each on top of ``cache`` (one row; its tokens at positions ``cache.index``, ...):
    per-layer keys/values [R, K, C, H] of the filled cache and last-token logits [R, V]."""
    r, p = tokens.shape
    zeros = (tuple(jnp.zeros((r,) + x.shape[1:], x.dtype) for x in cache.k),
             tuple(jnp.zeros((r,) + x.shape[1:], x.dtype) for x in cache.v),
             jnp.zeros((r, model.cfg.vocab_size), jnp.float32))

    def body(i, out):
        ks, vs, logits = out
        row = jax.lax.dynamic_slice_in_dim(tokens, i, 1)
        mask = jnp.arange(p)[None] < lengths[i]
        hidden, filled = model.cached_hidden_states(row, (cache.index + jnp.arange(p)[None]) * mask, mask, cache,
                                                    layers)
        last = jax.lax.dynamic_slice_in_dim(hidden, lengths[i] - 1, 1, axis=1)[:, 0]
        put = functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=i, axis=0)
        return (tuple(put(a, b) for a, b in zip(ks, filled.k)), tuple(put(a, b) for a, b in zip(vs, filled.v)),
                put(logits, model.logits(last)))

    return jax.lax.fori_loop(0, count, body, zeros)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefill(graphdef: Any, params: Any, layers: tuple[dict[str, Array], ...], tokens: Array, lengths: Array,
             count: Array) -> tuple[tuple[Array, ...], tuple[Array, ...], Array]:
    """``_prefill_rows`` from an empty cache: per-layer keys/values [R, K, P, H] and last-token logits [R, V]."""
    model = nnx.merge(graphdef, params)
    return _prefill_rows(model, layers, model.init_cache(1, tokens.shape[1]), tokens, lengths, count)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefill_after_head(graphdef: Any, params: Any, layers: tuple[dict[str, Array], ...], head_k: tuple[Array, ...],
                        head_v: tuple[Array, ...], head_row: Array, head_len: Array, tokens: Array, lengths: Array,
                        count: Array) -> tuple[tuple[Array, ...], tuple[Array, ...], Array]:
    """``_prefill_rows`` of prompt tails [R, P] that follow one head: row ``head_row`` of a head prefill's
    keys/values [R', K, P', H], of which the first ``head_len`` slots are the head. Returns per-layer keys/values
    [R, K, P' + P, H] holding head ⧺ tail from slot 0, and each tail's last-token logits [R, V]."""
    model = nnx.merge(graphdef, params)
    p = tokens.shape[1]
    length = head_k[0].shape[2] + p
    head = lambda x: jnp.pad(jax.lax.dynamic_slice_in_dim(x, head_row, 1), ((0, 0), (0, 0), (0, p), (0, 0)))
    cache = KVCache(k=tuple(map(head, head_k)), v=tuple(map(head, head_v)),
                    valid=jnp.arange(length)[None] < head_len, index=head_len)
    return _prefill_rows(model, layers, cache, tokens, lengths, count)


# The slot state is donated: refills and windows update its caches in place.
@functools.partial(jax.jit, donate_argnums=(0,), static_argnames=("tile",))
def _insert(state: SlotState, k: tuple[Array, ...], v: tuple[Array, ...], logits: Array, source: Array,
            slots: Array, identity: Array, width: Array, lengths: Array, limits: Array, stop_sets: Array,
            base_key: Array, tables: Array, eos_ids: Array, cfg: SamplingConfig, *, tile: int) -> SlotState:
    """Starts requests in ``slots`` [S'] (index ≥ S: unused entry) from rows ``source`` of a prefill's keys/values
    [R, K, P, H] and logits: copies the prompt's keys/values, sets its length, samples its first token."""
    p = k[0].shape[2]
    c = state.valid.shape[1]
    keys = _request_keys(base_key, identity, width)
    tok, policy, behavior = _sample_in_tiles(tile, logits[source], _token_keys(keys, jnp.zeros_like(lengths)), cfg,
                                             jnp.ones_like(lengths, bool))
    stop_state, done, code = _step_outcome(tok, stop_sets, jnp.zeros_like(tok), jnp.zeros_like(tok), limits, tables,
                                           eos_ids)
    n = state.tokens.shape[1]

    def put(buf, value):
        return buf.at[slots].set(value.astype(buf.dtype), mode="drop")

    def first(value):  # a reply buffer row holding ``value`` at token 0
        return jnp.zeros((slots.shape[0], n), value.dtype).at[:, 0].set(value)

    def cache(buf, new):
        return buf.at[slots, :, :p].set(new[source].astype(buf.dtype), mode="drop")

    return SlotState(
        k=tuple(map(cache, state.k, k)), v=tuple(map(cache, state.v, v)),
        valid=put(state.valid, jnp.arange(c)[None] < lengths[:, None]), length=put(state.length, lengths),
        last=put(state.last, tok), keys=put(state.keys, keys), count=put(state.count, jnp.ones_like(tok)),
        limit=put(state.limit, limits), stop_set=put(state.stop_set, stop_sets),
        stop_state=put(state.stop_state, stop_state), done=put(state.done, done), finish=put(state.finish, code),
        tokens=put(state.tokens, first(tok)), logprobs=put(state.logprobs, first(policy)),
        behavior_logprobs=put(state.behavior_logprobs, first(behavior)), steps=state.steps)


def _row_fields(fn, state: SlotState, *others: SlotState) -> SlotState:
    """``fn`` applied to every per-slot array of ``state`` (all but the step counter), with the matching arrays of
    ``others`` as further arguments; the step counter is the last state's."""
    states = (state, *others)
    return dataclasses.replace(jax.tree.map(fn, *(dataclasses.replace(s, steps=None) for s in states)),
                               steps=states[-1].steps)


@functools.partial(jax.jit, static_argnames=("graphdef", "window", "tile", "span", "chunk", "active"),
                   donate_argnums=(3,))
def _decode(graphdef: Any, params: Any, layers: tuple[dict[str, Array], ...], state: SlotState, tables: Array,
            eos_ids: Array, cfg: SamplingConfig, *, window: int, tile: int, span: int, chunk: int,
            active: int) -> SlotState:
    """One decode window over the first ``active`` slots (every occupied one lies there): up to ``window`` steps
    while any of them runs (see the module docstring); every slot the window writes lies in the first ``span``,
    which attention reads in chunks of ``chunk``."""
    window_of = functools.partial(_decode_window, graphdef, params, layers, tables=tables, eos_ids=eos_ids, cfg=cfg,
                                  window=window, tile=tile, span=span, chunk=chunk)
    if active < state.done.shape[0]:
        head = window_of(_row_fields(lambda x: x[:active], state))
        return _row_fields(functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=0, axis=0), state, head)
    return window_of(state)


@functools.partial(jax.jit, donate_argnums=(0,))
def _move(state: SlotState, source: Array, target: Array) -> SlotState:
    """Slot ``source[i]``'s request moved to slot ``target[i]`` (entries ≥ S: none), keys, values and all."""
    return _row_fields(lambda x: x.at[target].set(x[source], mode="drop"), state)


def _decode_window(graphdef: Any, params: Any, layers: tuple[dict[str, Array], ...], state: SlotState,
                   tables: Array, eos_ids: Array, cfg: SamplingConfig, window: int, tile: int, span: int,
                   chunk: int) -> SlotState:
    model = nnx.merge(graphdef, params)
    rows = _rows_in_tiles(tile)
    s, n = state.tokens.shape
    every = jnp.arange(s)

    def cond(carry):
        i, st = carry
        return (i < window) & ~jnp.all(st.done)

    def body(carry):
        i, st = carry
        active = ~st.done
        index = jnp.where(active, st.length, st.valid.shape[1])  # finished and free slots write nothing
        hidden, k, v, valid = model.slot_hidden_states(st.last, index, st.valid, st.k, st.v, layers, rows, span,
                                                       chunk)
        logits = rows(model.logits, hidden)
        tok, policy, behavior = _sample_in_tiles(tile, logits, _token_keys(st.keys, st.count), cfg, active)
        stop_state, done, code = _step_outcome(tok, st.stop_set, st.stop_state, st.count, st.limit, tables, eos_ids)
        column = jnp.where(active, st.count, n)  # past the buffer: dropped

        def write(buf, value):
            return buf.at[every, column].set(value.astype(buf.dtype), mode="drop")

        return i + 1, SlotState(
            k=k, v=v, valid=valid, length=st.length + active, last=jnp.where(active, tok, st.last), keys=st.keys,
            count=st.count + active, limit=st.limit, stop_set=st.stop_set,
            stop_state=jnp.where(active, stop_state, st.stop_state), done=st.done | (active & done),
            finish=jnp.where(active, code, st.finish), tokens=write(st.tokens, tok),
            logprobs=write(st.logprobs, policy), behavior_logprobs=write(st.behavior_logprobs, behavior),
            steps=st.steps + 1)

    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state))[1]


@functools.lru_cache(maxsize=16)
def _empty_state_program(model_cfg: ModelConfig, dtype: str, rows: int, cache_length: int, n: int, mesh: Any,
                         replicated: Any):
    """The program that makes an engine's state with every slot free, each array in place: the caches by the cache
    rule on ``mesh`` (if any), the rest ``replicated``; nothing crosses from the host and no device holds more
    than its shard."""
    empty = functools.partial(_empty_state, model_cfg, dtype, rows, cache_length, n)
    state = jax.eval_shape(empty)
    shardings = jax.tree.map(lambda _: replicated, state)
    if mesh is not None:
        caches = tuple(logical_sharding(CACHE_AXES, x.shape, mesh) for x in state.k)
        shardings = dataclasses.replace(shardings, k=caches, v=caches)
    return jax.jit(empty, out_shardings=shardings)


def _empty_state(model_cfg: ModelConfig, dtype: str, rows: int, cache_length: int, n: int) -> SlotState:
    cache = KVCache.zeros(model_cfg, rows, cache_length, dtype)

    def zi():
        return jnp.zeros((rows,), jnp.int32)

    return SlotState(
        k=cache.k, v=cache.v, valid=cache.valid, length=zi(), last=zi(), keys=jnp.zeros((rows, 2), jnp.uint32),
        count=zi(), limit=zi(), stop_set=zi(), stop_state=zi(), done=jnp.ones((rows,), bool), finish=zi(),
        tokens=jnp.zeros((rows, n), jnp.int32), logprobs=jnp.zeros((rows, n), jnp.float32),
        behavior_logprobs=jnp.zeros((rows, n), jnp.float32), steps=jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnums=(1,))  # not donated: every cache changes shape
def _grow_cache(state: SlotState, cache_length: int) -> SlotState:
    extra = cache_length - state.valid.shape[1]
    def pad(x):
        return jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0)))
    return dataclasses.replace(state, k=tuple(map(pad, state.k)), v=tuple(map(pad, state.v)),
                               valid=jnp.pad(state.valid, ((0, 0), (0, extra))))


class Engine:
    """Continuous batching over one set of params (see the module docstring).

    Args:
      graphdef, params: the model (``nnx.split``); params stay fixed while the engine runs (on-policy collection).
      sampling: temperature / top-p / top-k for every request; its ``max_new_tokens`` is the reply buffer width N.
      rng: the engine key that request identities are folded into.
      config: slots and shapes.
      tokenizer: byte-level BPE tokenizer for stop strings and text; None gives no text and allows no stop strings.
      stop_sets: stop-string sets a request picks from by ``EngineRequest.stop_set`` (default: one empty set).
      eos_ids: ids that end every request.
    """

    def __init__(self, graphdef: Any, params: Any, sampling: SamplingConfig, rng: Array,
                 config: EngineConfig = EngineConfig(), *, tokenizer: Any | None = None,
                 stop_sets: Sequence[Sequence[str]] = ((),), eos_ids: Sequence[int] = QWEN_EOS_IDS):
        model = nnx.merge(graphdef, params)
        self.graphdef, self.params, self.sampling, self.config = graphdef, params, sampling, config
        self.matchers = [StopMatcher(tokenizer, stops, eos_ids, model.cfg.vocab_size) for stops in stop_sets]
        q = max(m.transitions.shape[0] for m in self.matchers)
        tables = np.stack([np.pad(m.transitions, ((0, q - m.transitions.shape[0]), (0, 0))) for m in self.matchers])
        # On a mesh (the sampling layout's, or the update's under "train") the caches follow the cache rule and the
        # rest is replicated; the jitted programs trace under the mesh's activation rules.
        self._mesh, replicated = placement(params)
        self._tables, self._eos = jax.device_put((tables, np.array(tuple(eos_ids) or (-1,), np.int32)), replicated)
        self._key = jax.device_put(rng, replicated)
        self._cfg = jax.device_put(sampling, replicated)
        with activation_context(self._mesh):
            self._layers = _layer_weights(graphdef, params)
        self.cache_length = config.cache_length
        self._state = _empty_state_program(model.cfg, jnp.dtype(model.compute_dtype).name, config.rows,
                                           self.cache_length, sampling.max_new_tokens, self._mesh, replicated)()
        self._queue: collections.deque[tuple[EngineRequest, int]] = collections.deque()  # (request, head length)
        self._slot_request: list[EngineRequest | None] = [None] * config.slots  # slots past ``slots`` stay free
        self._length = [0] * config.slots  # filled cache slots per slot, as of the last boundary
        self._waiting: collections.Counter = collections.Counter()  # queued requests per (prompt, head length)
        self._prefixes: dict[tuple[tuple[int, ...], int], tuple[Any, int]] = {}  # (prompt, head) -> (prefill, row)
        self._last_prompt: dict[Hashable, tuple[int, ...]] = {}  # prefix key -> its latest prompt
        self._heads: collections.OrderedDict[tuple[int, ...], tuple[Any, int]] = collections.OrderedDict()
        self._steps = 0  # decode steps run, as of the last boundary
        self.stats = EngineStats()

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        """Queues requests (first in, first out). A request longer than the cache (prompt + reply limit − 1 slots)
        first doubles every row's cache until it fits (few distinct shapes); rows in flight keep their contents."""
        n = self.sampling.max_new_tokens
        for r in requests:
            if not r.prompt:
                raise ValueError(f"request {r.identity} has an empty prompt; every prompt needs a token")
            if not 1 <= r.max_new_tokens <= n:
                raise ValueError(f"request {r.identity} asks for {r.max_new_tokens} tokens; the engine allows 1..{n}")
            if len(r.identity) > IDENTITY_WIDTH or not 0 <= r.stop_set < len(self.matchers):
                raise ValueError(f"request {r.identity}: identity has at most {IDENTITY_WIDTH} entries and stop_set "
                                 f"is in 0..{len(self.matchers) - 1}")
        needed = 0
        for r in requests:
            h = self._head_of(r)
            self._queue.append((r, h))
            self._waiting[tuple(r.prompt), h] += 1
            self.stats.prefill_requested += len(r.prompt)
            padded = (bucket(len(r.prompt), self.config.prompt_bucket) if not h else
                      bucket(h, self.config.prompt_bucket) + bucket(len(r.prompt) - h, self.config.prompt_bucket))
            needed = max(needed, len(r.prompt) + r.max_new_tokens - 1, padded)
        if needed > self.cache_length:
            self._grow(self.cache_length << (-(-needed // self.cache_length) - 1).bit_length())

    def _head_of(self, r: EngineRequest) -> int:
        """The length of ``r``'s head (0: none), from the prompt its key saw last; records ``r``'s prompt."""
        if r.prefix_key is None:
            return 0
        previous = self._last_prompt.get(r.prefix_key, ())
        self._last_prompt[r.prefix_key] = tuple(r.prompt)
        granule = self.config.prompt_bucket
        common = next((i for i, (a, b) in enumerate(zip(r.prompt, previous)) if a != b), min(len(r.prompt),
                                                                                             len(previous)))
        h = min(common, len(r.prompt) - 1) // granule * granule  # whole granules, and a tail of at least a token
        return h if h >= 2 * granule else 0

    @property
    def busy(self) -> bool:
        return bool(self._queue) or any(r is not None for r in self._slot_request)

    def step(self) -> list[Completion]:
        """One window boundary and window: free slots take queued requests, every slot decodes up to ``window``
        tokens, and the requests that finished in it come back (possibly none). Requests submitted before the next
        call (e.g. a rollout's next turn) join the queue; the other slots keep their state."""
        self._refill()
        active = self._compact()
        cfg = self.config
        end = max(n for n, r in zip(self._length, self._slot_request) if r is not None) + cfg.window
        span = min(bucket(end, cfg.span_bucket), self.cache_length)
        with activation_context(self._mesh):
            self._state = _decode(self.graphdef, self.params, self._layers, self._state, self._tables,
                                  self._eos, self._cfg, window=cfg.window, tile=cfg.row_tile, span=span,
                                  chunk=cfg.span_bucket, active=active)
        return list(self._harvest(active))

    def completions(self) -> Iterator[Completion]:
        """``step`` until the queue and the slots are empty, one finished request at a time."""
        while self.busy:
            yield from self.step()

    def generate(self, requests: Sequence[EngineRequest]) -> list[Completion]:
        """Submits ``requests``, runs them and returns their completions in request order."""
        self.submit(requests)
        done = {id(c.request): c for c in self.completions()}
        return [done[id(r)] for r in requests]

    # ---- host side of a window boundary ---------------------------------------------------------------------

    def _refill(self) -> None:
        free = [i for i, r in enumerate(self._slot_request) if r is None]
        taken = [self._queue.popleft() for _ in range(min(len(free), len(self._queue)))]
        if not taken:
            return
        self._prefill_missing(taken)
        groups: dict[int, tuple[Any, list[tuple[int, int, EngineRequest]]]] = {}
        for slot, (r, h) in zip(free, taken):
            prompt = (tuple(r.prompt), h)
            result, row = self._prefixes[prompt]
            groups.setdefault(id(result), (result, []))[1].append((slot, row, r))
            self._slot_request[slot], self._length[slot] = r, len(r.prompt)
            self._waiting[prompt] -= 1
            if not self._waiting[prompt]:  # no queued request needs this prefill any more
                del self._waiting[prompt], self._prefixes[prompt]
        for result, group in groups.values():
            self._insert(result, group)

    def _prefill_missing(self, taken: Sequence[tuple[EngineRequest, int]]) -> None:
        """Prefills the prompts of ``taken`` that no earlier prefill holds, once each: whole prompts grouped by
        bucket, prompts with a head as tails over it (grouped by head and tail bucket), missing heads first."""
        whole: dict[int, list[tuple[int, ...]]] = {}
        tails: dict[tuple[tuple[int, ...], int], list[tuple[int, ...]]] = {}
        for r, h in taken:
            prompt = tuple(r.prompt)
            if (prompt, h) in self._prefixes:
                continue
            group = (whole.setdefault(bucket(len(prompt), self.config.prompt_bucket), []) if not h else
                     tails.setdefault((prompt[:h], bucket(len(prompt) - h, self.config.prompt_bucket)), []))
            if prompt not in group:
                group.append(prompt)
        heads = {head: bucket(len(head), self.config.prompt_bucket) for head, _ in tails if head not in self._heads}
        fresh: dict[tuple[int, ...], tuple[Any, int]] = {}  # this call's heads, kept even if the cache drops them

        def keep_head(head, found):
            fresh[head] = found
            self._keep_head(head, found)

        for p in sorted(set(heads.values())):
            self._prefill_whole([head for head, hp in heads.items() if hp == p], p, keep_head)
        for p, prompts in sorted(whole.items()):
            self._prefill_whole(prompts, p, lambda prompt, found: self._prefixes.__setitem__((prompt, 0), found))
        for (head, p), prompts in sorted(tails.items()):
            if head in self._heads:
                self._heads.move_to_end(head)
            (k, v, _), row = fresh.get(head) or self._heads[head]
            h = len(head)
            for chunk, tokens, lengths in self._chunks([prompt[h:] for prompt in prompts], p):
                with activation_context(self._mesh):
                    result = _prefill_after_head(self.graphdef, self.params, self._layers, k, v, *self._put(
                        (np.int32(row), np.int32(h), tokens, lengths, np.int32(len(chunk)))))
                self.stats.prefill_computed += len(chunk) * p
                for i, tail in enumerate(chunk):
                    self._prefixes[head + tail, h] = (result, i)

    def _chunks(self, prompts: Sequence[tuple[int, ...]], p: int):
        """``prompts`` in calls of at most ``prefill_rows``: (chunk, right-padded tokens [R, p], lengths [R])."""
        rows = self.config.prefill_rows
        for start in range(0, len(prompts), rows):
            chunk = prompts[start:start + rows]
            tokens = np.zeros((rows, p), np.int32)
            lengths = np.ones((rows,), np.int32)
            for i, prompt in enumerate(chunk):
                tokens[i, :len(prompt)] = prompt
                lengths[i] = len(prompt)
            yield chunk, tokens, lengths

    def _prefill_whole(self, prompts: Sequence[tuple[int, ...]], p: int, keep) -> None:
        """Prefills ``prompts`` (all of bucket ``p``) from position 0; ``keep(prompt, (result, row))`` files each."""
        for chunk, tokens, lengths in self._chunks(prompts, p):
            with activation_context(self._mesh):
                result = _prefill(self.graphdef, self.params, self._layers, *self._put(
                    (tokens, lengths, np.int32(len(chunk)))))
            self.stats.prefill_computed += len(chunk) * p
            for i, prompt in enumerate(chunk):
                keep(prompt, (result, i))

    def _keep_head(self, head: tuple[int, ...], found: tuple[Any, int]) -> None:
        """Files a head's prefill, dropping the least recently used heads past ``head_cache_tokens``."""
        self._heads[head] = found
        cost = lambda h: bucket(len(h), self.config.prompt_bucket)
        while len(self._heads) > 1 and sum(map(cost, self._heads)) > self.config.head_cache_tokens:
            self._heads.popitem(last=False)

    def _insert(self, result: Any, group: Sequence[tuple[int, int, EngineRequest]]) -> None:
        s = self.config.rows
        source, slots = np.zeros((s,), np.int32), np.full((s,), s, np.int32)
        identity, width = np.zeros((s, IDENTITY_WIDTH), np.int32), np.zeros((s,), np.int32)
        lengths, limits, stop_sets = np.ones((s,), np.int32), np.ones((s,), np.int32), np.zeros((s,), np.int32)
        for j, (slot, row, r) in enumerate(group):
            source[j], slots[j], lengths[j], limits[j], stop_sets[j] = row, slot, len(r.prompt), r.max_new_tokens, \
                r.stop_set
            identity[j, :len(r.identity)], width[j] = r.identity, len(r.identity)
        k, v, logits = result
        with activation_context(self._mesh):
            self._state = _insert(self._state, k, v, logits, *self._put(
                (source, slots, identity, width, lengths, limits, stop_sets)), self._key, self._tables, self._eos,
                self._cfg, tile=self.config.row_tile)

    def _compact(self) -> int:
        """Rows the next window decodes: the occupied slots' tiles, as a power-of-two count of at least two tiles
        (few programs; see ``EngineConfig.rows``). When the occupied slots would fit fewer tiles than they span,
        the ones past that many are first moved into free slots below it, so that a stage's tail (few rollouts
        still playing) stops computing empty rows. A request's numerics do not depend on its slot."""
        tile, rows = self.config.row_tile, self.config.rows

        def tiles(n):
            return min(rows, tile << max(1, (-(-n // tile) - 1).bit_length()))

        occupied = [i for i, r in enumerate(self._slot_request) if r is not None]
        active = tiles(len(occupied))
        movers = [i for i in occupied if i >= active]
        if movers:
            free = [i for i, r in enumerate(self._slot_request[:active]) if r is None]
            source, target = np.full((rows,), rows, np.int32), np.full((rows,), rows, np.int32)
            source[:len(movers)], target[:len(movers)] = movers, free[:len(movers)]
            with activation_context(self._mesh):
                self._state = _move(self._state, *self._put((np.minimum(source, rows - 1), target)))
            self.stats.moved += len(movers)
            for a, b in zip(movers, free):
                self._slot_request[b], self._length[b] = self._slot_request[a], self._length[a]
                self._slot_request[a] = None
        return active

    def _put(self, arrays: Any) -> Any:
        return jax.device_put(arrays, self._key.sharding)

    def _grow(self, cache_length: int) -> None:
        """Every row's cache widened to ``cache_length`` slots (the new ones invalid)."""
        with activation_context(self._mesh):
            self._state = _grow_cache(self._state, cache_length)
        self.cache_length = cache_length

    def _harvest(self, active: int) -> Iterator[Completion]:
        st = self._state
        done, count, finish, tokens, logprobs, behavior, steps = jax.device_get(
            (st.done, st.count, st.finish, st.tokens, st.logprobs, st.behavior_logprobs, st.steps))
        self.stats.windows += 1
        self.stats.decode_row_steps += (int(steps) - self._steps) * active
        self._steps = int(steps)
        for slot, r in enumerate(self._slot_request):
            if r is None:
                continue
            self._length[slot] = len(r.prompt) + int(count[slot]) - 1
            if not done[slot]:
                continue
            self._slot_request[slot] = None
            n = int(count[slot])
            self.stats.decode_tokens += n - 1
            reason = FINISH_REASONS[finish[slot]]
            row = self.matchers[r.stop_set].finalize(tokens[slot, :n])
            if row.stopped:
                n, reason = row.num_tokens, "stop"
            yield Completion(request=r, tokens=tokens[slot, :n].copy(), logprobs=logprobs[slot, :n].copy(),
                             behavior_logprobs=behavior[slot, :n].copy(), text=row.text, finish_reason=reason)
