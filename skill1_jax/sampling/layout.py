"""Where rollouts are sampled: the device mesh of the sampler's weights, rows and KV cache, chosen apart from the
update's (``GenerationConfig.sampling_layout``).

* ``train``: the training params as they are. On an FSDP mesh the decode program all-gathers every weight once
  per decode segment, before its loop, so each device holds a full weight copy while it decodes (15.2 GB at 7B in
  bfloat16) on top of its train-state shard. Costs no memory between updates.
* ``replicated``: a full copy in the compute dtype on every device, rows split over all devices. A decode step
  moves no weights and reduces nothing but the "all rows done" flag: the fastest decode when the copy fits next
  to the train state (an 80 GB GPU at 7B).
* ``tensor``: a (data, 1, tensor) mesh, Megatron-style tensor parallelism (Shoeybi et al. 2019) over ``tensor``
  devices (default: as many as the KV heads allow, gcd(K, devices); Qwen2.5-7B's 4 KV heads give 4) and data
  parallelism over the rest. Query and KV heads, the MLP width and the vocabulary are split over ``tensor``, so the
  KV cache is split over KV heads (``tensor``) and rows (``data``), and no device ever holds a whole weight; a
  decode step all-reduces [rows, D] activations twice per layer and gathers each row's logits once.

The rule table is the update's (``parallel.sharding.DEFAULT_RULES``): on a mesh whose fsdp axis has size 1 it maps
rows to ``data`` and heads / MLP / vocabulary to ``tensor``, so the sampler's activation constraints follow the
layout without a table of their own. ``SamplingLayout.place`` copies the params into the layout once per update
(``train.policy.ModelPolicy`` does it when its params are set), never per stage or per token.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
from jax.sharding import Mesh

from skill1_jax.model.qwen2 import compute_params
from skill1_jax.parallel.sharding import make_mesh, state_shardings

LAYOUTS = ("train", "replicated", "tensor")


def _placer(shardings: Any):
    return jax.jit(compute_params, static_argnums=(0,), out_shardings=shardings)


class SamplingLayout:
    """The sampler's mesh for one layout.

    Args:
      name: one of ``LAYOUTS``.
      num_kv_heads: the model's K (bounds the tensor-parallel size).
      tensor_parallel: devices per tensor-parallel group under ``tensor``; 0 = gcd(K, devices).
      devices: the devices to sample on (default this process's: each process samples its own rollouts).

    Attributes:
      mesh: the sampling mesh, or None under ``train`` (the params keep their own placement).
    """

    def __init__(self, name: str, num_kv_heads: int, tensor_parallel: int = 0,
                 devices: Sequence[Any] | None = None):
        if name not in LAYOUTS:
            raise ValueError(f"sampling layout must be one of {LAYOUTS}, got {name!r}")
        devices = list(jax.local_devices() if devices is None else devices)
        self.name = name
        self.mesh: Mesh | None = None
        if name == "replicated":
            self.mesh = make_mesh(data=len(devices), fsdp=1, tensor=1, devices=devices)
        elif name == "tensor":
            tp = tensor_parallel or math.gcd(num_kv_heads, len(devices))
            if len(devices) % tp or num_kv_heads % tp:
                raise ValueError(f"generation.sampling_tensor_parallel={tp} must divide both the {len(devices)} "
                                 f"devices and the model's {num_kv_heads} KV heads")
            self.mesh = make_mesh(data=len(devices) // tp, fsdp=1, tensor=tp, devices=devices)
        self._placers: dict[Any, Any] = {}

    def place(self, graphdef: Any, params: Any) -> Any:
        """``params`` as the sampler should hold them: unchanged under ``train``; otherwise a copy in the compute
        dtype (the forward casts every weight but the norms and a tied embedding to it on use, so sampling gives
        the same tokens) laid out on ``mesh`` by the rule table, made by one jitted program."""
        if self.mesh is None:
            return params
        shardings = state_shardings(params, self.mesh)
        key = jax.tree.structure(params), tuple(jax.tree.leaves(shardings))
        if key not in self._placers:  # one compiled reshard per params structure
            self._placers[key] = _placer(shardings)
        return self._placers[key](graphdef, params)

    def abstract(self, graphdef: Any, params: Any) -> Any:
        """What ``place`` would return, as ``jax.ShapeDtypeStruct`` leaves carrying their shardings: nothing is
        allocated or moved (``params`` may be abstract too), e.g. for ``Sampler.lower_decode`` on a deviceless
        topology."""
        if self.mesh is None:
            return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
        shapes = jax.eval_shape(functools.partial(compute_params, graphdef), params)
        return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes,
                            state_shardings(shapes, self.mesh))
