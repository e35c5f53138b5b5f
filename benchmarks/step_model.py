"""Seconds per ``paper`` training step on 8× H100 and TPU v5e-16, from work counts and published chip figures.

Run from the repo root:  .venv/bin/python benchmarks/step_model.py   (writes benchmarks/results/step_model.json;
instant: arithmetic only). ``--run DIR`` reads the work counts of a real run (its ``metrics.jsonl``).

A step's work, per stage of the rollout (query, rank, action turns, distill), then reference scoring and the update:

* **prefill** of every prompt: 2·P·(prompt tokens) FLOPs (P parameters), compute-bound;
* **decode**: one sequential step per generated token of the longest reply in each sampler call; each step reads
  the chip's share of the weights and of its rows' KV cache from HBM (bandwidth-bound) and, on a tensor layout,
  all-reduces the block outputs over the interconnect; the row-steps computed (rows × steps) exceed the row-steps
  used (generated tokens) because finished rows ride along;
* **reference scoring**: 2·P·(row tokens) FLOPs; **update**: 8·P·(row tokens) (forward, rematerialised forward,
  backward) plus the FSDP weight all-gathers and gradient reduce-scatters per micro-batch.

Seconds = FLOPs / (chips × peak × ``MFU``) for compute-bound work, bytes / (chips × bandwidth × ``BW_EFFICIENCY``)
for decode, bytes / interconnect for collectives (counted as not overlapped: an upper bound). Attention FLOPs
are added at each row's own length (4·L·D·T² per row for the causal forward). The work counts of the paper step
are the ``paper`` preset's shapes (``PAPER_WORK``); where a real run logs a count (rows and tokens per stage,
turns per episode: ``metrics.jsonl``), the JSON sets it beside the assumption it replaces at the paper's scale.

Chip figures (vendor pages): H100 SXM: 989 TFLOP/s dense bf16, 3.35 TB/s HBM3, NVLink 900 GB/s per GPU
(nvidia.com/en-us/data-center/h100); TPU v5e: 197 TFLOP/s bf16, 819 GB/s HBM2, ICI 1,600 Gbps per chip
(cloud.google.com/tpu/docs/v5e). The paper's Table 3 reports Skill1 at 387-494 s per step on 8× H800 (the
H100's compute and HBM, NVLink cut to 400 GB/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # common.py beside it, the package above it

from common import write_result  # noqa: E402

from skill1_jax.config import paper  # noqa: E402

CHIPS = {
    "h100-8": {"device": "NVIDIA H100 SXM 80 GB", "chips": 8, "bf16_flops": 989e12, "hbm_bytes_s": 3.35e12,
               "interconnect_bytes_s": 450e9, "source": "https://www.nvidia.com/en-us/data-center/h100/",
               "sampling_layout": "replicated", "tensor": 1},
    "v5e-16": {"device": "TPU v5e", "chips": 16, "bf16_flops": 197e12, "hbm_bytes_s": 819e9,
               "interconnect_bytes_s": 200e9, "source": "https://cloud.google.com/tpu/docs/v5e",
               "sampling_layout": "tensor", "tensor": 4},
}
# Achieved fractions assumed for well-shaped work (stated, not measured here; benchmarks/gpu_check.sh measures
# the H100's): model FLOPs utilisation of prefill, reference scoring and the update; fraction of the HBM
# bandwidth a decode step reaches; latency of one collective.
MFU = 0.40
BW_EFFICIENCY = 0.70
COLLECTIVE_LATENCY_S = 10e-6
PAPER_TABLE3 = {"method": "Skill1", "seconds_per_step": [387, 494], "hardware": "8x NVIDIA H800",
                "source": "arXiv 2605.06130, Table 3"}

# The paper step's work per stage (ALFWorld: 16 tasks × G 16 = 256 episodes). Prompt tokens: distill ~3.5k (the
# trajectory and its contrastive reference); the others are estimates of the templates at ALFWorld's shapes. Reply
# tokens: mean length (a <think> block and an action); ``longest``: the longest reply of a sampler call (decode
# steps computed), here 4× the mean (at temperature 1 over 256 rows a long tail is likely) within the 2,048 limit.
# Action turns per episode: 20 (the 50-turn limit; failed episodes run it out, successful ones end early).
PAPER_WORK = {
    "query": {"calls": 1, "prompt": 600, "reply": 100, "longest": 400},
    "rank": {"calls": 1, "prompt": 2500, "reply": 150, "longest": 600},
    "action": {"calls": 20, "prompt": 2000, "reply": 150, "longest": 600},
    "distill": {"calls": 1, "prompt": 3500, "reply": 500, "longest": 2000},
}
DEFAULT_RUN = "runs/experiments/demo-household-warm/skill1/seed0"

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--run", default=DEFAULT_RUN, help="run directory whose metrics.jsonl gives measured counts")
ARGS.add_argument("--memory", default=os.path.join(HERE, "results", "memory_step.json"),
                  help="memory_step.json: per-decode-step collective bytes of each target's sampling layout")
ARGS.add_argument("--out", default=os.path.join(HERE, "results", "step_model.json"))


def run_counts(run_dir: str) -> dict | None:
    """Mean per step of a run's logged work counts: trained rows, prompt and response tokens per stage, turns."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        steps = [r for r in map(json.loads, f) if "rows/total" in r]
    if not steps:
        return None
    mean = lambda k: sum(r.get(k, 0.0) for r in steps) / len(steps)
    stages = {}
    for s in PAPER_WORK:
        rows = mean(f"rows/{s}")
        stages[s] = {"rows": rows, "prompt_tokens": mean(f"tokens/{s}_prompt"),
                     "response_tokens": mean(f"tokens/{s}_response"),
                     "prompt_per_row": mean(f"tokens/{s}_prompt") / rows if rows else 0.0,
                     "response_per_row": mean(f"tokens/{s}_response") / rows if rows else 0.0}
    return {"run": run_dir, "steps": len(steps), "turns_per_episode": mean("episode/turns"), "stages": stages,
            "seconds": {k[len("seconds/"):]: round(mean(k), 2) for k in steps[0] if k.startswith("seconds/")},
            "not_logged": "rows and tokens are the trained rows'; sampled rows, the longest reply per sampler call "
                          "and decode row-steps computed are not logged: taken from PAPER_WORK"}


def paper_work(turns: float | None = None) -> dict:
    """Rows, prompt and generated tokens per stage of one paper ALFWorld step, and the decode row-steps computed
    (rows × longest reply per call) against used (generated tokens). ``turns``: action turns per episode (default
    ``PAPER_WORK``'s); rows per stage = tasks × G × (turns for the action stage, else 1)."""
    cfg = paper("alfworld")
    episodes = cfg.train.tasks_per_step * cfg.train.group_size
    work = {}
    for stage, w in PAPER_WORK.items():
        if stage == "action" and turns is not None:
            w = {**w, "calls": turns}
        rows = episodes * w["calls"]
        work[stage] = {"rows": rows, "calls": w["calls"], "prompt_tokens": rows * w["prompt"],
                       "decoded_tokens": rows * w["reply"], "decode_steps": w["calls"] * w["longest"],
                       "row_steps_used": rows * w["reply"], "row_steps_computed": rows * w["longest"],
                       "context_tokens": w["prompt"] + w["longest"] // 2}
    return {"episodes": episodes, "action_turns_per_episode": work["action"]["calls"], "stages": work,
            "trained_tokens": sum(s["prompt_tokens"] + s["decoded_tokens"] for s in work.values())}


def seconds(chip: dict, work: dict, decode_collective_bytes: float | None) -> dict:
    """Seconds per phase of one step on ``chip`` (see the module docstring for the formulas)."""
    mcfg = paper().model
    n = mcfg.num_params()
    L, D, K, H = mcfg.num_layers, mcfg.hidden_size, mcfg.num_kv_heads, mcfg.head_dim
    chips, t = chip["chips"], chip["tensor"]
    flops_s = chips * chip["bf16_flops"] * MFU
    kv_bytes_token = 2 * L * K * H * 2  # keys + values, bfloat16
    weight_bytes_chip = 2 * n / t  # the sampler's bfloat16 weights on one chip
    attn = lambda tokens, length: 4 * L * D * tokens * length / 2  # causal: half of the T² scores
    out = {"rollout": {}}
    for stage, w in work["stages"].items():
        rows_chip = w["rows"] / (chips // t)  # rows of one data-parallel group
        prompt_len = w["prompt_tokens"] / w["rows"]
        prefill = (2 * n * w["prompt_tokens"] + attn(w["prompt_tokens"], prompt_len)) / flops_s
        step_bytes = weight_bytes_chip + rows_chip / w["calls"] * w["context_tokens"] * kv_bytes_token / t
        step_s = step_bytes / (chip["hbm_bytes_s"] * BW_EFFICIENCY)
        if t > 1:  # two all-reduces of [rows, D] per block per step on the tensor layout
            coll = (decode_collective_bytes if decode_collective_bytes is not None else
                    2 * L * rows_chip / w["calls"] * D * 2)
            step_s += coll / chip["interconnect_bytes_s"] + 2 * L * COLLECTIVE_LATENCY_S
        decode = w["decode_steps"] * step_s
        out["rollout"][stage] = {"prefill_s": round(prefill, 1), "decode_s": round(decode, 1),
                                 "decode_step_ms": round(step_s * 1e3, 2),
                                 "decode_row_step_utilisation": round(w["row_steps_used"] / w["row_steps_computed"],
                                                                      3)}
    tokens = sum(w["prompt_tokens"] + w["decoded_tokens"] for w in work["stages"].values())
    row_len = {s: (w["prompt_tokens"] + w["decoded_tokens"]) / w["rows"] for s, w in work["stages"].items()}
    attn_all = sum(attn(w["prompt_tokens"] + w["decoded_tokens"], row_len[s]) for s, w in work["stages"].items())
    rows = sum(w["rows"] for w in work["stages"].values())
    micro_steps = rows / chips  # paper preset: one row per device per micro-step
    # FSDP: every micro-step all-gathers the bf16 weights twice (forward, rematerialised forward + backward) and
    # reduce-scatters bf16 gradients; each chip moves (chips - 1) / chips of the whole.
    fsdp_bytes = 3 * 2 * n * (chips - 1) / chips
    out["reference_s"] = round((2 * n * tokens + attn_all) / flops_s, 1)
    out["update_s"] = round((8 * n * tokens + 3 * attn_all) / flops_s, 1)
    out["update_collectives_s"] = round(micro_steps * fsdp_bytes / chip["interconnect_bytes_s"], 1)
    rollout = sum(v["prefill_s"] + v["decode_s"] for v in out["rollout"].values())
    out["phases_s"] = {"rollout": round(rollout, 1), "reference": out["reference_s"],
                       "update": round(out["update_s"] + out["update_collectives_s"], 1)}
    out["step_s"] = round(sum(out["phases_s"].values()), 1)
    out["dominant_phase"] = max(out["phases_s"], key=out["phases_s"].get)
    return out


def main() -> None:
    flags = ARGS.parse_args()
    measured = run_counts(flags.run)
    scenarios = {"paper_shapes": paper_work()}
    if measured:  # the run's turns per episode (its turn limit's, not ALFWorld's 50) at the paper's row shapes
        scenarios["run_turns"] = paper_work(turns=round(measured["turns_per_episode"], 2))
    memory = {}
    if os.path.exists(flags.memory):
        with open(flags.memory) as f:
            memory = json.load(f).get("targets", {})
    targets = {}
    for name, chip in CHIPS.items():
        layout = (memory.get(name) or {}).get("decode_layout") or {}
        coll = layout.get("per_decode_step_bytes_per_device")
        coll_bytes = sum(coll.values()) if coll else None
        targets[name] = {**chip, "decode_collective_bytes_per_step": coll_bytes,
                         "decode_collective_source": "memory_step.json (compiled decode segment of its sub-batch)"
                         if coll else "formula: two [rows, D] bfloat16 all-reduces per block",
                         **seconds(chip, scenarios["paper_shapes"], coll_bytes),
                         "scenarios_step_s": {k: seconds(chip, w, coll_bytes)["step_s"] for k, w in scenarios.items()}}
    result = {"preset": "paper (ALFWorld)", "paper_work": scenarios["paper_shapes"], "scenarios": scenarios,
              "assumptions": {
                  "PAPER_WORK": PAPER_WORK, "mfu": MFU, "hbm_bandwidth_efficiency": BW_EFFICIENCY,
                  "collective_latency_s": COLLECTIVE_LATENCY_S, "collectives_overlapped": False},
              "measured_run": measured, "targets": targets, "paper_table3": PAPER_TABLE3,
              "machine": {"computed_on": "2-core x86 VM, no accelerator", "date": "2026-12-07",
                          "note": "a model from published chip figures, not a measurement"}}
    write_result(flags.out, result)


if __name__ == "__main__":
    main()
