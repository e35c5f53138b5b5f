"""Host offload: arrays that a phase of the step does not read wait in host memory.

A 7B step on 8 TPU v5e chips (16 GiB each) fits only when the AdamW moments and the frozen reference params are not
resident through every phase (``benchmarks/memory_step.py``, target ``v5e-8``). ``train.offload`` names what waits on
host (``memory_kind="pinned_host"``, the memory kind JAX gives host RAM that devices copy to and from directly):

* ``"moments"``: the optimizer state, read only by the update;
* ``"reference"``: π_ref's params, read only by reference scoring.

Each is copied into device memory, in its own sharding, for the phase that reads it, and back afterwards. The values
are untouched, so an offloaded run trains the same bits as a resident one.
"""

from __future__ import annotations

from typing import Any

import jax

HOST = "pinned_host"
DEVICE = "device"


def place(tree: Any, memory_kind: str) -> Any:
    """``tree`` with every array in ``memory_kind`` memory of the devices and sharding it already has (arrays that
    are already there are returned as they are)."""
    def one(x):
        if not isinstance(x, jax.Array) or x.sharding.memory_kind == memory_kind:
            return x
        return jax.device_put(x, x.sharding.with_memory_kind(memory_kind))

    return jax.tree.map(one, tree)


def memory_kinds(tree: Any) -> set[str]:
    """The memory kinds ``tree``'s arrays sit in."""
    return {x.sharding.memory_kind for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)}
