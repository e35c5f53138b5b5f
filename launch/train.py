"""Train Skill1 (or an ablation) with a preset config and per-field overrides; resumes after preemption.

    python -m launch.train --config=paper --env=alfworld --model_dir=/ckpt/Qwen2.5-7B-Instruct \
        --alfworld_data=$ALFWORLD_DATA --workdir=/runs/skill1_alf --mesh=1,8,1
    python -m launch.train ... --resume          # continue from the newest valid checkpoint
    python -m launch.train --helpfull            # every config field with its paper default
    python -m launch.train ... --mesh=1,16,1 --coordinator_address=10.0.0.2:8476 --num_processes=4 --process_id=1
                                                 # one process per host (or SKILL1_JAX_DISTRIBUTED=1 on Cloud TPU)

Exit codes: 0 when finished or preempted (SIGTERM: the step finishes, a checkpoint is saved); 2 for a bad command
line (one line naming the problem, nothing written).
"""

from __future__ import annotations

import logging

from absl import app, flags

from launch import common

RESUME = flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its newest valid checkpoint.")
STEPS = flags.DEFINE_integer("max_steps", None, "Stop after this many steps of this invocation (default: all).")
COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                  "Multi-host: host:port of process 0 (default $SKILL1_COORDINATOR); joins the job.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                     "Multi-host: number of processes, one per host (default $SKILL1_NUM_PROCESSES).")
PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                  "Multi-host: this process's index; 0 writes the run files ($SKILL1_PROCESS_ID).")


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # flags first: a bad command line fails in about a second, before JAX is even imported
        if not common.WORKDIR.value:
            raise common.UsageError("--workdir is required")
        cfg = common.build_config()
        opts = dict(workdir=common.WORKDIR.value, model_dir=common.MODEL_DIR.value,
                    tokenizer_dir=common.TOKENIZER_DIR.value, resume=RESUME.value, mesh_shape=common.mesh_shape())
    except (common.UsageError, ValueError) as e:  # bad flag values / overrides / presets
        common.fail(str(e))
    from skill1_jax.parallel.distributed import initialize_distributed
    from skill1_jax.train import run

    opts = run.RunOptions(**opts)
    # Before any other JAX call; a no-op unless one of these flags is given or SKILL1_JAX_DISTRIBUTED=1.
    initialize_distributed(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
    try:
        summary = run.train(cfg, opts, max_steps=STEPS.value)
    except (run.UsageError, FileNotFoundError) as e:  # workdir / model / data paths
        common.fail(str(e))
    state = "preempted, checkpoint saved" if summary["preempted"] else "done"
    logging.info("%s at step %d; run directory %s", state, summary["step"], summary["workdir"])


if __name__ == "__main__":
    app.run(main, flags_parser=common.flags_parser)
