"""One process of ``tests/test_multihost.py``: joins a localhost ``jax.distributed`` job (or runs alone), trains a
tiny scripted household run through ``run.train`` and writes what this process holds as JSON.

    python tests/multihost_child.py --out=OUT --workdir=W --model_dir=M --tokenizer_dir=T --mesh=1,2,1 \
        [--coordinator=localhost:PORT --num_processes=2 --process_id=I]

The initial policy is read from an HF checkpoint of ``TEST_MODEL`` (each process places its shards on the mesh).

JAX_PLATFORMS and XLA_FLAGS (the local CPU device count) come from the environment the test sets.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import jax
import numpy as np
from jax.experimental import multihost_utils

from skill1_jax import config as C
from skill1_jax.model.tokenizer import load_tokenizer
from skill1_jax.parallel.distributed import initialize_distributed
from skill1_jax.train import run
from skill1_jax.train.checkpoint import library_to_json
from skill1_jax.train.multihost import sampling_params
from skill1_jax.train.policy import ScriptedPolicy

from train_helpers import ConstantEncoder, HouseholdScript, household_walkthroughs, scripted_household_config

# Rollouts 0 and 3 follow the expert: attempt 0 at the step's first task, attempt 1 at its second. The second task
# is played by process 1 of two, so its rollouts must be numbered as in one process for the runs to agree.
EXPERTS = {0, 3}


def config() -> C.ExperimentConfig:
    """2 steps × 2 tasks × 2 rollouts, each step one update on one [24, 512] micro-batch (one shape to compile).

    λ2 = 0 keeps the long distill rows out of the update (a 3× longer micro-batch otherwise); the rollouts are still
    distilled and the distillations admitted to the library."""
    return scripted_household_config(
        max_turns=4, variant="lambda2_0", rl=dict(micro_batch_size=12, mini_batch_size=24),
        train=dict(steps=2, tasks_per_step=2, group_size=2, eval_every=0, eval_tasks=1, eval_before_train=False,
                   checkpoint_every=1, keep_checkpoints=2, length_bucket=512))


def digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("out", "workdir", "model_dir", "tokenizer_dir", "mesh", "coordinator"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args()
    if args.num_processes:
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    cfg = config()
    policy = ScriptedPolicy(HouseholdScript(household_walkthroughs(cfg), experts=EXPERTS), load_tokenizer(args.tokenizer_dir),
                            cfg.generation)
    opts = run.RunOptions(workdir=args.workdir, model_dir=args.model_dir, tokenizer_dir=args.tokenizer_dir,
                          progress=False,
                          mesh_shape=tuple(int(x) for x in args.mesh.split(",")))
    summary = run.train(cfg, opts, encoder=ConstantEncoder(), policy=policy)
    trainer = summary["trainer"]
    replica = sampling_params(trainer.learner.params)  # what this process's sampler would use
    out = {
        "processes": jax.process_count(), "step": trainer.step, "task_position": trainer.tasks.position,
        "updates": int(trainer.learner.state.step),
        "params_sha256": digest(replica),
        "params_devices": sorted({d.id for leaf in jax.tree.leaves(replica) for d in leaf.devices()}),
        "local_devices": sorted(d.id for d in jax.local_devices()),
        "initial_params_sha256": digest(multihost_utils.process_allgather(trainer.learner.ref_params, tiled=True)),
        "library": library_to_json(trainer.library), "references": trainer.references.to_json(),
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
