"""Seconds per training step of full Skill1 vs plain GRPO (``no_library``), same tiny policy and household tasks.

Run from the repo root:  .venv/bin/python benchmarks/step_overhead.py   (writes benchmarks/results/step_overhead.json)

Both variants run the real trainer (sampler, env pool, library, batch building, reference log-probs, update) on
the ``cpu_tiny`` config with a smaller body than the demo policy (household BPE), briefly warm-started on expert
demonstrations (``tiny_policy.warm_start``) so that replies end at their stop tags with realistic lengths: a random
policy runs every reply into its token limit, and such truncated rows carry no loss, so nothing would be trained.
Skill1's library starts with ``--library-size`` skills keyed by real MiniLM embeddings of household task texts (the
demonstrations' strategies), so retrieval returns K candidates, the re-rank stage runs and a skill is injected.
After ``--warmup`` steps (compilation), ``--steps`` steps of each variant are timed, alternating variant per step
on the noisy shared machine. Reported per variant and stage: median seconds per step. ``ratio`` = Skill1 / GRPO step time.
``library_overhead_fraction`` = (query-embedding + retrieval + library update + reward decomposition) / Skill1 step:
everything Skill1 adds besides generating and training tokens (paper Table 3 attributes its 1.28–1.66× to those).

Both row layouts of the update (``rl.row_layout``: ``padded``, ``packed``) run in the same process, each variant in
each layout as its own trainer, interleaved. Per layout and variant, from the trainer's step metrics:
  * ``padding_fraction``: padded ÷ computed tokens of the update's micro-batches (goal ≤ 0.10);
  * ``achieved_flops_per_s``: FLOPs of update + reference scoring counting only real tokens — the matmuls of every
    token (update 3× a forward, scoring 1×) plus causal attention at each row's own length — over their seconds;
    ``update_flops_efficiency_ratio`` = Skill1 ÷ GRPO of that (goal ≥ 0.95: Skill1's batches use the hardware as
    well as GRPO's; its longer rows' extra attention is counted as work, not overhead);
  * ``update_cost_per_trained_token_ratio`` (update seconds per real token, Skill1 ÷ GRPO) and ``ratio``, as
    information. Top-level figures are those of ``row_layout``; ``by_row_layout`` holds both.
A CI-sized run: ``--steps 1 --warmup 0 --sft-steps 20 --library-size 50``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The trainers of one variant in the two layouts compile identical sampler programs: compile them once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
from common import machine_info, write_result  # noqa: E402
from flax import nnx  # noqa: E402

from skill1_jax import config as C  # noqa: E402
from skill1_jax.model.config import ModelConfig  # noqa: E402
from skill1_jax.model.qwen2 import param_shapes  # noqa: E402
from skill1_jax.envs.household.world import TASK_TYPES  # noqa: E402
from skill1_jax.model.hf_io import load_hf_checkpoint  # noqa: E402
from skill1_jax.model.tokenizer import load_tokenizer  # noqa: E402
from skill1_jax.skills import SentenceEncoder, SkillDraft  # noqa: E402
from skill1_jax.train import trainer as trainer_mod  # noqa: E402
from skill1_jax.demo.expert_data import SCENARIOS, STRATEGIES  # noqa: E402
from skill1_jax.demo.tiny_policy import SFTStage, build_tiny_policy, warm_start  # noqa: E402
from skill1_jax.train.trainer import Trainer  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "step_overhead.json")
ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--steps", type=int, default=3, help="timed steps per variant")
ARGS.add_argument("--warmup", type=int, default=2, help="untimed steps per variant (compilation)")
ARGS.add_argument("--tasks", type=int, default=2, help="N tasks per step")
ARGS.add_argument("--group", type=int, default=4, help="G rollouts per task")
ARGS.add_argument("--library-size", type=int, default=1000, help="skills in Skill1's library at the start")
ARGS.add_argument("--sft-steps", type=int, default=120, help="warm-start updates of the policy (untimed)")
ARGS.add_argument("--out", default=OUT)
ARGS.add_argument("--row-layout", default="packed", help="the layout of the top-level figures")

EXTRA_STAGES = ("retrieval", "library", "rewards")  # Skill1's host-side additions besides tokens
VARIANTS = ("skill1", "no_library")
LAYOUTS = ("padded", "packed")


def seeded_library(trainer, encoder, n):
    """``n`` skills keyed by household train-task texts (cosine above the library's floor for real queries)."""
    env = trainer.env
    tasks = env.tasks("train")
    worlds = [env.world(tasks[i % len(tasks)]) for i in range(n)]
    keys = encoder.encode([w.task for w in worlds])
    for i, (w, k) in enumerate(zip(worlds, keys)):
        text = f"{STRATEGIES[w.task_type]} (variant {i})"
        trainer.library.admit(SkillDraft(strategy=text, description=SCENARIOS[w.task_type], source_task=w.task),
                              k[None], k[None])


def real_token_flops(model: ModelConfig, lengths) -> float:
    """Forward FLOPs of rows of ``lengths`` tokens, each alone: 2 per weight-matmul parameter per token (the tied
    head included) plus causal attention, Σ_i n_i(n_i + 1)/2 query-key pairs × 2 dots (QKᵀ, PV) × 2 FLOPs × N·H per
    layer."""
    shapes = param_shapes(model)
    matmul = sum(math.prod(shape) for name, shape in shapes.items() if name.endswith("kernel"))
    matmul += model.vocab_size * model.hidden_size  # the head (the tied embedding's lookup is no matmul)
    n = np.asarray(lengths, np.float64)
    pairs = float(np.sum(n * (n + 1) / 2))
    return 2.0 * matmul * float(n.sum()) + 4.0 * pairs * model.num_heads * model.head_dim * model.num_layers


def main():
    args = ARGS.parse_args()
    base = C.cpu_tiny()
    # The demo tokenizer with a smaller body than the demo policy: the ratio, not the absolute time, is the result.
    model = ModelConfig.from_preset("demo", hidden_size=128, num_layers=2, intermediate_size=384)
    world = (("preset", "easy"), ("task_types", TASK_TYPES))  # the demo's world: all six task types
    cfg = base.replace(model=model, env=dataclasses.replace(base.env, options=world, max_turns=6),
                       train=dataclasses.replace(base.train, tasks_per_step=args.tasks, group_size=args.group))
    root = tempfile.mkdtemp()
    init_dir, policy_dir = os.path.join(root, "init"), os.path.join(root, "warm")
    build_tiny_policy(init_dir, **{f: getattr(model, f) for f in ("hidden_size", "num_layers", "intermediate_size")})
    # One stage of the shipped recipe's first kind (its peak rate): enough for replies to end at their tags.
    [sft] = warm_start(init_dir, policy_dir, batch_size=8, task_types=TASK_TYPES,
                       stages=[SFTStage(first_task=0, num_tasks=1200, steps=args.sft_steps, learning_rate=3e-3)])
    tokenizer = load_tokenizer(policy_dir)
    encoder = SentenceEncoder()

    # Time the reward decomposition (Eq. 8–10) as its own stage: it runs on the host inside train_step.
    rewards_fn = trainer_mod.rewards_and_advantages

    def timed_rewards(*a, **k):
        start = time.perf_counter()
        out = rewards_fn(*a, **k)
        timed_rewards.seconds += time.perf_counter() - start
        return out

    timed_rewards.seconds = 0.0
    trainer_mod.rewards_and_advantages = timed_rewards

    trainers = {}
    for layout in LAYOUTS:
        for variant in VARIANTS:
            vcfg = cfg.replace(variant=variant, rl=cfg.rl.replace(row_layout=layout))
            graphdef, params = nnx.split(load_hf_checkpoint(policy_dir))
            t = Trainer(vcfg, graphdef, params, tokenizer=tokenizer, encoder=encoder)
            if t.library is not None:
                seeded_library(t, encoder, args.library_size)
            trainers[layout, variant] = t
    for _ in range(args.warmup):
        for t in trainers.values():
            t.train_step()
    samples = {key: [] for key in trainers}
    for _ in range(args.steps):
        for key, t in trainers.items():
            timed_rewards.seconds = 0.0
            m = t.train_step()
            m["seconds/rewards"] = timed_rewards.seconds
            # Work of update + reference scoring (π_ref scores every trained row once) at each row's own length.
            lengths = [r.length for r in t.last_rows if r.trained]
            m["work/real_flops"] = real_token_flops(model, lengths) * (3 + bool(t.learner.rl.kl_coef))
            seconds = m["seconds/update"] + m.get("seconds/ref_logprobs", 0.0)
            m["work/achieved_flops_per_s"] = m["work/real_flops"] / seconds
            samples[key].append(m)

    def medians(layout, prefix):
        out = {}
        for v in VARIANTS:
            steps = samples[layout, v]
            names = sorted({k for m in steps for k in m if k.startswith(prefix)})
            out[v] = {k[len(prefix):]: statistics.median(m.get(k, 0.0) for m in steps) for k in names}
        return out

    def summary(layout):
        per_variant = medians(layout, "seconds/")
        update, work = medians(layout, "update/"), medians(layout, "work/")
        s1, grpo = per_variant["skill1"], per_variant["no_library"]
        extra = sum(s1.get(s, 0.0) for s in EXTRA_STAGES)
        per_token = {v: per_variant[v]["update"] / update[v]["real_tokens"] for v in VARIANTS}
        return {
            "ratio": s1["step"] / grpo["step"],
            "padding_fraction": {v: update[v]["padding_fraction"] for v in VARIANTS},
            "update_flops_efficiency_ratio": (work["skill1"]["achieved_flops_per_s"]
                                              / work["no_library"]["achieved_flops_per_s"]),
            "update_cost_per_trained_token_ratio": per_token["skill1"] / per_token["no_library"],
            "update_tokens": {v: {"computed": update[v]["computed_tokens"], "real": update[v]["real_tokens"]}
                              for v in VARIANTS},
            "update_and_reference_work": work,
            "library_overhead_seconds": extra,
            "library_overhead_fraction": extra / s1["step"],
            "seconds_per_step": {v: p["step"] for v, p in per_variant.items()},
            "seconds_per_stage": per_variant,
            "generation_seconds": {v: sum(p.get(s, 0.0) for s in ("query", "rank", "action", "distill"))
                                   for v, p in per_variant.items()},
            "where_the_extra_time_goes": {s: s1.get(s, 0.0) - grpo.get(s, 0.0) for s in sorted(set(s1) | set(grpo))
                                          if s != "step"},
            # What was trained: rows (truncated ones carry no loss and are left out of the update), tokens per kind.
            "rows_per_step": medians(layout, "rows/"),
            "tokens_per_step": medians(layout, "tokens/"),
            "success_per_step": {v: statistics.median(m["reward/success"] for m in samples[layout, v])
                                 for v in VARIANTS},
            "library_size_at_end": len(trainers[layout, "skill1"].library),
        }

    by_layout = {layout: summary(layout) for layout in LAYOUTS}
    headline = ("ratio", "padding_fraction", "update_flops_efficiency_ratio", "update_cost_per_trained_token_ratio",
                "library_overhead_fraction")
    result = {
        "machine": machine_info(description="2-core x86 VM, no accelerator, shared", date=time.strftime("%Y-%m-%d")),
        "config": {"variant_pair": list(VARIANTS), "tasks_per_step": args.tasks, "group_size": args.group,
                   "max_turns": cfg.env.max_turns, "library_size_at_start": args.library_size,
                   "model": dataclasses.asdict(cfg.model), "generation": dataclasses.asdict(cfg.generation),
                   "row_layouts": list(LAYOUTS), "length_bucket": cfg.train.length_bucket,
                   "timed_steps": args.steps, "warmup_steps": args.warmup},
        "row_layout": args.row_layout,
        **{k: by_layout[args.row_layout][k] for k in headline},
        "by_row_layout": by_layout,
        "warm_start": {"steps": args.sft_steps, "seconds": sft.seconds, "final_response_nll": sft.losses[-1]},
        "load_average_at_end": os.getloadavg()[0],
    }
    write_result(args.out, result)
    for t in trainers.values():
        t.close()


if __name__ == "__main__":
    main()
