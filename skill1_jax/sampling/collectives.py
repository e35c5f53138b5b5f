"""What a compiled decode program moves between devices, read from its optimised HLO text.

``decode_collectives(hlo_text, weight_sizes)`` takes ``compiled.as_text()`` of a jitted, SPMD-partitioned program
(``Sampler.lower_decode`` lowers and compiles the sampler's decode segment without running it) and returns, for
the collectives **inside** the decode while loop (run once per generated token) and those **outside** it (once per
segment), how many there are and how many bytes each device receives from them, plus whether any device holds a
whole weight.

Shapes in partitioned HLO are per device. Bytes are counted from each collective's result buffer on one device:
the gathered array of an all-gather, the reduced array of an all-reduce, the scattered shard of a reduce-scatter,
the exchanged buffers of an all-to-all or collective-permute. Asynchronous pairs (``all-gather-start`` /
``all-gather-done``) count once, at their ``-done``.

A *full weight copy* is an input of the program with a whole weight's shape, or an all-gather result with a whole
weight's element count (a gather may come out reshaped, e.g. the output projection as [N·H, D]); the shapes come
from ``model_weight_shapes``. A decode that gathers its FSDP shards, or runs on replicated weights, shows one per
weight; tensor-parallel decode shows none. A gathered activation of exactly a weight's size would count too; at
real model shapes none is.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from skill1_jax.model.config import ModelConfig
from skill1_jax.model.qwen2 import PARAM_AXES, param_shapes

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1,
                "f8e4m3b11fnuz": 1, "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "s4": 0.5, "u4": 0.5}
_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\(")
_ARRAY = re.compile(r"\b([a-z]\w*)\[([\d,]*)\]")
_CALLED = re.compile(r"\b(?:calls|to_apply|body|condition)=%([\w.\-]+)")
_BRANCHES = re.compile(r"\b(?:branch_computations|called_computations)=\{([^}]*)\}")
_WHILE = re.compile(r"\bcondition=%([\w.\-]+), body=%([\w.\-]+)")
_TILES = re.compile(r"sharding=\{devices=\[([\d,]+)\]")
_INPUT_NAME = re.compile(r'op_name="([^"]*)"')


def _whole_on_each_device(line: str) -> bool:
    """Whether an entry parameter's sharding annotation leaves every device the whole array (replicated, or tiled
    only over replica dimensions; no annotation: one device)."""
    tiles = _TILES.search(line)
    if tiles is None:
        return True
    dims = [int(d) for d in tiles.group(1).split(",")]
    replica_dims = 1 if "last_tile_dim_replicate" in line else 0
    subgroups = re.search(r"last_tile_dims=\{([^}]*)\}", line)
    if subgroups:
        replica_dims = len(subgroups.group(1).split(","))
    return math.prod(dims[:len(dims) - replica_dims]) == 1


def _arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of every array in an HLO result type (one array or a tuple)."""
    return [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in _ARRAY.findall(type_text)
            if dt in _DTYPE_BYTES]


def _parse(hlo_text: str) -> tuple[str, dict[str, list[str]]]:
    """(entry computation name, computation name -> its instruction lines)."""
    computations: dict[str, list[str]] = {}
    entry, current = "", None
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and not line.startswith(" "):
            current = head.group(2)
            computations[current] = []
            if head.group(1):
                entry = current
        elif current is not None and line.strip() == "}":
            current = None
        elif current is not None:
            computations[current].append(line)
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text; pass compiled.as_text() of a jitted program")
    return entry, computations


def _callees(lines: Iterable[str]) -> set[str]:
    out = set()
    for line in lines:
        out.update(_CALLED.findall(line))
        for group in _BRANCHES.findall(line):
            out.update(name.strip().lstrip("%") for name in group.split(",") if name.strip())
    return out


def _reachable(roots: Iterable[str], computations: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in computations:
            continue
        seen.add(name)
        todo.extend(_callees(computations[name]))
    return seen


def model_weight_shapes(cfg: ModelConfig) -> tuple[tuple[int, ...], ...]:
    """Shapes of the model's whole weight matrices: every kernel, stacked and one layer's, the embedding and an
    untied head (norms and biases are small and replicated in every layout)."""
    shapes = set()
    for name, shape in param_shapes(cfg).items():
        if name.endswith("kernel") or name in ("embed", "lm_head"):
            shapes.add(shape)
            if PARAM_AXES[name][0] == "layers":
                shapes.add(shape[1:])
    return tuple(sorted(shapes))


def decode_collectives(hlo_text: str, weight_shapes: Iterable[tuple[int, ...]] = ()) -> dict[str, Any]:
    """Collectives of a compiled decode program, inside its while loop (per token) and outside it (per call).

    Args:
      hlo_text: ``compiled.as_text()`` of the partitioned program (e.g. ``Sampler.lower_decode(...)[1]``).
      weight_shapes: shapes of whole weights (``model_weight_shapes(model_cfg)``); empty: no full-copy check.

    Returns:
      ``{"loop": {kind: {"count": n, "bytes": b}}, "outside": {...}, "full_weight_copies": [...],
      "full_weight_copy": bool}``: ``kind`` is each of ``COLLECTIVES``; ``loop`` covers the computations run by
      the entry computation's while loops (the decode loop: once per generated token; nested loops in it count
      once per token too), ``outside`` the rest; ``bytes`` are per device (module docstring).
      ``full_weight_copies`` lists ``{"where", "op", "shape"}`` of every all-gather result ("loop" / "outside")
      and program input ("input") the size of a whole weight.
    """
    entry, computations = _parse(hlo_text)
    loops = [m for line in computations[entry] for m in _WHILE.findall(line)]
    in_loop = _reachable([name for pair in loops for name in pair], computations)
    outside = _reachable([entry], computations) - in_loop
    shapes = {tuple(s) for s in weight_shapes}
    sizes = {math.prod(s) for s in shapes}
    report: dict[str, Any] = {where: {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
                              for where in ("loop", "outside")}
    copies = []
    for where, names in (("loop", in_loop), ("outside", outside)):
        for name in sorted(names):
            for line in computations[name]:
                m = _INSTRUCTION.match(line)
                if not m:
                    continue
                op_name, type_text, op = m.groups()
                if name == entry and op == "parameter" and _whole_on_each_device(line):
                    label = _INPUT_NAME.search(line)
                    copies += [{"where": "input", "op": label.group(1) if label else op_name, "shape": list(shape)}
                               for _, shape in _arrays(type_text) if shape in shapes]
                kind = op.removesuffix("-done")
                if kind not in COLLECTIVES:
                    continue
                arrays = _arrays(type_text)
                report[where][kind]["count"] += 1
                report[where][kind]["bytes"] += int(sum(math.prod(s) * _DTYPE_BYTES[dt] for dt, s in arrays))
                if kind == "all-gather":
                    copies += [{"where": where, "op": op_name, "shape": list(shape)}
                               for _, shape in arrays if math.prod(shape) in sizes]
    report["full_weight_copies"] = copies
    report["full_weight_copy"] = bool(copies)
    return report
