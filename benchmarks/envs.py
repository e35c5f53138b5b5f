"""Environment speed in one run, on one core: household vs ALFWorld (TextWorld) vs WebShop, plus the worker pool.

Each environment plays whole episodes of uniformly random admissible actions (a fixed RNG) for a time budget;
steps/s counts ``step`` calls only, reset time is reported separately. A pure-Python calibration loop is timed in
the same run so numbers from different (noisy) machines can be compared as ratios. An environment that cannot be
built (missing module or data) gets an explicit ``"error: ..."`` string instead of numbers.

ALFWorld before/after: every valid_seen game's expert walkthrough is played by unmodified TextWorld
(``textworld.start`` with AlfredTWEnv's eval wrappers: before) and by AlfworldEnv (after), game by game in the same
process, so load changes on a shared machine hit both alike. Both transcripts (observation, admissible actions,
reward, done, won per turn) must be identical; ``alfworld.step_speedup`` is the ratio of mean step times. The pool
section plays 4 tasks x 4 rollouts of random admissible actions through ``EnvPool`` with 1 and 2 worker processes
(alternated 3 times; median).

Usage (from the repo root of a clean clone, after ``make install``):
    .venv/bin/python benchmarks/envs.py [--alfworld_data DIR] [--webshop_data DIR] [--seconds 10] [--games N]
writes benchmarks/results/envs.json (43 minutes on the shared 2-core machine at load average ~10; most of it
unmodified TextWorld loading each of the 140 games).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import pathlib
import random
import statistics
import sys
import time
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import machine_info, write_result  # noqa: E402
from skill1_jax.envs import base, pool  # noqa: E402

SHARED_DATA = pathlib.Path(os.environ.get("SKILL1_SHARED_DATA", REPO.parent / "shared" / "data"))

log = logging.getLogger("benchmarks.envs")


def calibration_loops_per_s(seconds: float = 1.0) -> float:
    """A fixed pure-Python workload (dict/str/list ops, like an env step) to normalise machine speed."""
    table = {f"go to cabinet {i}": i for i in range(30)}
    loops, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            sorted(dict(table))
        loops += 1000
    return loops / (time.perf_counter() - start)


def random_play(env: base.Environment, tasks: list, seconds: float, max_episodes: int,
                fix_action: Callable[[str, str], str] = lambda a, task: a) -> dict[str, Any]:
    """Random admissible actions over ``tasks`` (cycled) until ``seconds`` of play or ``max_episodes`` episodes."""
    rng = random.Random(0)
    steps = episodes = wins = 0
    step_time = reset_time = 0.0
    cold_resets, seen = [], set()
    while step_time + reset_time < seconds and episodes < max_episodes:
        task = tasks[episodes % len(tasks)]
        t0 = time.perf_counter()
        _, info = env.reset(task, seed=episodes)
        dt = time.perf_counter() - t0
        reset_time += dt
        if task.task_id not in seen:
            seen.add(task.task_id)
            cold_resets.append(dt)
        text, actions = info[base.TASK], info[base.ADMISSIBLE]
        for _ in range(env.max_steps):
            action = fix_action(rng.choice(actions), text)
            t0 = time.perf_counter()
            _, _, done, info = env.step(action)
            step_time += time.perf_counter() - t0
            steps += 1
            actions = info[base.ADMISSIBLE]
            if done:
                wins += bool(info[base.WON])
                break
        episodes += 1
    return {
        "steps_per_s": steps / step_time,
        "reset_s": reset_time / episodes,
        "cold_reset_s": sum(cold_resets) / len(cold_resets),
        "cold_resets": len(cold_resets),
        "steps": steps,
        "episodes": episodes,
        "random_success": wins / episodes,
    }


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # record why, never a made-up number
        log.exception("%s benchmark failed", name)
        return {"error": f"{type(exc).__name__}: {exc}"}


def bench_household(seconds: float) -> dict[str, Any]:
    out = {}
    for preset in ("default", "easy"):
        env = base.make_env("household", preset=preset)
        result = random_play(env, list(env.tasks("train")), seconds, max_episodes=10**9)
        out[preset] = result
    return {**out["default"], "easy": out["easy"]}


def bench_alfworld(data_root: str, seconds: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = base.make_env("alfworld", data_root=data_root)
    build_s = time.perf_counter() - t0
    tasks = list(env.tasks("valid_seen"))[:6]  # six distinct games: every first reset is a cold parse
    result = random_play(env, tasks, seconds, max_episodes=24)
    env.close()
    return {**result, "build_s": build_s}


def bench_alfworld_before_after(data_root: str, games: int | None) -> dict[str, Any]:
    """Walkthroughs of the valid_seen games: unmodified TextWorld vs AlfworldEnv, timed per step, compared per turn."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

    env = base.make_env("alfworld", data_root=data_root)
    tasks = list(env.tasks("valid_seen"))[:games]
    infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
    before, after, reset_before, identical, mismatched = [], [], [], 0, []

    def turn(obs: str, admissible: list[str], reward: float, done: bool, won: bool) -> tuple:
        return obs, [c for c in admissible if c != "help"], float(reward), bool(done), bool(won)

    for i, task in enumerate(tasks):
        game_file = os.path.join(data_root, "json_2.1.1", task.task_id, "game.tw-pddl")
        with open(game_file) as f:
            walkthrough = json.load(f)["walkthrough"]
        t0 = time.perf_counter()
        reference = textworld.start(game_file, request_infos=infos,
                                    wrappers=[AlfredDemangler(shuffle=False), AlfredInfos])
        state = reference.reset()
        reset_before.append(time.perf_counter() - t0)
        theirs = [turn(state["feedback"], state["admissible_commands"], 0, False, state["won"])]
        obs, info = env.reset(task)
        ours = [turn(obs, info[base.ADMISSIBLE], 0, False, False)]
        for action in walkthrough:
            t0 = time.perf_counter()
            state, score, done = reference.step(action)
            before.append(time.perf_counter() - t0)
            theirs.append(turn(state["feedback"], state["admissible_commands"], score, done, state["won"]))
            t0 = time.perf_counter()
            obs, reward, done, info = env.step(action)
            after.append(time.perf_counter() - t0)
            ours.append(turn(obs, info[base.ADMISSIBLE], reward, done, info[base.WON]))
        reference.close()
        if ours == theirs and ours[-1][2:] == (1.0, True, True):
            identical += 1
        else:
            mismatched.append(task.task_id)
        if (i + 1) % 20 == 0:
            log.info("  %d/%d games, step %.4f s before vs %.4f s after", i + 1, len(tasks),
                     statistics.fmean(before), statistics.fmean(after))
    env.close()
    return {
        "games": len(tasks),
        "transcripts_identical": identical,
        "mismatched_games": mismatched,
        "steps": len(after),
        "before_step_s": statistics.fmean(before),
        "after_step_s": statistics.fmean(after),
        "before_steps_per_s": len(before) / sum(before),
        "after_steps_per_s": len(after) / sum(after),
        "step_speedup": sum(before) / sum(after),
        "before_load_and_reset_s": statistics.fmean(reset_before),
    }


def bench_pool(data_root: str, workers: int, tasks_n: int = 4, group: int = 4, turns: int = 20) -> dict[str, Any]:
    """``EnvPool`` throughput: tasks_n x group ALFWorld slots, random admissible actions, ``turns`` batched steps."""
    spec = base.EnvSpec.of("alfworld", data_root=data_root)
    panel = list(base.make_env(spec).tasks("valid_seen"))
    tasks = [panel[i * len(panel) // tasks_n] for i in range(tasks_n)]  # spread over the task types
    rng = random.Random(0)
    with pool.EnvPool(spec, num_workers=workers, timeout_s=120) as envs:
        t0 = time.perf_counter()
        first = envs.reset([(task, base.episode_seed(0, task.task_id, g)) for task in tasks for g in range(group)])
        reset_s = time.perf_counter() - t0
        admissible = {slot: info[base.ADMISSIBLE] for slot, (_, info) in enumerate(first)}
        steps, step_s = 0, 0.0
        for _ in range(turns):
            if not envs.live_slots:
                break
            actions = {slot: rng.choice(admissible[slot]) for slot in envs.live_slots}
            t0 = time.perf_counter()
            results = envs.step(actions)
            step_s += time.perf_counter() - t0
            steps += len(actions)
            for slot in actions:
                admissible[slot] = results[slot][3][base.ADMISSIBLE]
    return {"workers": workers, "slots": tasks_n * group, "steps": steps, "steps_per_s": steps / step_s,
            "reset_all_s": reset_s}


def bench_pools(data_root: str, rounds: int = 3) -> dict[str, Any]:
    """1 and 2 workers alternated ``rounds`` times (load changes on a shared machine hit both); median steps/s."""
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    for _ in range(rounds):
        for workers in (1, 2):
            runs[str(workers)].append(bench_pool(data_root, workers))
    return {w: {"steps_per_s": statistics.median(r["steps_per_s"] for r in rs), "runs": rs} for w, rs in runs.items()}


def bench_webshop(data_dir: str, seconds: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = base.make_env("webshop", data_dir=data_dir)
    build_s = time.perf_counter() - t0

    def query(action: str, task: str) -> str:  # the admissible search action is a template
        return f"search[{' '.join(task.split()[:6])}]" if action.startswith("search[") else action

    result = random_play(env, list(env.tasks("test")), seconds, max_episodes=10**9, fix_action=query)
    env.close()
    return {**result, "build_s": build_s}


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("alfworld", "textworld", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alfworld_data", default=os.environ.get("ALFWORLD_DATA", str(SHARED_DATA / "alfworld")))
    parser.add_argument("--webshop_data", default=os.environ.get("WEBSHOP_DATA", str(SHARED_DATA / "webshop")))
    parser.add_argument("--seconds", type=float, default=10.0, help="play time per environment (ALFWorld: x4)")
    parser.add_argument("--games", type=int, default=None, help="valid_seen games for before/after (default: all)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "envs.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    start = time.perf_counter()
    calibration = calibration_loops_per_s()
    log.info("household ...")
    household = guarded("household", lambda: bench_household(args.seconds))
    log.info("alfworld ...")
    alfworld = guarded("alfworld", lambda: bench_alfworld(os.path.abspath(args.alfworld_data), 4 * args.seconds))
    log.info("alfworld before/after on valid_seen walkthroughs ...")
    alfworld_data = os.path.abspath(args.alfworld_data)
    before_after = guarded("alfworld before/after", lambda: bench_alfworld_before_after(alfworld_data, args.games))
    log.info("env pool ...")
    pools = guarded("pool", lambda: bench_pools(alfworld_data))
    log.info("webshop ...")
    webshop = guarded("webshop", lambda: bench_webshop(os.path.abspath(args.webshop_data), args.seconds))

    def field(result: dict[str, Any], key: str) -> Any:
        return result.get(key, f"error: {result.get('error', 'missing')}")

    report = {
        "household.steps_per_s": field(household, "steps_per_s"),
        "alfworld.steps_per_s": field(alfworld, "steps_per_s"),
        "alfworld.reset_s": field(alfworld, "cold_reset_s"),
        "alfworld.step_speedup": field(before_after, "step_speedup"),
        "alfworld.walkthrough_steps_per_s": {"before": field(before_after, "before_steps_per_s"),
                                             "after": field(before_after, "after_steps_per_s")},
        "alfworld.transcripts_identical": (f"{before_after['transcripts_identical']}/{before_after['games']}"
                                           if "games" in before_after else field(before_after, "games")),
        "pool.alfworld_steps_per_s": ({w: r["steps_per_s"] for w, r in pools.items()} if "1" in pools
                                      else field(pools, "steps_per_s")),
        "webshop.steps_per_s": field(webshop, "steps_per_s"),
        "ratios": {
            "household_steps_per_calibration_loop": (household["steps_per_s"] / calibration
                                                     if "steps_per_s" in household else None),
            "household_over_alfworld_steps": (household["steps_per_s"] / alfworld["steps_per_s"]
                                              if "steps_per_s" in household and "steps_per_s" in alfworld else None),
            "pool_2_over_1_workers": pools["2"]["steps_per_s"] / pools["1"]["steps_per_s"] if "1" in pools else None,
        },
        "calibration_loops_per_s": calibration,
        "details": {"household": household, "alfworld": alfworld, "alfworld_before_after": before_after,
                    "pool": pools, "webshop": webshop},
        "notes": "one process, one core; random admissible actions (fixed RNG); steps/s counts step() only; "
                 f"alfworld.reset_s = mean first (uncached) reset of {alfworld.get('cold_resets')} valid_seen games; "
                 "alfworld.step_speedup = mean step time of unmodified TextWorld / AlfworldEnv over the same "
                 "valid_seen walkthroughs in this run; pool = EnvPool, 16 ALFWorld slots, 20 batched steps, "
                 "median of 3 alternating runs per worker count",
        "machine": machine_info(cpu=cpu_model(), load_average_at_end=os.getloadavg(), **versions()),
        "wall_s": time.perf_counter() - start,
    }
    write_result(args.out, report)


if __name__ == "__main__":
    main()
