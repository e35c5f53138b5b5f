"""Fault soak: kill -9 a ``cpu_tiny`` training run at random moments (some mid-save), resume it each time, and compare
the result with an uninterrupted run of the same seed.

Run from the repo root:  .venv/bin/python benchmarks/soak.py   (writes benchmarks/results/soak.json; about 50 min on a
busy 2-core machine: 12 min uninterrupted run, 39 min soak; ``--policy model --out
benchmarks/results/soak_launch_train.json`` for the plain command line)

1. ``straight``: one uninterrupted training process to ``--steps`` (it also fills the persistent XLA compilation
   cache that every later process reads, and measures start-up and step times to place the random kills).
2. ``soaked``: the same run, started and SIGKILLed ``--kills`` times; each restart passes ``--resume`` when a
   committed checkpoint (a numbered Orbax step folder) exists and starts fresh otherwise; after the last kill it
   runs to the end. Kill triggers (``SCHEDULE``): ``random`` (a uniform random delay), ``mid_save`` (the moment
   Orbax's ``<step>.orbax-checkpoint-tmp-*`` folder appears) and ``after_metrics`` (the moment a step's metrics row
   is written, before its checkpoint); each armed at process start or after the process's first new checkpoint.
3. Comparison: metrics.jsonl and eval.jsonl (every step exactly once, values equal apart from timings), the final
   checkpoint's device state (params, AdamW state, step, RNG: bit-exact) and host state (task position, skill
   library by id and strategy, reference trajectories), and results.json.
4. Corrupt checkpoint: the soaked run's newest checkpoint gets its largest data file truncated; a resume must warn,
   fall back to the previous step, replay the last step and again equal the uninterrupted run.

Policies (``--policy``): ``coached`` (default) runs ``run.train`` with the tiny model as the policy, except that slot
0 of every group replays its task's expert walkthrough and a short parseable lesson, so episodes succeed and skills
are admitted, retrieved, merged and utility-updated (a random tiny policy never wins, which would leave the library
empty); ``model`` runs the plain ``python -m launch.train`` command line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import machine_info, write_result  # noqa: E402

REPO = pathlib.Path(__file__).absolute().parent.parent
OUT = REPO / "benchmarks" / "results" / "soak.json"
TMP_MARK = ".orbax-checkpoint-tmp"
ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--kills", type=int, default=10, help="SIGKILLs of the soaked run")
ARGS.add_argument("--steps", type=int, default=12, help="training steps of each run (enough for 10 kills before it ends)")
ARGS.add_argument("--seed", type=int, default=0, help="run seed (same for both runs) and kill-schedule seed")
ARGS.add_argument("--policy", choices=("coached", "model"), default="coached")
ARGS.add_argument("--root", default=None, help="scratch folder (default: a new temporary one)")
ARGS.add_argument("--out", default=str(OUT))
ARGS.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one coached training process
ARGS.add_argument("--workdir", help=argparse.SUPPRESS)
ARGS.add_argument("--model_dir", help=argparse.SUPPRESS)
ARGS.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)


def overrides(steps: int, seed: int) -> list[str]:
    """The soak's config: cpu_tiny made small (1 task x 2 rollouts, 4 turns, a 2-task eval every 3 steps) so that a
    step takes about a minute; a checkpoint after every step; keep-last-2, so old steps are deleted as well."""
    return [f"train.steps={steps}", f"train.seed={seed}", "train.checkpoint_every=1", "train.keep_checkpoints=2",
            "train.tasks_per_step=1", "train.group_size=2", "train.eval_tasks=2", "train.eval_every=3",
            "env.max_turns=4"]


# ---- the coached child process ------------------------------------------------------------------------------
def coached_policy(cfg, graphdef, params, tokenizer):
    """The model's replies, except slot 0 of each group in training: the expert's next command and a lesson."""
    from skill1_jax.envs import base
    from skill1_jax.train.policy import Generation, ModelPolicy, ScriptedPolicy

    env = base.make_env(cfg.env.name, **cfg.env.kwargs)
    tasks = {t.task_id: t for t in env.tasks(cfg.env.train_split)}
    walks: dict[str, list[str]] = {}

    def walkthrough(task_id: str) -> list[str]:
        if task_id not in walks:
            env.reset(tasks[task_id])
            walk, done = [], False
            while not done:
                walk.append(env.expert_action())
                done = env.step(walk[-1])[2]
            walks[task_id] = walk
        return walks[task_id]

    def script(stage, request):
        walk = walkthrough(request.task_id)
        if stage == "action":
            return f"<think>step {request.turn}</think><action>{walk[min(request.turn, len(walk) - 1)]}</action>"
        lesson = {"action_lesson": ", then ".join(walk), "description_head": request.task}
        return "```json\n" + json.dumps(lesson) + "\n```"

    class CoachedGeneration(Generation):
        """Training plays and distillations of each group's first rollout come from the expert script; the rest,
        and every evaluation, from the model."""

        def __init__(self, model, scripted, mode):
            self.model, self.scripted, self.mode = model, scripted, mode

        def submit(self, stage, requests):
            coached = [self.mode == "train" and stage in ("action", "distill")
                       and r.rollout % cfg.train.group_size == 0 for r in requests]
            self.scripted.submit(stage, [r for r, c in zip(requests, coached) if c])
            self.model.submit(stage, [r for r, c in zip(requests, coached) if not c])

        @property
        def busy(self):
            return self.model.busy or self.scripted.busy

        def step(self):
            return self.scripted.step() if self.scripted.busy else self.model.step()

    class Coached(ModelPolicy):
        def __init__(self):
            super().__init__(graphdef, params, tokenizer, cfg.generation)
            self.scripted = ScriptedPolicy(script, tokenizer, cfg.generation)

        def open(self, mode, rng, rollouts):
            return CoachedGeneration(super().open(mode, rng, rollouts), self.scripted.open(mode, rng, rollouts), mode)

    return Coached()


def child(args) -> None:
    import logging

    from skill1_jax import config as C
    from skill1_jax.train import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = C.override(C.preset("cpu_tiny"), overrides(args.steps, args.seed))
    opts = run.RunOptions(workdir=args.workdir, model_dir=args.model_dir, resume=args.resume)
    policy_cfg, graphdef, params, tokenizer = run.initial_policy(cfg, opts)
    summary = run.train(cfg, opts, policy=coached_policy(policy_cfg, graphdef, params, tokenizer))
    logging.info("done at step %d", summary["step"])


# ---- process control --------------------------------------------------------------------------------------
def child_command(args, workdir: pathlib.Path, model_dir: str, resume: bool) -> list[str]:
    if args.policy == "coached":
        cmd = [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--child", f"--steps={args.steps}",
               f"--seed={args.seed}", f"--workdir={workdir}", f"--model_dir={model_dir}"]
    else:
        cmd = [sys.executable, "-m", "launch.train", "--preset=cpu_tiny", f"--model_dir={model_dir}",
               f"--workdir={workdir}"] + [f"--{o}" for o in overrides(args.steps, args.seed)]
    return cmd + (["--resume"] if resume else [])


def committed_steps(workdir: pathlib.Path) -> list[int]:
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def tmp_folders(workdir: pathlib.Path) -> list[str]:
    """Orbax's temporary step folders as ``name@inode.ctime``: a new save re-creates a folder left by a killed save of
    the same step under the same name."""
    d, out = workdir / "checkpoints", []
    for p in d.iterdir() if d.is_dir() else ():
        if TMP_MARK in p.name:
            try:
                st = p.stat()
            except FileNotFoundError:  # committed (renamed) meanwhile
                continue
            out.append(f"{p.name}@{st.st_ino}.{st.st_ctime_ns}")
    return sorted(out)


def train_steps(workdir: pathlib.Path) -> list[int]:
    from skill1_jax.metrics import read_jsonl

    return [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "reward/success" in r]


def last_log_line(log: pathlib.Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1][-200:] if lines else ""


class Process:
    """One training process in its own session (so the kill reaches nothing else), logging to a file."""

    def __init__(self, cmd: list[str], log: pathlib.Path, env: dict[str, str]):
        self.log = log
        self.cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.start = time.monotonic()
        with open(log, "w") as f:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def wait_until(self, condition, timeout: float | None = None, poll: float = 0.002) -> bool:
        """Polls ``condition()`` until true (returns True) or the process ends / times out (False)."""
        while self.proc.poll() is None:
            if condition():
                return True
            if timeout is not None and self.elapsed() > timeout:
                return False
            time.sleep(poll)
        return False

    def kill(self) -> bool:
        """SIGKILL to the process group; False if the process had already ended."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.proc.wait()
        return True

    def finish(self) -> dict:
        rc = self.proc.wait()
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"rc": rc, "wall_s": round(self.elapsed(), 1),
                "cpu_s": round(cpu.ru_utime + cpu.ru_stime - self.cpu0.ru_utime - self.cpu0.ru_stime, 1)}


def rising(condition):
    """``condition`` that fires only after it has been seen false in this process (a stale true state, e.g. rows of
    steps the restarted process is about to truncate and replay, must not trigger the kill)."""
    seen_false = False

    def check() -> bool:
        nonlocal seen_false
        value = bool(condition())
        seen_false = seen_false or not value
        return value and seen_false
    return check


def straight_run(args, root: pathlib.Path, model_dir: str, env: dict[str, str]) -> dict:
    """The uninterrupted run (reused when ``root`` already holds a finished one with its timing record)."""
    workdir, record = root / "straight", root / "straight.json"
    if record.exists() and (workdir / "results.json").exists():
        return json.loads(record.read_text())
    shutil.rmtree(workdir, ignore_errors=True)
    p = Process(child_command(args, workdir, model_dir, resume=False), root / "straight.log", env)
    p.wait_until(lambda: train_steps(workdir), poll=0.5)
    first_step_s = p.elapsed()
    out = p.finish()
    if out["rc"] != 0:
        raise SystemExit(f"the uninterrupted run failed (rc {out['rc']}); see {root / 'straight.log'}")
    step_s = (out["wall_s"] - first_step_s) / max(args.steps - 1, 1)
    out = {**out, "first_step_done_s": round(first_step_s, 1), "seconds_per_later_step": round(step_s, 1)}
    record.write_text(json.dumps(out))
    return out


# The kills, in order: (trigger, checkpoints the process must commit before the trigger is armed). A trigger armed at
# once interrupts start-up, restore or the first step and advances nothing; one armed after a new checkpoint lets
# the run progress a step, so later kills resume from different steps (the first three restart fresh).
SCHEDULE = (("random", 0), ("mid_save", 0), ("after_metrics", 0), ("random", 1), ("random", 0), ("mid_save", 0),
            ("after_metrics", 0), ("random", 1), ("mid_save", 1), ("random", 1))


def soak_run(args, root: pathlib.Path, model_dir: str, env: dict[str, str], straight: dict) -> list[dict]:
    """Kills the soaked run ``args.kills`` times following ``SCHEDULE`` (random delays), then lets it finish.

    ``random`` waits a uniform delay: over the uninterrupted run's time to its first step (start-up, restore, a
    step) when armed at start, over one step time when armed after a checkpoint.
    """
    workdir = root / "soaked"
    rng = random.Random(args.seed)
    plan = [SCHEDULE[i % len(SCHEDULE)] for i in range(args.kills)] + [("none", 0)]
    processes = []
    for i, (kind, commits) in enumerate(plan):
        before, tmp_before = committed_steps(workdir), set(tmp_folders(workdir))
        resume = bool(before)
        new_tmp = lambda: sorted(set(tmp_folders(workdir)) - tmp_before)  # noqa: E731 - left by earlier kills
        p = Process(child_command(args, workdir, model_dir, resume), root / f"soaked_{i:02d}.log", env)
        record = {"process": i, "kill": kind, "armed_after_new_checkpoints": commits, "resume": resume,
                  "checkpoints_at_start": before}
        if commits and p.wait_until(lambda: len(set(committed_steps(workdir)) - set(before)) >= commits, poll=0.05):
            record["armed_at_s"] = round(p.elapsed(), 1)
        if kind == "random":
            delay = rng.uniform(0.0, straight["seconds_per_later_step"] if commits else straight["first_step_done_s"])
            p.wait_until(lambda: False, timeout=p.elapsed() + delay, poll=0.05)
            record["random_delay_s"] = round(delay, 1)
        elif kind == "mid_save":
            p.wait_until(rising(new_tmp))
        elif kind == "after_metrics":
            p.wait_until(rising(lambda: uncheckpointed_step(workdir) is not None))
        fired = False
        if kind != "none" and p.proc.poll() is None:
            at = round(p.elapsed(), 2)
            fired = p.kill()
            if fired:  # described after the kill, from the state it left behind
                record.update(killed_at_s=at, interrupted=describe_moment(workdir, p.log, new_tmp(), resume),
                              last_log_line=last_log_line(p.log))
        record.update(p.finish())
        record.update(checkpoints_after=committed_steps(workdir), train_steps_in_metrics=train_steps(workdir))
        processes.append(record)
        print(json.dumps(record), flush=True)
        if not fired and record["rc"] != 0:
            record["failed"] = f"exit code {record['rc']} without a kill; see {p.log}"
            break
        if not fired:  # finished (the last process, or one that completed before its kill moment)
            if kind != "none":
                record["note"] = "run finished before the planned kill"
            break
    return processes


def uncheckpointed_step(workdir: pathlib.Path) -> int | None:
    """The newest step whose metrics row is written but whose checkpoint is not committed (None if there is none)."""
    steps, committed = train_steps(workdir), committed_steps(workdir)
    return steps[-1] if steps and steps[-1] > (committed[-1] if committed else 0) else None


def describe_moment(workdir: pathlib.Path, log: pathlib.Path, new_tmp: list[str], resumed: bool) -> str:
    """What the kill interrupted, read from the run directory and the process log right after the kill."""
    committed, pending = committed_steps(workdir), uncheckpointed_step(workdir)
    text = log.read_text(errors="replace")
    newest = committed[-1] if committed else 0
    if new_tmp:
        return f"Orbax save in progress ({new_tmp[-1].split('@')[0]})"
    if resumed and "restored step" not in text:
        return f"start-up of a resumed run, before the restore of step {newest} finished"
    if not resumed and "eval at step" not in text:
        return "start-up of a fresh run (imports, model load, compilation, step-0 evaluation)"
    if pending is not None:
        return f"step {pending} metrics written, its checkpoint not yet"
    return f"step {newest + 1} in progress (rollouts, update or evaluation)"


# ---- comparison ----------------------------------------------------------------------------------------------
def rows_by_step(rows: list[dict], kind: str) -> dict:
    """{step: [rows]} of training rows (``kind="train"``) or evaluation rows, timings dropped."""
    key = "reward/success" if kind == "train" else "eval/success"
    out: dict[int, list[dict]] = {}
    for r in rows:
        if key in r:
            out.setdefault(r["step"], []).append({k: v for k, v in r.items() if not k.startswith("seconds/")})
    return out


def compare_rows(soaked: dict, straight: dict) -> dict:
    return {"steps": sorted(soaked), "missing": sorted(set(straight) - set(soaked)),
            "extra": sorted(set(soaked) - set(straight)),
            "repeated": {s: len(v) for s, v in soaked.items() if len(v) > 1},
            "differing": {s: sorted(k for k in set(v[0]) | set(straight[s][0]) if v[0].get(k) != straight[s][0].get(k))
                          for s, v in soaked.items() if s in straight and v[0] != straight[s][0]}}


def load_checkpoint(workdir: pathlib.Path, step: int) -> tuple[dict, dict]:
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(workdir / "checkpoints") as mgr:
        restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                              host=ocp.args.JsonRestore()))
    return restored["state"], restored["host"]


def compare_trees(a, b) -> dict:
    import jax
    import numpy as np

    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    if [p for p, _ in la] != [p for p, _ in lb]:
        return {"equal": False, "reason": "different tree structure"}
    differing = []
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.shape == y.shape else None
            differing.append({"leaf": jax.tree_util.keystr(path), "max_abs_diff": diff})
    return {"equal": not differing, "leaves": len(la), "differing": differing[:20]}


def compare_library(soaked: dict | None, straight: dict | None) -> dict:
    soaked, straight = soaked or {"records": []}, straight or {"records": []}
    ids = [r["skill_id"] for r in soaked["records"]]
    a = {(r["skill_id"], r["strategy"]) for r in soaked["records"]}
    b = {(r["skill_id"], r["strategy"]) for r in straight["records"]}
    return {"skills": len(soaked["records"]), "skills_uninterrupted": len(straight["records"]),
            "lost": len(b - a), "extra": len(a - b), "duplicated_ids": len(ids) - len(set(ids)),
            "identical": soaked == straight,
            "differing_fields": sorted(k for k in set(soaked) | set(straight) if soaked.get(k) != straight.get(k))}


def compare_runs(root: pathlib.Path, steps: int) -> dict:
    from skill1_jax.metrics import read_jsonl

    soaked, straight = root / "soaked", root / "straight"
    metrics = {k: compare_rows(rows_by_step(read_jsonl(soaked / "metrics.jsonl"), k),
                               rows_by_step(read_jsonl(straight / "metrics.jsonl"), k)) for k in ("train", "eval")}
    eval_lines = [rows_by_step([{**r, "eval/success": r["success"]} for r in read_jsonl(d / "eval.jsonl")], "eval")
                  for d in (soaked, straight)]
    state_a, host_a = load_checkpoint(soaked, steps)
    state_b, host_b = load_checkpoint(straight, steps)
    results = [json.loads((d / "results.json").read_text()) for d in (soaked, straight)]
    return {
        "metrics_train_rows": metrics["train"], "metrics_eval_rows": metrics["eval"],
        "eval_jsonl": compare_rows(*eval_lines),
        "device_state": compare_trees(state_a, state_b),
        "host_state_differing_keys": sorted(k for k in set(host_a) | set(host_b) if host_a.get(k) != host_b.get(k)),
        "task_position": [host_a["task_position"], host_b["task_position"]],
        "references": {"tasks": len(host_a["references"]), "identical": host_a["references"] == host_b["references"]},
        "library": compare_library(host_a["library"], host_b["library"]),
        "results_json_identical": results[0] == results[1],
        "checkpoint_folders_left": sorted(p.name for p in (soaked / "checkpoints").iterdir()),
    }


def corrupt_newest_and_resume(args, root: pathlib.Path, model_dir: str, env: dict[str, str]) -> dict:
    """Truncates the largest data file of the soaked run's newest checkpoint, resumes, and checks that the run
    warned, restored the previous step, replayed the last step and again equals the uninterrupted run."""
    workdir = root / "soaked"
    newest = committed_steps(workdir)[-1]
    victim = max((f for f in (workdir / "checkpoints" / str(newest) / "state").rglob("*") if f.is_file()),
                 key=lambda f: f.stat().st_size)
    size = victim.stat().st_size
    with open(victim, "r+b") as f:
        f.truncate(size // 2)
    p = Process(child_command(args, workdir, model_dir, resume=True), root / "corrupt_resume.log", env)
    out = p.finish()
    text = p.log.read_text(errors="replace")
    restored = [int(line.split("restored step ")[1].split()[0]) for line in text.splitlines() if "restored step " in line]
    comparison = compare_runs(root, args.steps) if out["rc"] == 0 else None
    return {**out, "corrupted": f"{victim.relative_to(workdir)} ({size} -> {size // 2} bytes)",
            "warning_logged": f"checkpoint step {newest} in" in text and "is unreadable" in text,
            "restored_step": restored[0] if restored else None,
            "final_state_equal_after_replay": comparison is not None and summarize([], comparison)["final_state_equal"],
            "comparison": comparison}


def main():
    args = ARGS.parse_args()
    if args.child:
        return child(args)
    root = pathlib.Path(args.root or tempfile.mkdtemp(prefix="soak_")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "soaked", ignore_errors=True)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           # Restarts read compiled programs from disk, as a preemptible job would, so a restart costs seconds of
           # start-up rather than minutes of XLA compilation (the first, uninterrupted run fills the cache).
           "JAX_COMPILATION_CACHE_DIR": str(root / "xla_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    model_dir = str(root / "policy")
    if not (root / "policy" / "config.json").exists():
        from skill1_jax.demo.tiny_policy import build_tiny_policy

        build_tiny_policy(model_dir, seed=args.seed)
    t0 = time.monotonic()
    straight = straight_run(args, root, model_dir, env)
    print(json.dumps({"straight": straight}), flush=True)
    processes = soak_run(args, root, model_dir, env, straight)
    result = {"machine": machine_info(), "policy": args.policy, "steps": args.steps, "seed": args.seed,
              "config_overrides": overrides(args.steps, args.seed), "uninterrupted": straight, "processes": processes}
    if any("failed" in p for p in processes):  # a restart that crashed on its own: report it, compare nothing
        result["summary"] = {"failed": [p["failed"] for p in processes if "failed" in p]}
    else:
        result["comparison"] = compare_runs(root, args.steps)
        result["summary"] = summarize(processes, result["comparison"])
        result["corrupt_newest_checkpoint"] = corrupt_newest_and_resume(args, root, model_dir, env)
        result["summary"]["corrupt_checkpoint_skipped"] = (
            result["corrupt_newest_checkpoint"]["warning_logged"]
            and result["corrupt_newest_checkpoint"]["restored_step"] == args.steps - 1
            and result["corrupt_newest_checkpoint"]["final_state_equal_after_replay"])
    result.update(total_wall_s=round(time.monotonic() - t0, 1), root=str(root))
    write_result(args.out, {"summary": result.pop("summary"), **result})


def summarize(processes: list[dict], comparison: dict) -> dict:
    kills = [p for p in processes if "killed_at_s" in p]
    m, lib = comparison["metrics_train_rows"], comparison["library"]
    return {
        "kills": len(kills),
        "kills_mid_save": sum("Orbax save" in p["interrupted"] for p in kills),
        "kills_of_fresh_starts": sum(not p["resume"] for p in kills),
        "steps_lost": len(m["missing"]), "steps_repeated": len(m["repeated"]) + len(m["extra"]),
        "eval_rows_lost_or_repeated": len(comparison["eval_jsonl"]["missing"]) + len(comparison["eval_jsonl"]["repeated"])
        + len(comparison["metrics_eval_rows"]["missing"]) + len(comparison["metrics_eval_rows"]["repeated"]),
        "skills_lost": lib["lost"], "skills_duplicated": lib["extra"] + lib["duplicated_ids"],
        "final_state_equal": (comparison["device_state"]["equal"] and not comparison["host_state_differing_keys"]
                              and not m["differing"] and comparison["results_json_identical"]),
    }

if __name__ == "__main__":
    main()
