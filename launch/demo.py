"""The first command for a new user: a tiny policy learns the household world with Skill1, on CPU, in minutes.

    python -m launch.demo --workdir=runs/demo          (what `make demo` runs)

Builds a tiny Qwen2 policy with its own household BPE tokenizer, warm-starts it on expert demonstrations of three
of the six task types, trains it with Skill1 and with plain GRPO from that warm start, and evaluates all three on
held-out household tasks. See `skill1_jax/train/demo.py` for what is written where.
"""

from __future__ import annotations

import logging

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Run directory (everything the demo writes goes here).")
_STEPS = flags.DEFINE_integer("rl_steps", 30, "RL steps of Skill1 and of GRPO.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 180, "Warm-start (supervised) updates.")
_EVAL_TASKS = flags.DEFINE_integer("eval_tasks", 36, "Held-out evaluation tasks.")
_SEED = flags.DEFINE_integer("seed", 0, "Run seed.")


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from skill1_jax.train.demo import DemoOptions, run_demo

    out = run_demo(_WORKDIR.value, DemoOptions(rl_steps=_STEPS.value, sft_steps=_SFT_STEPS.value,
                                               eval_tasks=_EVAL_TASKS.value, seed=_SEED.value))
    root = out["root"]
    print("\n" + out["table"] + "\n")
    print(f"results:      {root}/results.md, {root}/results.json")
    print(f"runs:         {root}/skill1, {root}/grpo (checkpoints/, metrics.jsonl, tb/, metrics.png, eval.jsonl)")
    print(f"skill library: {root}/skill1/checkpoints (restore with `python -m launch.eval --workdir={root}/skill1`)")


if __name__ == "__main__":
    app.run(main)
