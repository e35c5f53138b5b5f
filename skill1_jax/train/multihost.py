"""Multi-host training, one JAX process per host: who plays which rollouts, and how host-side state stays equal.

One training step on P processes (``jax.process_count()``):

1. Every process draws the same N tasks (the task sampler is a pure function of seed and position) and plays a
   contiguous share of them (``process_share``; the first N mod P processes take one task more), all G rollouts of
   a task on the same process, with its own env pool and a sampling key folded with its process index. Rollouts
   and groups are numbered as in a single-process collection (``collect(first_task=...)``).
2. The shares' ``Rollouts`` (token ids, log-probs, texts, retrieval results) are pickled and all-gathered
   (``allgather_objects``): afterwards every process holds the step's whole ``Rollouts`` in single-process order.
3. Every process computes the same rewards, rows and mini-batches from them. A mini-batch is placed on the global
   mesh with ``jax.device_put(host_batch, batch_shardings)``, which copies to each process only the rows of its own
   devices, and the update is one SPMD program over the devices of all hosts. The step is therefore the step a
   single process would take on the same mesh (``tests/test_multihost.py`` checks it bit for bit).
4. The skill library is owned by process 0: it alone applies the step's library update (EMA, then admissions of
   the distillations it encodes with the sentence encoder) and broadcasts the resulting state
   (``coordinator_update``), so floating-point differences between hosts' encoders or BLAS can never make the
   copies diverge. The contrastive reference store holds only strings and is updated identically by every
   process from the gathered episodes.
5. Process 0 writes metrics, evaluations, plots and results (``skill1_jax.train.run``); every process takes part in
   the Orbax checkpoint save and restore, which writes and reads each process's array shards itself.

Sampling runs on each process's local devices from a full copy of the current params (``sampling_params``: an
all-gather of the FSDP-sharded params, placed over the local devices by the same rule table). Evaluation uses
the same share-and-gather path with group size 1.

Per step this moves, besides the update's own collectives: every rollout's token ids and log-probs to every host
(about 8 bytes per generated or prompt token), the whole library from process 0 (≤ 5,000 skills: 7.7 MB of
embeddings plus the records' text) and the full params to every host. With one process every function here is
the single-process code path (no gather, no copy).
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from skill1_jax.envs import base
from skill1_jax.parallel.sharding import make_mesh, tree_shardings
from skill1_jax.skills import SkillLibrary
from skill1_jax.skills.search import Retrieval
from skill1_jax.train.rollout import RolloutContext, Rollouts, collect


def process_share(num_tasks: int, process: int, count: int) -> range:
    """Indices of the tasks ``process`` of ``count`` plays: contiguous, sizes differing by at most one."""
    size, extra = divmod(num_tasks, count)
    start = process * size + min(process, extra)
    return range(start, start + size + (process < extra))


# ---- host objects across processes -----------------------------------------------------------------------------
def _serialize(obj: Any) -> np.ndarray:
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)


def _padded(data: np.ndarray, size: int) -> np.ndarray:
    """``data`` zero-padded to the power of two ≥ ``size`` (≥ 1 KiB): a run compiles a few collectives, not one
    per payload length."""
    out = np.zeros(1 << max(10, (max(size, 1) - 1).bit_length()), np.uint8)
    out[:data.size] = data
    return out


def allgather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in process order (pickled, padded to the longest, one all-gather)."""
    if jax.process_count() == 1:
        return [obj]
    data = _serialize(obj)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))[:, 0]
    gathered = multihost_utils.process_allgather(_padded(data, int(sizes.max())))
    return [pickle.loads(gathered[p, :n].tobytes()) for p, n in enumerate(sizes)]


def broadcast_from_coordinator(obj: Any) -> Any:
    """Process 0's ``obj`` on every process (the others' argument is ignored)."""
    if jax.process_count() == 1:
        return obj
    data = _serialize(obj) if jax.process_index() == 0 else np.zeros(0, np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.array(data.size, np.int32)))
    return pickle.loads(multihost_utils.broadcast_one_to_all(_padded(data, size))[:size].tobytes())


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (e.g. a SIGTERM that reached only some hosts)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.array([flag], np.int32)).any())


# ---- rollouts ----------------------------------------------------------------------------------------------------
def _merge(parts: Sequence[Rollouts], seconds: dict[str, float]) -> Rollouts:
    """The shares' rollouts in process order (= rollout order); ``seconds`` are this process's."""
    retrievals = [p.retrieval for p in parts if p.episodes and p.retrieval is not None]
    retrieval = None
    if retrievals:
        retrieval = Retrieval(**{f.name: np.concatenate([getattr(r, f.name) for r in retrievals])
                                 for f in dataclasses.fields(Retrieval)})
    work = {k: sum(p.work.get(k, 0) for p in parts) for k in sorted({k for p in parts for k in p.work})}
    return Rollouts(episodes=[e for p in parts for e in p.episodes], retrieval=retrieval, seconds=seconds, work=work)


def collect_shared(ctx: RolloutContext, tasks: Sequence[base.TaskRef], group_size: int, mode: str, rng: jax.Array,
                   step: int) -> Rollouts:
    """``rollout.collect`` of all ``tasks``, each process playing its share (see module docstring, 1–2)."""
    count = jax.process_count()
    if count == 1:
        return collect(ctx, tasks, group_size, mode, rng, step)
    index = jax.process_index()
    share = process_share(len(tasks), index, count)
    mine = Rollouts(episodes=[], retrieval=None, seconds={})
    if len(share):
        mine = collect(ctx, tasks[share.start:share.stop], group_size, mode, jax.random.fold_in(rng, index), step,
                       first_task=share.start)
    start = time.perf_counter()
    parts = allgather_objects(mine)
    return _merge(parts, {**mine.seconds, "gather": time.perf_counter() - start})


# ---- device and library state --------------------------------------------------------------------------------------
def sampling_params(params: Any) -> Any:
    """Params the local sampler can use: ``params`` itself with one process; otherwise a full copy of the
    (globally sharded) params placed over this process's devices by the rule table."""
    if jax.process_count() == 1:
        return params
    full = multihost_utils.process_allgather(params, tiled=True)
    return jax.device_put(full, tree_shardings(full, make_mesh(fsdp=-1, devices=jax.local_devices())))


def coordinator_update(library: SkillLibrary, update: Callable[[SkillLibrary], dict[str, float]]
                       ) -> tuple[SkillLibrary, dict[str, float]]:
    """Applies ``update`` (which mutates the library and returns metrics) on process 0 and gives every process
    process 0's resulting library and metrics."""
    if jax.process_count() == 1:
        return library, update(library)
    payload = None
    if jax.process_index() == 0:
        metrics = update(library)
        payload = (library.state_dict(), metrics)
    state, metrics = broadcast_from_coordinator(payload)
    if jax.process_index() != 0:
        library = SkillLibrary.from_state_dict(state, library.config)
    return library, metrics
