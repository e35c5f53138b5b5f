"""Exact resume: 4 steps straight equal 2 steps + a crash mid-step-3 + resume to 4 (params, optimizer state, library,
reference trajectories, task order and metrics, bit-identical on CPU); a corrupt newest checkpoint is skipped; a
finished run killed before writing results.json writes it when resumed."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil

import jax
import numpy as np
import pytest

from skill1_jax import config as C
from skill1_jax.metrics import read_jsonl
from skill1_jax.train import run as run_mod
from skill1_jax.train.checkpoint import Checkpointer
from skill1_jax.train.policy import ScriptedPolicy

from train_helpers import ConstantEncoder, HouseholdScript, household_walkthroughs, scripted_household_config


def resume_config() -> C.ExperimentConfig:
    return scripted_household_config(
        max_turns=5, rl=dict(micro_batch_size=4, mini_batch_size=16),
        train=dict(steps=4, tasks_per_step=1, group_size=2, eval_every=0, eval_tasks=1, eval_before_train=False,
                   checkpoint_every=1, keep_checkpoints=3))


@pytest.fixture(scope="module")
def script():
    return household_walkthroughs(resume_config())


def run(cfg, workdir, tokenizer_dir, walk, tokenizer, resume=False, max_steps=None):
    policy = ScriptedPolicy(HouseholdScript(walk, experts={0}), tokenizer, cfg.generation)
    opts = run_mod.RunOptions(workdir=str(workdir), tokenizer_dir=tokenizer_dir, resume=resume, progress=False)
    return run_mod.train(cfg, opts, encoder=ConstantEncoder(), policy=policy, max_steps=max_steps)


def metrics_rows(workdir):
    rows = [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("seconds/")} for r in rows]


def assert_same_tree(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_crash_and_resume_equals_uninterrupted_run(tmp_path, demo_policy_dir, demo_tokenizer, script, monkeypatch):
    cfg = resume_config()
    straight = run(cfg, tmp_path / "straight", demo_policy_dir, script, demo_tokenizer)
    assert straight["step"] == 4

    # Crash: step 3 runs and writes its metrics, then the process dies before its checkpoint is written.
    real_save = Checkpointer.save

    def crashing_save(self, trainer):
        if trainer.step == 3:
            raise KeyboardInterrupt("killed")
        real_save(self, trainer)

    monkeypatch.setattr(Checkpointer, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed", demo_policy_dir, script, demo_tokenizer)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    with pytest.raises(run_mod.UsageError, match="--resume"):  # the workdir holds a run: never overwritten
        run(cfg, tmp_path / "resumed", demo_policy_dir, script, demo_tokenizer)
    resumed = run(cfg, tmp_path / "resumed", demo_policy_dir, script, demo_tokenizer, resume=True)
    assert resumed["step"] == 4

    a, b = straight["trainer"], resumed["trainer"]
    assert_same_tree(a.learner.state.params, b.learner.state.params)
    assert_same_tree(a.learner.state.opt_state, b.learner.state.opt_state)
    assert int(a.learner.state.step) == int(b.learner.state.step) > 0  # optimizer updates applied
    assert a.library.records() == b.library.records() and len(a.library) > 0
    np.testing.assert_array_equal(a.library.embeddings, b.library.embeddings)
    assert a.references.to_json() == b.references.to_json()
    assert a.tasks.position == b.tasks.position and a.tasks.take(4) == b.tasks.take(4)
    assert metrics_rows(tmp_path / "straight") == metrics_rows(tmp_path / "resumed")
    steps = [r["step"] for r in metrics_rows(tmp_path / "resumed") if "reward/success" in r]
    assert steps == [1, 2, 3, 4], "no step lost or repeated in the metrics"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, demo_policy_dir, demo_tokenizer, script):
    """(config, workdir) of a finished 2-step run; tests change a copy of it."""
    cfg = resume_config()
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, steps=2))
    workdir = tmp_path_factory.mktemp("finished") / "w"
    run(cfg, workdir, demo_policy_dir, script, demo_tokenizer)
    return cfg, workdir


def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path, finished_run, demo_policy_dir, demo_tokenizer,
                                                            script, caplog):
    cfg, finished = finished_run
    shutil.copytree(finished, tmp_path / "w")
    ckpt = tmp_path / "w" / "checkpoints"
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [1, 2]
    for f in (ckpt / "2").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage")  # every file of step 2 damaged
    longer = cfg.replace(train=dataclasses.replace(cfg.train, steps=3))
    (tmp_path / "w" / "config.json").write_text(longer.to_json())  # a deliberate extension of the run
    with caplog.at_level(logging.WARNING):
        out = run(longer, tmp_path / "w", demo_policy_dir, script, demo_tokenizer, resume=True, max_steps=0)
    assert out["step"] == 1
    assert any("step 2" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


def test_resuming_a_finished_run_without_results_json_writes_it(tmp_path, finished_run, demo_policy_dir,
                                                                demo_tokenizer, script):
    cfg, finished = finished_run
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    results, evals = workdir / "results.json", workdir / "eval.jsonl"
    expected = json.loads(results.read_text())
    final_evals = lambda: [r for r in read_jsonl(evals) if r["step"] == 2]

    results.unlink()  # killed after the final checkpoint, before results.json: the recorded evaluation is written
    assert run(cfg, workdir, demo_policy_dir, script, demo_tokenizer, resume=True)["step"] == 2
    assert json.loads(results.read_text()) == expected and len(final_evals()) == 1

    results.unlink()  # killed before the final evaluation was recorded too: the final checkpoint is evaluated
    evals.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(evals) if r["step"] != 2))
    assert run(cfg, workdir, demo_policy_dir, script, demo_tokenizer, resume=True)["step"] == 2
    assert json.loads(results.read_text()) == expected and len(final_evals()) == 1


def test_compile_cache_writes_compiled_programs_under_the_run_dir_and_a_second_process_reads_them(tmp_path):
    """`run.enable_compile_cache` (used by `launch.demo` and the experiment sweeps): a program compiled by one process
    lands in ``<workdir>/xla_cache``, and a second process compiling it again (a resumed run) adds nothing."""
    import os
    import subprocess
    import sys

    child = ("import jax, jax.numpy as jnp\n"
             "from skill1_jax.train.run import enable_compile_cache\n"
             f"print(enable_compile_cache({str(tmp_path)!r}))\n"
             "jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()\n")
    env = os.environ | {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}  # cache even a tiny program
    cache = tmp_path / "xla_cache"
    entries = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == str(cache)
        entries.append(sorted(p.name for p in cache.iterdir()))
    assert entries[0] and entries[1] == entries[0]
