"""Multi-host training on CPU: two ``jax.distributed`` processes on localhost (1 CPU device each, gloo collectives)
train 2 scripted steps through ``run.train``; both end with the same params and library, and with exactly those of
one process training on a mesh of the same shape (2 devices), which is the independent reference."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CHILD = pathlib.Path(__file__).with_name("multihost_child.py")
from train_helpers import TEST_MODEL

TIMEOUT_S = 600  # a hung collective must fail the test, not hang the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(log: pathlib.Path, out: pathlib.Path, workdir: pathlib.Path, model_dir: pathlib.Path, tokenizer_dir: str,
           local_devices: int, distributed: tuple[int, int, int] | None = None) -> subprocess.Popen:
    """One child process, output to ``log``; ``distributed`` = (port, number of processes, process id)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={local_devices}"}  # not the suite's 8 devices
    args = [sys.executable, str(CHILD), f"--out={out}", f"--workdir={workdir}", f"--model_dir={model_dir}",
            f"--tokenizer_dir={tokenizer_dir}", "--mesh=1,2,1"]
    if distributed is not None:
        port, count, index = distributed
        args += [f"--coordinator=localhost:{port}", f"--num_processes={count}", f"--process_id={index}"]
    with open(log, "w") as f:
        return subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT)


def wait_all(procs: dict[str, tuple[subprocess.Popen, pathlib.Path]]) -> None:
    """Waits for every child; a failure or the timeout kills the rest (their collectives would wait forever)."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline and any(p.poll() is None for p, _ in procs.values()):
            if any(p.returncode not in (None, 0) for p, _ in procs.values()):
                break
            time.sleep(0.5)
    finally:
        for p, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, (p, log) in procs.items():
        assert p.returncode == 0, f"{name} failed (exit {p.returncode}):\n{log.read_text()[-4000:]}"


def metrics_rows(workdir: pathlib.Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("seconds/")} for r in rows]


def test_two_process_run_holds_identical_params_and_library_equal_to_one_process(tmp_path, demo_policy_dir):
    from flax import nnx

    from skill1_jax.model.hf_io import save_hf_checkpoint
    from skill1_jax.model.qwen2 import Qwen2

    model_dir = tmp_path / "initial_policy"  # one random init, loaded by every child (no init compiles there)
    save_hf_checkpoint(Qwen2(TEST_MODEL, rngs=nnx.Rngs(0)), str(model_dir))
    port = free_port()
    procs = {}
    for name, devices, distributed in (("two_0", 1, (port, 2, 0)), ("two_1", 1, (port, 2, 1)), ("one", 2, None)):
        log = tmp_path / f"{name}.log"
        workdir = tmp_path / name.split("_")[0]
        procs[name] = launch(log, tmp_path / f"{name}.json", workdir, model_dir, demo_policy_dir, devices,
                             distributed), log
    wait_all(procs)
    first, second, single = (json.loads((tmp_path / f).read_text()) for f in ("two_0.json", "two_1.json", "one.json"))

    assert first["processes"] == second["processes"] == 2 and single["processes"] == 1
    for out in (first, second):  # each process samples from a full copy on its own devices
        assert out["params_devices"] == out["local_devices"] and len(out["local_devices"]) == 1
    assert first["local_devices"] != second["local_devices"]
    # Both processes hold the same params, library and reference store ...
    for key in ("step", "task_position", "updates", "params_sha256", "library", "references"):
        assert first[key] == second[key], key
    # ... and they are exactly those of one process on the same mesh shape (same SPMD program; a sum over two
    # devices has one order, so even the floats agree bit for bit).
    for key in ("step", "task_position", "updates", "params_sha256", "initial_params_sha256", "library",
                "references"):
        assert first[key] == single[key], key
    assert first["step"] == 2 and first["updates"] == 2
    assert first["params_sha256"] != first["initial_params_sha256"]  # the updates changed the params
    assert len(first["library"]["records"]) == 4  # per step, one skill from each process's share of the tasks

    # Process 0 alone wrote the run files: one metrics row per step and evaluation, equal to the single process's.
    two, one = tmp_path / "two", tmp_path / "one"
    assert metrics_rows(two) == metrics_rows(one)
    assert [r["step"] for r in metrics_rows(two)] == [1, 2, 2]
    assert (two / "eval.jsonl").read_text() == (one / "eval.jsonl").read_text()
    assert json.loads((two / "results.json").read_text()) == json.loads((one / "results.json").read_text())
    assert sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]


def test_process_shares_cover_the_tasks_in_order_with_sizes_differing_by_at_most_one():
    from skill1_jax.train.multihost import process_share

    for tasks in range(0, 12):
        for count in range(1, 5):
            shares = [process_share(tasks, p, count) for p in range(count)]
            assert [i for s in shares for i in s] == list(range(tasks))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
