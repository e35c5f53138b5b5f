"""Orbax checkpoints of a whole run, saved together and atomically, with exact resume and corrupt-checkpoint skip.

One checkpoint (``<workdir>/checkpoints/<step>/``, an Orbax ``CheckpointManager`` step) holds two items:

* ``state`` — the device state: params, AdamW state, the update counter and the base RNG key (as key data);
* ``host``  — JSON: the training step, the task sampler's position, the skill library (records, embeddings,
  counters), the contrastive reference trajectories, the config and a format version.

Orbax writes a step into a temporary folder and renames it when complete, so a process killed mid-save leaves
no half checkpoint behind (the temporary folder is ignored and cleaned up). Everything else a resumed run needs is
a pure function of (seed, step) — sampling keys, mini-batch shuffles, the task order — or of the run's inputs (the
frozen reference policy is the initial policy, rebuilt from the same model directory or seed), so resuming from
step k replays steps k+1… exactly as an uninterrupted run would.

``restore`` tries the newest step first; one that fails to load or validate is reported with a warning and the
next older one is used.

Several processes (``train.multihost``): all of them call ``save`` and ``restore`` (Orbax collectives: each process
writes and reads the shards of its devices, process 0 the JSON host state); moving unreadable steps aside is
process 0's, behind a barrier.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from skill1_jax.agent.history import ReferenceTrajectories
from skill1_jax.parallel.distributed import is_coordinator
from skill1_jax.rl.train_step import TrainState
from skill1_jax.skills import SkillLibrary

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """No usable checkpoint could be restored."""


def _ocp():
    import orbax.checkpoint as ocp  # deferred: orbax import is slow and only runs that checkpoint need it

    return ocp


def _device_tree(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "rng": jax.random.key_data(state.rng)}


def library_to_json(library: SkillLibrary | None) -> dict[str, Any] | None:
    if library is None:
        return None
    state = library.state_dict()
    state["embeddings"] = np.asarray(state["embeddings"], np.float32).tolist()  # float32 → JSON → float32 is exact
    return state


def library_from_json(state: dict[str, Any] | None, config: Any) -> SkillLibrary | None:
    if state is None:
        return None
    state = dict(state)
    state["embeddings"] = np.asarray(state["embeddings"], np.float32).reshape(-1, config.dim)
    return SkillLibrary.from_state_dict(state, config)


class Checkpointer:
    """Saves and restores a ``Trainer`` under ``directory`` (absolute path required by Orbax; made absolute here).

    Args:
      directory: where the step folders go.
      keep: number of newest checkpoints kept.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        ocp = _ocp()
        self.directory = pathlib.Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                                 enable_async_checkpointing=False))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, trainer: Any) -> None:
        """Saves the trainer's full state at its current step (blocking, so a following exit loses nothing)."""
        ocp = _ocp()
        host = {"format_version": FORMAT_VERSION, "step": trainer.step, "task_position": trainer.tasks.position,
                "library": library_to_json(trainer.library), "references": trainer.references.to_json(),
                "config": trainer.config.to_dict()}
        self.manager.save(trainer.step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_device_tree(trainer.learner.state)),
            host=ocp.args.JsonSave(host)), force=True)
        self.manager.wait_until_finished()

    def _load(self, step: int, abstract: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        ocp = _ocp()
        args = {"host": ocp.args.JsonRestore()}
        if abstract is not None:
            args["state"] = ocp.args.StandardRestore(abstract)
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        host = restored["host"]
        if not isinstance(host, dict) or host.get("format_version") != FORMAT_VERSION or host.get("step") != step:
            raise CheckpointError(f"checkpoint {self.directory / str(step)}: host state is missing or inconsistent")
        return (restored["state"] if abstract is not None else None), host

    def _newest_valid(self, abstract: dict[str, Any] | None, step: int | None):
        candidates = [step] if step is not None else self.steps()[::-1]
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        for s in candidates:
            try:
                return (s, *self._load(s, abstract))
            except Exception as e:  # noqa: BLE001 - any failure to read a step means: skip it, use an older one
                log.warning("checkpoint step %d in %s is unreadable (%s: %s); trying an older one", s,
                            self.directory, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        raise CheckpointError(f"none of the checkpoints {candidates} in {self.directory} could be restored")

    def restore(self, trainer: Any, step: int | None = None) -> int:
        """Restores params, optimizer, step, RNG, task position, library and references into ``trainer``."""
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                _device_tree(trainer.learner.state))
        s, device, host = self._newest_valid(abstract, step)
        if step is None:
            self._set_aside_newer_than(s)
        state = trainer.learner.state
        trainer.learner.state = TrainState(params=device["params"], opt_state=device["opt_state"],
                                           step=device["step"], rng=jax.random.wrap_key_data(device["rng"],
                                                                                            impl=jax.random.key_impl(state.rng)))
        trainer.step = int(host["step"])
        trainer.tasks.position = int(host["task_position"])
        trainer.library = library_from_json(host["library"], trainer.config.library)
        trainer.references = ReferenceTrajectories.from_json(host["references"])
        trainer._sync_policy()
        log.info("restored step %d from %s", s, self.directory)
        return s

    def _set_aside_newer_than(self, step: int) -> None:
        """Renames the unreadable steps newer than the restored one to ``<step>.unreadable-<time>``: the resumed run
        saves those steps again (Orbax refuses to overwrite a step) and the files stay for inspection."""
        newer = [s for s in self.steps() if s > step]
        if not newer:
            return
        if is_coordinator():
            for s in newer:
                aside = self.directory / f"{s}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
                (self.directory / str(s)).rename(aside)
                log.warning("moved unreadable checkpoint step %d aside to %s", s, aside)
        multihost_utils.sync_global_devices("skill1_jax: unreadable checkpoints set aside")
        self.manager.reload()

    def restore_for_eval(self, abstract_params: Any, library_config: Any, step: int | None = None):
        """Params and library only (no optimizer state is read): returns (step, params, library)."""
        ocp = _ocp()
        s, _, host = self._newest_valid(None, step)
        item = ocp.args.PyTreeRestore(item={"params": abstract_params},
                                      restore_args={"params": jax.tree.map(
                                          lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, "sharding", None)),
                                          abstract_params)},
                                      partial_restore=True)
        restored = self.manager.restore(s, args=ocp.args.Composite(state=item))
        return s, restored["state"]["params"], library_from_json(host["library"], library_config)

    def close(self) -> None:
        self.manager.close()
