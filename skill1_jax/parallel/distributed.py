"""Multi-host wiring: ``jax.distributed.initialize`` behind one switch, and host-local batches → global arrays.

One JAX process runs per host (multi-controller). Every process calls ``initialize_distributed()`` before any other
JAX call, builds the same global mesh (``make_mesh`` over ``jax.devices()``, which then lists all hosts' devices)
and runs the same jitted step; ``skill1_jax.train.multihost`` describes how the trainer splits the rollouts
between processes and keeps their host-side state equal.

Switch: pass arguments, or set ``SKILL1_JAX_DISTRIBUTED=1`` (on Cloud TPU pods and SLURM, JAX then discovers the
coordinator, process count and index by itself; elsewhere also set ``SKILL1_COORDINATOR=host:port``,
``SKILL1_NUM_PROCESSES`` and ``SKILL1_PROCESS_ID``).
"""

from __future__ import annotations

import logging
import os

import jax


log = logging.getLogger(__name__)
ENV_SWITCH = "SKILL1_JAX_DISTRIBUTED"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from e


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Joins the multi-host job when asked to; returns whether ``jax.distributed`` was initialised.

    Nothing happens (single-process run) unless an argument is given or ``SKILL1_JAX_DISTRIBUTED=1``. Arguments
    left as None fall back to ``SKILL1_COORDINATOR`` / ``SKILL1_NUM_PROCESSES`` / ``SKILL1_PROCESS_ID``, then to
    JAX's own cluster auto-detection. Must run before any other JAX call in the process.
    """
    explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
    if not explicit and os.environ.get(ENV_SWITCH, "0") != "1":
        return False
    coordinator_address = coordinator_address or os.environ.get("SKILL1_COORDINATOR")
    num_processes = num_processes if num_processes is not None else _env_int("SKILL1_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("SKILL1_PROCESS_ID")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def is_coordinator() -> bool:
    """True on process 0 (the one that writes checkpoints, metrics and the skill library)."""
    return jax.process_index() == 0
