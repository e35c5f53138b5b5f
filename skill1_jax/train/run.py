"""A training run as a function: workdir checks, model set-up, checkpoint/resume, preemption, metrics, plots.

``launch/train.py`` parses flags and calls ``train``; tests and ``experiments/`` call it directly.

Workdir contract (nothing is overwritten or lost):
  * a new run writes ``config.json`` and refuses a workdir that already holds checkpoints unless ``resume``;
  * ``resume`` requires checkpoints and the same config as recorded (a differing field is named);
  * ``checkpoints/<step>/`` (Orbax), ``metrics.jsonl`` + ``tb/`` (TensorBoard), ``metrics.png``, ``eval.jsonl``
    (every evaluation, one JSON per line) and ``results.json`` (the final evaluation);
  * a finished run resumed without ``results.json`` (killed after its final checkpoint) writes it from the
    recorded final evaluation, or evaluates the final checkpoint when that was not recorded either.

Several processes (``jax.distributed``, one per host; ``train.multihost``): every process runs ``train`` with the
same arguments and a mesh over all devices of the job; process 0 alone writes ``config.json``, the metrics,
evaluations, plots and results, all of them save and restore the checkpoints together, and a SIGTERM seen by any
process stops all of them after the same step.

Preemption: SIGTERM sets a flag; the current step finishes, a checkpoint is saved and ``train`` returns normally
(exit code 0 from the launcher), so the scheduler's restart resumes at the next step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
from typing import Any

import jax
from flax import nnx

from skill1_jax.config import ExperimentConfig
from skill1_jax.metrics import MetricsWriter, read_jsonl
from skill1_jax.parallel.distributed import is_coordinator
from skill1_jax.rl.pmap_step import replicated_layout_mesh
from skill1_jax.train.checkpoint import Checkpointer
from skill1_jax.train.evaluate import EvalResult
from skill1_jax.train.multihost import any_process
from skill1_jax.train.trainer import Trainer

log = logging.getLogger(__name__)
# Metric families plotted at the end of a run (paper Fig. 3–5, ``trainer.rollout_metrics``, and the costs).
PLOTTED = ("reward/success", "library/mean_utility", "distill/positive_rate", "distill/u_hat",
           "selection/task_skill_similarity", "library/size", "episode/invalid_format_rate", "train/loss",
           "eval/success", "seconds/step")


class UsageError(ValueError):
    """A user error in how the run was asked for (bad path, contradictory options); one clear line."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run (not what to train: that is the ``ExperimentConfig``).

    Attributes:
      workdir: run directory.
      model_dir: HF checkpoint directory of the initial policy (config.json + safetensors + tokenizer); None
        initialises ``config.model`` randomly from the seed (tests, benchmarks).
      tokenizer_dir: tokenizer directory when it is not in ``model_dir``.
      resume: continue from the newest valid checkpoint in ``workdir``.
      mesh_shape: (data, fsdp, tensor) device mesh for the update over all devices of the job; None = one
        device (single process only).
      progress: show tqdm bars.
    """

    workdir: str
    model_dir: str | None = None
    tokenizer_dir: str | None = None
    resume: bool = False
    mesh_shape: tuple[int, int, int] | None = None
    progress: bool = True


class PreemptionGuard(contextlib.AbstractContextManager):
    """Turns SIGTERM into a flag checked between steps (restores the previous handler on exit)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        del signum, frame
        log.warning("SIGTERM: finishing the current step, then saving a checkpoint and exiting")
        self.requested = True

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, preemption then kills as before
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if json.dumps(a, default=str) == json.dumps(b, default=str) else [f"{prefix[:-1]}: {a!r} → {b!r}"]


def prepare_workdir(cfg: ExperimentConfig, opts: RunOptions) -> pathlib.Path:
    """Validates the workdir against ``resume`` and records the config (see module docstring)."""
    workdir = pathlib.Path(opts.workdir).absolute()
    ckpt_dir = workdir / "checkpoints"
    has_ckpt = ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())
    recorded = workdir / "config.json"
    if opts.resume:
        if not has_ckpt:
            raise UsageError(f"--resume: {workdir} holds no checkpoint to resume from")
        if recorded.exists():
            diffs = _diff(json.loads(recorded.read_text()), json.loads(json.dumps(cfg.to_dict(), default=str)))
            if diffs:
                raise UsageError(f"--resume with a different config than {recorded}: {'; '.join(diffs[:5])}")
    elif has_ckpt:
        raise UsageError(f"{workdir} already holds a run (checkpoints/); pass --resume to continue it or choose a "
                         f"new --workdir")
    check_paths(opts)
    workdir.mkdir(parents=True, exist_ok=True)
    if not opts.resume and is_coordinator():
        recorded.write_text(cfg.to_json())
    return workdir


def check_paths(opts: RunOptions) -> None:
    """The model / tokenizer directories exist (checked before anything is written)."""
    if (opts.tokenizer_dir or opts.model_dir) is None:
        raise UsageError("a tokenizer is needed: pass --model_dir (with tokenizer files) or --tokenizer_dir")
    for what, path in (("--model_dir", opts.model_dir), ("--tokenizer_dir", opts.tokenizer_dir)):
        if path is not None and not os.path.isdir(path):
            raise UsageError(f"{what} {path!r} is not a directory")


def initial_policy(cfg: ExperimentConfig, opts: RunOptions, mesh: Any = None):
    """(config with the checkpoint's ModelConfig, graphdef, params, tokenizer) of the initial policy."""
    from skill1_jax.model.hf_io import load_hf_checkpoint, read_config
    from skill1_jax.model.qwen2 import Qwen2
    from skill1_jax.model.tokenizer import load_tokenizer

    check_paths(opts)
    tokenizer = load_tokenizer(opts.tokenizer_dir or opts.model_dir)
    if opts.model_dir is not None:
        model_cfg = read_config(opts.model_dir, remat=cfg.model.remat, compute_dtype=cfg.model.compute_dtype)
        cfg = cfg.replace(model=model_cfg)
        model = load_hf_checkpoint(opts.model_dir, mesh=mesh, remat=cfg.model.remat,
                                   compute_dtype=cfg.model.compute_dtype)
    else:
        model = Qwen2(cfg.model, rngs=nnx.Rngs(cfg.train.seed))
    graphdef, params = nnx.split(model)
    return cfg, graphdef, params, tokenizer


def with_panel_dir(cfg: ExperimentConfig, workdir: pathlib.Path) -> ExperimentConfig:
    """Task panels built from a data root are cached in the run's ``panels/`` (ALFWorld, WebShop)."""
    if cfg.env.name not in ("alfworld", "webshop") or "panel_dir" in cfg.env.kwargs:
        return cfg
    options = tuple(sorted({**cfg.env.kwargs, "panel_dir": str(workdir / "panels")}.items()))
    return cfg.replace(env=dataclasses.replace(cfg.env, options=options))


def record_panels(trainer: Trainer, workdir: pathlib.Path) -> None:
    """Writes ``panels.json``: size, hash and source of the train and eval panels (when the env exposes them)."""
    info = getattr(trainer.env, "panel_info", None)
    if info is None or not is_coordinator():
        return
    splits = {s: dataclasses.asdict(info(s)) for s in (trainer.config.env.train_split, trainer.config.env.eval_split)}
    (workdir / "panels.json").write_text(json.dumps(splits, indent=2))


def enable_compile_cache(root: str | os.PathLike) -> pathlib.Path:
    """XLA's persistent compilation cache in ``<root>/xla_cache``: runs that compile the same programs (the demo's
    Skill1 and GRPO runs, a sweep's variants, a rerun after preemption) find them compiled. Returns the directory."""
    path = pathlib.Path(root).absolute() / "xla_cache"
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def _mesh(shape):
    if shape is None:
        return None
    from skill1_jax.parallel.sharding import make_mesh

    data, fsdp, tensor = shape
    return make_mesh(data=data, fsdp=fsdp, tensor=tensor)


def train(cfg: ExperimentConfig, opts: RunOptions, *, encoder: Any = None, policy: Any = None,
          pool: Any = None, max_steps: int | None = None) -> dict[str, Any]:
    """Runs (or resumes) training to ``cfg.train.steps`` (or until ``max_steps`` steps of this call).

    Returns a summary: final step, whether it was preempted, the evaluations of this call.
    """
    if jax.process_count() > 1 and opts.mesh_shape is None:
        raise UsageError(f"a run of {jax.process_count()} processes needs --mesh over all {jax.device_count()} "
                         f"devices of the job")
    mesh = _mesh(opts.mesh_shape)
    if cfg.train.update_layout == "replicated":
        try:
            replicated_layout_mesh(mesh)
        except ValueError as e:
            raise UsageError(str(e)) from None
    workdir = prepare_workdir(cfg, opts)
    cfg = with_panel_dir(cfg, workdir)
    cfg, graphdef, params, tokenizer = initial_policy(cfg, opts, mesh)
    if encoder is None and cfg.spec.library:
        from skill1_jax.skills import SentenceEncoder

        encoder = SentenceEncoder()
    trainer = Trainer(cfg, graphdef, params, tokenizer=tokenizer, encoder=encoder, policy=policy, pool=pool,
                      mesh=mesh)
    record_panels(trainer, workdir)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints)
    if opts.resume:
        ckpt.restore(trainer)
    writer = None
    if is_coordinator():
        # Drop the rows this run writes again: those after the restored step, or all of them on a fresh start (a
        # run killed before its first checkpoint starts fresh and evaluates step 0 again).
        first_new = trainer.step + 1 if opts.resume else 0
        _truncate_jsonl(workdir / "eval.jsonl", keep_through=first_new - 1)
        writer = MetricsWriter(workdir, resume_step=first_new)
    trainer.writer = writer
    evals: list[EvalResult] = []
    t = cfg.train
    stop_at = t.steps if max_steps is None else min(t.steps, trainer.step + max_steps)
    preempted = False
    from tqdm import tqdm

    try:
        with PreemptionGuard() as guard:
            if t.eval_before_train and trainer.step == 0:
                evals.append(_record_eval(workdir, trainer.step, trainer.evaluate()))
            bar = tqdm(total=t.steps, initial=trainer.step, desc=f"{cfg.variant} train", disable=not opts.progress)
            while trainer.step < stop_at:
                m = trainer.train_step()
                bar.update(1)
                bar.set_postfix(success=f"{m['reward/success']:.2f}", lib=int(m.get("library/size", 0)))
                if (t.eval_every and trainer.step % t.eval_every == 0) or trainer.step == t.steps:
                    evals.append(_record_eval(workdir, trainer.step, trainer.evaluate(final=trainer.step == t.steps)))
                last = trainer.step == stop_at
                stop = any_process(guard.requested)  # every process saves and stops after the same step
                if stop or last or (t.checkpoint_every and trainer.step % t.checkpoint_every == 0):
                    ckpt.save(trainer)
                if stop:
                    preempted = True
                    break
            bar.close()
            if trainer.step == t.steps and not evals and not (workdir / "results.json").exists():
                # A finished run killed after its final checkpoint, before results.json (see module docstring).
                evals.append(_recorded_eval(workdir, trainer.step)
                             or _record_eval(workdir, trainer.step, trainer.evaluate(final=True)))
    finally:
        if writer is not None:
            writer.plot([n for n in PLOTTED])
            writer.close()
        ckpt.close()
        trainer.close()
    if trainer.step == t.steps and evals and is_coordinator():
        (workdir / "results.json").write_text(json.dumps(evals[-1].to_dict(), indent=2))
    return {"step": trainer.step, "preempted": preempted, "evals": evals, "workdir": str(workdir),
            "trainer": trainer}


def _truncate_jsonl(path: pathlib.Path, keep_through: int) -> None:
    """Drops lines of steps after the restored one (written before a crash, replayed after the resume)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= keep_through]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


def _record_eval(workdir: pathlib.Path, step: int, result: EvalResult) -> EvalResult:
    if is_coordinator():
        with open(workdir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **result.to_dict()}) + "\n")
        log.info("eval at step %d: %s", step, result.columns())
    return result


def _recorded_eval(workdir: pathlib.Path, step: int) -> EvalResult | None:
    """The evaluation ``eval.jsonl`` holds for ``step`` (the last one), or None."""
    rows = [r for r in read_jsonl(workdir / "eval.jsonl") if r.get("step") == step]
    return EvalResult.from_dict(rows[-1]) if rows else None


def evaluate_checkpoint(cfg: ExperimentConfig, opts: RunOptions, step: int | None = None, *, encoder: Any = None,
                        policy: Any = None) -> tuple[EvalResult, int]:
    """Restores params + library of a run's checkpoint (never the optimizer) and evaluates them on the final
    evaluation's panel (``evaluate.eval_panel``); (result, step)."""
    from skill1_jax.agent.history import ReferenceTrajectories
    from skill1_jax.envs import base
    from skill1_jax.train.evaluate import eval_key, eval_panel, evaluate
    from skill1_jax.train.policy import ModelPolicy
    from skill1_jax.train.rollout import RolloutContext
    from skill1_jax.train.trainer import make_pool

    workdir = pathlib.Path(opts.workdir).absolute()
    if not (workdir / "checkpoints").is_dir():
        raise UsageError(f"{workdir} has no checkpoints/ to evaluate")
    cfg = with_panel_dir(cfg, workdir)
    mesh = _mesh(opts.mesh_shape)
    cfg, graphdef, params, tokenizer = initial_policy(cfg, opts, mesh)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
    del params
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints)
    try:
        step, params, library = ckpt.restore_for_eval(abstract, cfg.library, step)
    finally:
        ckpt.close()
    if encoder is None and cfg.spec.library:
        from skill1_jax.skills import SentenceEncoder

        encoder = SentenceEncoder()
    tasks = eval_panel(cfg, base.make_env(cfg.env.name, **cfg.env.kwargs), final=True)
    pool = make_pool(cfg)
    try:
        ctx = RolloutContext(config=cfg, policy=policy or ModelPolicy(graphdef, params, tokenizer, cfg.generation),
                             pool=pool, library=library, encoder=encoder, references=ReferenceTrajectories(),
                             seed=cfg.train.seed)
        return evaluate(ctx, tasks, eval_key(cfg.train.seed), step=step), step
    finally:
        pool.close()
