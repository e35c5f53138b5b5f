"""benchmarks/memory_step.py's smoke mode: a tiny Qwen2 on 8 fake CPU devices, every phase compiled with the arrays
resident on the chip as arguments; the numbers are XLA's memory analysis, the references are counted here by hand."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from skill1_jax.rl.batch import abstract_batch

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("memory_step") / "memory_step.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "memory_step.py"), "--smoke", "--out", str(out)],
                   check=True, capture_output=True, cwd=REPO)
    return json.loads(out.read_text())


def test_memory_step_phase_peaks_hold_each_resident_array_once(smoke):
    target = smoke["targets"]["smoke"]
    assert {"chip_gib", "fits", "phases", "decode_layout"} <= set(target)
    phases = target["phases"]
    assert set(phases) == {"rollout", "reference", "update"}
    resident = target["on_device_resident_bytes"]
    # Every phase's peak holds at least what stays resident on the chip during it.
    assert phases["rollout"]["prefill"]["peak_bytes"] >= resident["rollout"]
    assert phases["rollout"]["decode"]["peak_bytes"] >= resident["rollout"]
    for phase in ("reference", "update"):
        assert phases[phase]["peak_bytes"] >= resident[phase]
        assert phases[phase]["peak_gib"] * 2 ** 30 == pytest.approx(phases[phase]["peak_bytes"], abs=2 ** 20)
    # The update's arguments are the train state, π_ref and one micro-batch, each exactly once (on CPU the
    # host-offloaded π_ref is in host = device memory, so it counts as an argument too).
    rows, seq = phases["update"]["rows"], phases["update"]["seq_len"]
    batch = abstract_batch(rows, seq)
    batch_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(batch)) // target["chips"]
    per_chip = target["resident_bytes_per_chip"]
    assert phases["update"]["argument_bytes"] == per_chip["train_state"] + per_chip["reference"] + batch_bytes
    # A bfloat16 π_ref is half the float32 params it copies (float32 train state: params + two moments = 3×); its
    # norm weights stay float32.
    assert per_chip["reference"] * 6 == pytest.approx(per_chip["train_state"], rel=0.05)


def test_memory_step_tensor_layout_decodes_without_a_full_weight_copy(smoke):
    layout = smoke["targets"]["smoke"]["decode_layout"]
    assert layout["layout"] == "tensor" and layout["mesh"]["tensor"] == 2
    assert layout["full_weight_copy"] is False
    # Tensor parallelism all-reduces each block's partial outputs on every decode step.
    assert layout["per_decode_step_bytes_per_device"]["all-reduce"] > 0

