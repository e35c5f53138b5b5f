"""Seconds per ``paper`` training step on 8× H100 and TPU v5e-16, from work counts and published chip figures.

Run from the repo root:  .venv/bin/python benchmarks/step_model.py   (writes benchmarks/results/step_model.json;
instant: arithmetic only). ``--run DIR`` reads the work counts of a real run (its ``metrics.jsonl``).

A step's work, per stage of the rollout (query, rank, action turns, distill), then reference scoring and the update:

* **prefill** of every prompt: 2·P·(prompt tokens) FLOPs (P parameters), compute-bound;
* **decode** on the rollout engine (``sampling/engine.py``, what the trainer runs): a stage's requests share the
  engine's slots (``train.policy.engine_config`` of the preset: its KV budget ``generation.kv_cache_tokens`` at
  ``request_cache_tokens`` per request), so each sequential decode step advances min(slots, the stage's episodes)
  rows. The row-steps computed are the tokens generated ÷ the engine's useful-row-step fraction, and each step reads
  the chip's share of the weights and of its rows' KV cache from HBM (bandwidth-bound) and, on a tensor layout,
  all-reduces the block outputs over the interconnect. Prefill computes the prompt tokens × the engine's
  prefill-computed-over-requested ratio (bucket padding, shared prompts prefilled once);
* **reference scoring**: 2·P·(row tokens) FLOPs; **update**: 8·P·(row tokens) (forward, rematerialised forward,
  backward) plus the FSDP weight all-gathers and gradient reduce-scatters per micro-batch.

Seconds = FLOPs / (chips × peak × ``MFU``) for compute-bound work, bytes / (chips × bandwidth × ``BW_EFFICIENCY``)
for decode, bytes / interconnect for collectives (counted as not overlapped: an upper bound). Attention FLOPs
are added at each row's own length (4·L·D·T² per row for the causal forward). The work counts of the paper step
are the ``paper`` preset's shapes (``PAPER_WORK``); where a real run logs a count (rows and tokens per stage,
turns per episode, the engine's decode row-steps and prefill tokens: ``metrics.jsonl``), the JSON sets it beside
the assumption it replaces at the paper's scale, and the engine's two ratios come from it (else from
``benchmarks/results/rollout.json``). ``slots_scenarios`` repeats the step with more engine slots than the preset's
budget gives, with the KV cache each chip would then hold.

Chip figures (vendor pages): H100 SXM: 989 TFLOP/s dense bf16, 3.35 TB/s HBM3, NVLink 900 GB/s per GPU
(nvidia.com/en-us/data-center/h100); TPU v5e: 197 TFLOP/s bf16, 819 GB/s HBM2, ICI 1,600 Gbps per chip
(cloud.google.com/tpu/docs/v5e). The paper's Table 3 reports Skill1 at 387-494 s per step on 8× H800 (the
H100's compute and HBM, NVLink cut to 400 GB/s).
"""

from __future__ import annotations

import argparse
import datetime
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
# tokens: mean length (a <think> block and an action). Action turns per episode: 20 (the 50-turn limit; failed
# episodes run it out, successful ones end early).
PAPER_WORK = {
    "query": {"calls": 1, "prompt": 600, "reply": 100},
    "rank": {"calls": 1, "prompt": 2500, "reply": 150},
    "action": {"calls": 20, "prompt": 2000, "reply": 150},
    "distill": {"calls": 1, "prompt": 3500, "reply": 500},
}
DEFAULT_RUN = "runs/demo/skill1"  # `make demo`'s Skill1 run

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--run", default=DEFAULT_RUN, help="run directory whose metrics.jsonl gives measured counts")
ARGS.add_argument("--rollout", default=os.path.join(HERE, "results", "rollout.json"),
                  help="rollout.json: the engine's ratios when the run logs none")
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
    total = lambda k: sum(r.get(k, 0.0) for r in steps)
    engine = None
    if total("rollout/decode_row_steps") and total("rollout/prefill_requested"):
        engine = {"useful_row_step_fraction": total("rollout/decode_tokens") / total("rollout/decode_row_steps"),
                  "prefill_computed_over_requested": total("rollout/prefill_computed")
                  / total("rollout/prefill_requested"),
                  **{k: total(f"rollout/{k}") / len(steps) for k in (
                      "decode_row_steps", "decode_tokens", "prefill_computed", "prefill_requested")}}
    return {"run": run_dir, "steps": len(steps), "turns_per_episode": mean("episode/turns"), "stages": stages,
            "engine": engine,
            "seconds": {k[len("seconds/"):]: round(mean(k), 2) for k in steps[0] if k.startswith("seconds/")},
            "not_logged": "rows and tokens are the trained rows'; the engine's counts are per collection (every "
                          "stage together)"}


def engine_ratios(measured: dict | None, rollout_json: str) -> dict:
    """The engine's useful-row-step fraction and prefill ratio: the run's, else the rollout benchmark's, else 1."""
    if measured and measured.get("engine"):
        e = measured["engine"]
        source = f"measured in {measured['run']} ({measured['steps']} steps)"
    elif os.path.exists(rollout_json):
        with open(rollout_json) as f:
            e = json.load(f)["engine"]
        source = f"{os.path.basename(rollout_json)} (the rollout benchmark's engine)"
    else:
        return {"useful_row_step_fraction": 1.0, "prefill_computed_over_requested": 1.0, "source": "none: ideal"}
    return {"useful_row_step_fraction": round(e["useful_row_step_fraction"], 4),
            "prefill_computed_over_requested": round(e["prefill_computed_over_requested"], 4), "source": source}


def engine_slots(episodes: int) -> int:
    """Requests the paper preset's engine decodes at once (``train.policy.engine_config``)."""
    from skill1_jax.train.policy import engine_config

    return engine_config(paper("alfworld").generation, episodes).slots


def paper_work(ratios: dict, slots: int, turns: float | None = None) -> dict:
    """Rows, prompt and generated tokens per stage of one paper ALFWorld step on an engine of ``slots`` slots with
    the engine ``ratios`` (``engine_ratios``): prompt tokens prefilled, decode row-steps used (generated tokens) and
    computed (used ÷ the useful fraction), and sequential decode steps (computed ÷ the rows decoded at once).
    ``turns``: action turns per episode (default ``PAPER_WORK``'s); rows per stage = tasks × G × (turns for the
    action stage, else 1)."""
    cfg = paper("alfworld")
    episodes = cfg.train.tasks_per_step * cfg.train.group_size
    concurrent = min(slots, episodes)  # a stage's episodes take the slots; each has one request in flight
    work = {}
    for stage, w in PAPER_WORK.items():
        if stage == "action" and turns is not None:
            w = {**w, "calls": turns}
        rows = episodes * w["calls"]
        computed = rows * w["reply"] / ratios["useful_row_step_fraction"]
        work[stage] = {"rows": rows, "calls": w["calls"], "prompt_tokens": rows * w["prompt"],
                       "prefill_tokens": rows * w["prompt"] * ratios["prefill_computed_over_requested"],
                       "decoded_tokens": rows * w["reply"], "concurrent_rows": concurrent,
                       "decode_steps": computed / concurrent, "row_steps_used": rows * w["reply"],
                       "row_steps_computed": computed, "context_tokens": w["prompt"] + w["reply"]}
    return {"episodes": episodes, "engine_slots": slots, "action_turns_per_episode": work["action"]["calls"],
            "stages": work, "trained_tokens": sum(s["prompt_tokens"] + s["decoded_tokens"] for s in work.values())}


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
        rows_group = w["concurrent_rows"] / (chips // t)  # rows one data-parallel group decodes per step
        prompt_len = w["prompt_tokens"] / w["rows"]
        prefill = (2 * n * w["prefill_tokens"] + attn(w["prefill_tokens"], prompt_len)) / flops_s
        step_bytes = weight_bytes_chip + rows_group * w["context_tokens"] * kv_bytes_token / t
        step_s = step_bytes / (chip["hbm_bytes_s"] * BW_EFFICIENCY)
        if t > 1:  # two all-reduces of [rows, D] per block per step on the tensor layout
            coll = (decode_collective_bytes if decode_collective_bytes is not None else
                    2 * L * rows_group * D * 2)
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
    ratios = engine_ratios(measured, flags.rollout)
    cfg = paper("alfworld")
    episodes = cfg.train.tasks_per_step * cfg.train.group_size
    slots = engine_slots(episodes)
    scenarios = {"paper_shapes": paper_work(ratios, slots)}
    if measured:  # the run's turns per episode (its turn limit's, not ALFWorld's 50) at the paper's row shapes
        scenarios["run_turns"] = paper_work(ratios, slots, turns=round(measured["turns_per_episode"], 2))
    # More slots than the preset's KV budget gives: the cache each chip would hold (request_cache_tokens per slot).
    m = cfg.model
    kv_slot_bytes = 2 * m.num_layers * m.num_kv_heads * m.head_dim * 2
    more = sorted({slots, 2 * slots, 4 * slots, episodes})
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
                         "scenarios_step_s": {k: seconds(chip, w, coll_bytes)["step_s"] for k, w in scenarios.items()},
                         "slots_scenarios": [{
                             "slots": n, "kv_cache_gib_per_chip": round(
                                 n * cfg.generation.request_cache_tokens * kv_slot_bytes / chip["chips"] / 2**30, 2),
                             **{k: v for k, v in seconds(chip, paper_work(ratios, n), coll_bytes).items()
                                if k in ("phases_s", "step_s")}} for n in more]}
    result = {"preset": "paper (ALFWorld)", "paper_work": scenarios["paper_shapes"], "scenarios": scenarios,
              "assumptions": {
                  "PAPER_WORK": PAPER_WORK, "engine": {**ratios, "slots": slots}, "mfu": MFU, "hbm_bandwidth_efficiency": BW_EFFICIENCY,
                  "collective_latency_s": COLLECTIVE_LATENCY_S, "collectives_overlapped": False},
              "measured_run": measured, "targets": targets, "paper_table3": PAPER_TABLE3,
              "machine": {"computed_on": "2-core x86 VM, no accelerator", "date": datetime.date.today().isoformat(),
                          "note": "a model from published chip figures, not a measurement"}}
    write_result(flags.out, result)


if __name__ == "__main__":
    main()
