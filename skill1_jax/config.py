"""The experiment config tree: one frozen dataclass composing every knob of a run, with the paper's presets.

``ExperimentConfig`` = ``ModelConfig`` (network) + ``RLConfig`` (update) + ``LibraryConfig`` (skill memory) +
``GenerationConfig`` (sampling per stage) + ``EnvConfig`` (which world, splits, turn limit) + ``TrainConfig``
(steps, N × G, evaluation, checkpoints) + the ``variant`` (the ablation rows of paper Table 2).

Presets:
  * ``paper``    — paper Tables 4–6: G = 16, K = 5, w_sim = 0.6, λ1 = λ2 = 0.3, 16 tasks/step (ALFWorld), 150
                   steps, eval every 20 steps on 64 tasks (stratified by type) and after the last on the whole
                   split, at temperature 0.4, Qwen2.5-7B.
  * ``released`` — the released launch scripts: as ``paper`` but G = 8, K = 3, w_sim = 1.0, and verl's dual clip,
                   entropy bonus and invalid-format penalty, all K skills at evaluation (docs/rl.md lists every
                   difference).
  * ``cpu_tiny`` — the built-in household world with a tiny policy on a 2-core CPU: minutes, same code paths.
  * ``demo``     — ``cpu_tiny`` in the CPU demo's RL world (small rooms, pick and look, 6 turns), where RL moves
                   the shipped warm-started tiny policy (``launch.demo``, ``experiments.learning_curves``).

Variants are config differences, never code forks (``VariantSpec`` says which stages run and how the loss is
weighted); ``ExperimentConfig.effective_rl`` applies the variant to ``RLConfig``. Flags exist only in ``launch/``;
``override`` turns ``section.field=value`` strings into a new config with one clear error per bad entry.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from skill1_jax.model.config import ModelConfig
from skill1_jax.rl.config import RLConfig
from skill1_jax.skills.config import LibraryConfig


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """What one row of paper Table 2 changes.

    Attributes:
      selection: run the query (stage A) and re-rank (stage B) stages; without it the raw task text is the
        retrieval query and the retrieval order is the ranking ("w/o Selection", paper Table 2).
      distillation: ``"model"`` (stage D writes the skill, Eq. 10), ``"raw"`` (no stage D; the raw trajectory of a
        successful rollout is stored as the skill: "w/o Distillation") or ``"none"`` (nothing is stored).
      library: retrieve and inject skills at all ("w/o Library" = plain GRPO on the actions).
      lambda_rerank, lambda_distill: None keeps ``RLConfig``'s λ; a number overrides it.
    """

    selection: bool = True
    distillation: str = "model"
    library: bool = True
    lambda_rerank: float | None = None
    lambda_distill: float | None = None


VARIANTS: Mapping[str, VariantSpec] = {
    "skill1": VariantSpec(),
    "no_selection": VariantSpec(selection=False),
    "no_distillation": VariantSpec(distillation="raw"),
    "no_library": VariantSpec(selection=False, distillation="none", library=False),
    "lambda1_0": VariantSpec(lambda_rerank=0.0),
    "lambda2_0": VariantSpec(lambda_distill=0.0),
    "lambda_both_0": VariantSpec(lambda_rerank=0.0, lambda_distill=0.0),
}


OVERLONG_PROMPT_POLICIES = ("error", "drop")
SAMPLING_LAYOUTS = ("train", "replicated", "tensor")  # skill1_jax.sampling.layout


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings of the four stages.

    Attributes:
      temperature, top_p, top_k: training rollouts (the verl trainer's defaults 1.0 / 1.0 / 0; the paper
        does not state them).
      eval_temperature: evaluation rollouts sample at 0.4 (paper Appendix C).
      max_query_tokens, max_rank_tokens, max_action_tokens, max_distill_tokens: response limits per stage (the
        paper caps every response at 2,048). A reply that hits its limit is *truncated*: its action is parsed as
        usual (verl-agent does), but its tokens never carry loss (``rl.rows``).
      max_prompt_tokens: prompt limit in tokens (paper Appendix C and the released scripts: 16,384); 0 = none. A
        prompt over it is never truncated; what happens is ``overlong_prompt``.
      overlong_prompt: ``"error"`` stops the run with a message naming the prompt's stage, task, rollout, turn and
        length (the released scripts' ``truncation=error``); ``"drop"`` answers it from the whole prompt but leaves its
        row out of the update, counted as ``rows/overlong`` (``train.policy``, ``rl.rows``).
      sampling_layout: where rollouts are decoded (``sampling.layout``; docs/sampling.md): ``"train"`` on the update's
        shardings (each device gathers a full weight copy per decode segment), ``"replicated"`` a compute-dtype
        copy on every device (fastest where it fits, e.g. 80 GB GPUs at 7B), ``"tensor"`` tensor parallelism over
        heads (at most the KV heads) and MLP width, data parallelism over the remaining devices. The params are
        copied into it once per update.
      sampling_tensor_parallel: devices per tensor-parallel group under ``"tensor"``; 0 = gcd(KV heads, devices).
      kv_cache_tokens: KV-cache budget in cache slots. The rollout engine decodes as many requests at once as it
        holds at ``request_cache_tokens`` each (``train.policy.engine_config``); the static sampler splits a call
        over it into sub-batches with identical results (``Sampler.generate``); 0 = no budget. Bytes per slot:
        2 × layers × KV heads × head dim × dtype bytes (Qwen2.5-7B in bfloat16: 56 KiB), spread over the sampling
        devices.
      request_cache_tokens: cache slots the engine gives each request to start with: the longest prompt + reply a
        collection expects; 0 = ``max_prompt_tokens`` + the longest reply limit, or 512 without a prompt limit. A
        longer request doubles every request's cache (past the budget, so size it for the longest prompts).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    eval_temperature: float = 0.4
    max_query_tokens: int = 2048
    max_rank_tokens: int = 2048
    max_action_tokens: int = 2048
    max_distill_tokens: int = 2048
    max_prompt_tokens: int = 0
    overlong_prompt: str = "error"
    sampling_layout: str = "train"
    sampling_tensor_parallel: int = 0
    kv_cache_tokens: int = 0
    request_cache_tokens: int = 0

    def __post_init__(self):
        if self.overlong_prompt not in OVERLONG_PROMPT_POLICIES:
            raise ValueError(f"generation.overlong_prompt must be one of {OVERLONG_PROMPT_POLICIES}, got "
                             f"{self.overlong_prompt!r}")
        if self.max_prompt_tokens < 0:
            raise ValueError(f"generation.max_prompt_tokens must be >= 0 (0: no limit), got {self.max_prompt_tokens}")
        if self.sampling_layout not in SAMPLING_LAYOUTS:
            raise ValueError(f"generation.sampling_layout must be one of {SAMPLING_LAYOUTS}, got {self.sampling_layout!r}")
        if self.sampling_tensor_parallel < 0:
            raise ValueError(f"generation.sampling_tensor_parallel must be >= 0 (0: as many as the KV heads allow), "
                             f"got {self.sampling_tensor_parallel}")
        if self.kv_cache_tokens < 0:
            raise ValueError(f"generation.kv_cache_tokens must be >= 0 (0: no budget), got {self.kv_cache_tokens}")
        if self.request_cache_tokens < 0:
            raise ValueError(f"generation.request_cache_tokens must be >= 0 (0: from max_prompt_tokens), got "
                             f"{self.request_cache_tokens}")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Which world the agent plays.

    Attributes:
      name: ``household`` (built-in), ``alfworld`` or ``webshop``.
      options: constructor keyword arguments of the environment as (name, value) pairs (e.g. the household
        ``preset``, ALFWorld's ``data_root``).
      train_split, eval_split: task panels for training and evaluation (ALFWorld: ``valid_seen``, the paper's; the
        out-of-distribution ``valid_unseen`` is ``env.eval_split=valid_unseen``).
      max_turns: episode limit (ALFWorld 50, WebShop 15; the env's own limit applies too).
      num_workers: environment worker processes; 0 plays in-process (``SerialPool``).
    """

    name: str = "household"
    options: tuple[tuple[str, Any], ...] = (("preset", "default"),)
    train_split: str = "train"
    eval_split: str = "eval"
    max_turns: int = 50
    num_workers: int = 0

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


EVAL_INJECTIONS = ("all", "top1")


UPDATE_LAYOUTS = ("mesh", "replicated")


REFERENCE_SOURCES = ("current_step", "earlier_steps")


RAW_SKILL_SOURCES = ("success", "all")


OFFLOADS = ("moments", "reference")  # what ``train.offload`` may keep in host memory (``parallel.offload``)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The outer loop.

    Attributes:
      steps: training steps (paper: 150).
      tasks_per_step: N tasks per step, each played by ``group_size`` rollouts (G).
      group_size: G.
      eval_every: evaluate every k steps (and at the end); 0 only at the end.
      eval_tasks: size of the periodic evaluations' panel; 0 = the whole ``eval_split``. A smaller panel is a fixed
        sample of the split stratified by task type (``train.evaluate.eval_panel``).
      final_eval_tasks: size of the final evaluation's panel (after the last step; ``launch.eval``); None = the
        periodic panel, 0 = the whole split (the paper preset: Table 1 reports all of ALFWorld valid_seen).
      eval_before_train: evaluate the initial policy too (the released scripts' ``val_before_train``).
      eval_samples: plays of each evaluation task, each with its own sampling key, averaged (paper: 1). At the
        evaluation temperature one play of a small panel is a noisy estimate: the demo's warm start won 9 to 18
        of the same 96 held-out tasks depending on the sampling key alone, so small-panel runs use more.
      eval_injection: the skills injected into the evaluation rollouts' play prompts: ``"all"`` (the K re-ranked
        candidates in the re-ranked order, as the released code does) or ``"top1"`` (the top-ranked one, as in
        training and as the paper describes). Training always injects the top-1.
      seed: run seed (task order, sampling keys, model init when no checkpoint is given).
      checkpoint_every: save a checkpoint every k steps (0: only at the end / on preemption).
      keep_checkpoints: keep the newest n checkpoints.
      length_bucket: training rows are padded to a multiple of this many tokens (bounds compiled programs).
      update_layout: how the policy update spreads over the device mesh. ``"mesh"``: GSPMD over the (data, fsdp,
        tensor) mesh, params and Adam moments sharded by the rule table (FSDP: what a 7B policy needs;
        ``rl.train_step``). ``"replicated"``: the data-parallel (pmap) layout on a data-only mesh
        (``--mesh=<devices>,1,1``): whole params on every device, each device's gradient sum all-reduced once per
        update (``rl.pmap_step``): for policies that fit one chip. Both compute the same update.
      reference_source: where the distillation prompt's contrastive reference (the most recent opposite-outcome
        trajectory of the same task; released code) comes from. ``"current_step"``: the step's own rollouts of the
        same group first (they have all ended when distillation starts; within a group a higher rollout index is more
        recent), then the store of earlier steps; ``"earlier_steps"``: the store only, which the trainer writes after
        the update, so the G − 1 other rollouts of the group are never eligible.
      raw_skills: "w/o Distillation" (``no_distillation``) stores raw trajectories as skills; ``"success"`` stores those
        of successful rollouts (the admission rule of distilled skills, r = 1), ``"all"`` those of failed ones too
        (the paper's Table 3 library grows ~2.4× faster without distillation; storing every rollout is one reading).
      offload: what waits in host memory while a phase does not read it (``parallel.offload``): ``"moments"`` (AdamW
        state, outside the update) and / or ``"reference"`` (π_ref's params, outside reference scoring). For chips
        where the resident step does not fit (7B on TPU v5e-8: ``["moments", "reference"]``); it costs a copy of
        each to device and back per step and changes no value.
    """

    steps: int = 150
    tasks_per_step: int = 16
    group_size: int = 16
    eval_every: int = 20
    eval_tasks: int = 64
    final_eval_tasks: int | None = None
    eval_before_train: bool = True
    eval_samples: int = 1
    eval_injection: str = "all"
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    length_bucket: int = 256
    update_layout: str = "mesh"
    reference_source: str = "current_step"
    raw_skills: str = "success"
    offload: tuple[str, ...] = ()

    @property
    def final_panel_size(self) -> int:
        """The final evaluation's panel size (``final_eval_tasks``, or ``eval_tasks`` when that is None)."""
        return self.eval_tasks if self.final_eval_tasks is None else self.final_eval_tasks


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run needs; the single source of truth (``to_json`` is recorded in every run directory)."""

    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig.from_preset("qwen2.5-7b"))
    rl: RLConfig = RLConfig()
    library: LibraryConfig = LibraryConfig()
    generation: GenerationConfig = GenerationConfig()
    env: EnvConfig = EnvConfig()
    train: TrainConfig = TrainConfig()
    variant: str = "skill1"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {sorted(VARIANTS)}")
        t = self.train
        for name in ("steps", "tasks_per_step", "group_size", "eval_samples"):
            if getattr(t, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        if min(t.eval_tasks, t.final_panel_size) < 0:
            raise ValueError(f"train.eval_tasks={t.eval_tasks} and train.final_eval_tasks={t.final_eval_tasks} must "
                             f"be >= 0 (0: the whole evaluation split)")
        if self.env.max_turns < 1:
            raise ValueError(f"env.max_turns must be >= 1, got {self.env.max_turns}")
        for field, choices in (("update_layout", UPDATE_LAYOUTS), ("eval_injection", EVAL_INJECTIONS),
                               ("reference_source", REFERENCE_SOURCES), ("raw_skills", RAW_SKILL_SOURCES)):
            if getattr(t, field) not in choices:
                raise ValueError(f"train.{field} must be one of {choices}, got {getattr(t, field)!r}")
        if not set(t.offload) <= set(OFFLOADS):
            raise ValueError(f"train.offload must name some of {OFFLOADS}, got {t.offload!r}")
        if self.rl.temperature not in (1.0, self.generation.temperature):
            raise ValueError(f"rl.temperature={self.rl.temperature} differs from generation.temperature="
                             f"{self.generation.temperature}: the learner scores the policy the rollouts were sampled "
                             "from; set generation.temperature only (effective_rl copies it)")

    @property
    def spec(self) -> VariantSpec:
        return VARIANTS[self.variant]

    @property
    def effective_rl(self) -> RLConfig:
        """``rl`` with the variant's λ overrides and the training rollouts' temperature (greedy rollouts are scored
        at 1, as the sampler scores them); ``no_library`` trains with the plain GRPO objective."""
        spec, changes = self.spec, {"temperature": self.generation.temperature or 1.0}
        if spec.lambda_rerank is not None:
            changes["lambda_rerank"] = spec.lambda_rerank
        if spec.lambda_distill is not None:
            changes["lambda_distill"] = spec.lambda_distill
        if not spec.library:
            changes["objective"] = "grpo"
        return self.rl.replace(**changes)

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ExperimentConfig":
        """Inverse of ``to_dict`` (e.g. a run's recorded ``config.json``)."""
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs = {}
        for name, value in values.items():
            if name not in sections:
                raise ValueError(f"ExperimentConfig: unknown section {name!r}")
            kwargs[name] = value if name == "variant" else _SECTION_TYPES[name](**_tuplify(name, value))
        return cls(**kwargs)


_SECTION_TYPES = {"model": ModelConfig, "rl": RLConfig, "library": LibraryConfig, "generation": GenerationConfig,
                  "env": EnvConfig, "train": TrainConfig}
SECTION_NAMES = tuple(_SECTION_TYPES)


def _tuplify(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if section == "env" and "options" in out:
        out["options"] = tuple(tuple(kv) for kv in out["options"])
    return out


# ---- presets ------------------------------------------------------------------------------------------------
def paper(env: str = "alfworld") -> ExperimentConfig:
    """Paper §4.1 and Appendix C Tables 4–6. WebShop: 32 tasks/step, eval on 128, 15 turns.

    Memory: sized so the 7B update fits 16 GiB chips (TPU v5e) on 8-way FSDP (``--mesh=1,8,1``; the paper's 8
    GPUs): one 4,096-token row per device per micro-step, AdamW moments in bfloat16 (ν stochastically rounded),
    MLP in 4 rematerialised sequence chunks (``benchmarks/memory_7b.py``: 15.4 of 15.75 GiB on a v5e compile).
    On larger chips ``--rl.moment_dtype=float32 --rl.second_moment_dtype=float32 --model.mlp_chunks=1
    --rl.micro_batch_size=16`` restores the exact optimizer and the paper's micro-batch.
    """
    webshop = env == "webshop"
    return ExperimentConfig(
        model=ModelConfig.from_preset("qwen2.5-7b", remat=True, mlp_chunks=4),
        # π_ref in bfloat16: the reference forward computes in bfloat16 anyway, so the float32 copy bought nothing
        # but 3.8 GiB per chip at 8-way FSDP.
        rl=RLConfig(micro_batch_size=1, moment_dtype="bfloat16", second_moment_dtype="bfloat16",
                    reference_dtype="compute"),
        library=LibraryConfig.paper(),
        # Sampling on 16 GiB chips: a replicated 15.2 GB copy cannot sit beside the train-state shard, so tensor
        # parallelism over the 4 KV heads (3.8 GB of weights per chip); 2^18 cache slots are 14 GiB of bfloat16 KV,
        # 1.75 GiB per chip over 8 chips: 40 engine slots of 6,144 (a distill prompt in its 4,096 bucket + 2,048).
        generation=GenerationConfig(max_prompt_tokens=16384, sampling_layout="tensor", kv_cache_tokens=1 << 18,
                                    request_cache_tokens=6144),
        env=_env(env, max_turns=15 if webshop else 50),
        train=TrainConfig(steps=150, tasks_per_step=32 if webshop else 16, group_size=16, eval_every=20,
                          eval_injection="top1",
                          eval_tasks=128 if webshop else 64, final_eval_tasks=0),
    )


def released(env: str = "alfworld") -> ExperimentConfig:
    """The released launch scripts (verl-agent based): G = 8, K = 3, w_sim = 1.0, 16 tasks/step and eval 64 on both
    environments; the WebShop script leaves λ1 = λ2 at the collector default 1.0. verl's trainer defaults the scripts
    keep: dual-clip c = 3 and entropy bonus 0.001; the scripts' invalid-format penalty 0.1 (ALFWorld) / 0.5 (WebShop)
    on their 10-point reward, i.e. 0.01 / 0.05 of r ∈ {0, 1}; evaluation injects all K re-ranked skills. Both presets
    limit prompts to 16,384 tokens and stop on a longer one. docs/rl.md tabulates every difference from ``paper``."""
    base = paper(env)
    webshop = env == "webshop"
    rl = base.rl.replace(dual_clip=3.0, entropy_coef=0.001, invalid_format_penalty=0.05 if webshop else 0.01)
    if webshop:
        rl = rl.replace(lambda_rerank=1.0, lambda_distill=1.0)
    # Sized for the paper's 80 GB GPUs (8x H800): a bfloat16 copy per GPU (15.2 GB) fits and decodes without
    # collectives, and 2^20 cache slots (7 GiB of KV per GPU) hold a whole 128-row stage of 6,144-slot rows.
    generation = dataclasses.replace(base.generation, sampling_layout="replicated", kv_cache_tokens=1 << 20)
    return base.replace(rl=rl, library=LibraryConfig.released(), generation=generation,
                        train=dataclasses.replace(base.train, group_size=8, tasks_per_step=16, eval_tasks=64,
                                                  eval_injection="all"))


def cpu_tiny(env: str = "household") -> ExperimentConfig:
    """Minutes on a 2-core CPU: the household world's easy preset, the demo's tiny policy (``demo`` model preset
    over a household BPE, ``skill1_jax.demo.tiny_policy``), short replies, small N × G.

    The learning rate is far above the paper's 1e-6 because a 1 M-parameter policy trained for tens of steps
    needs it; every other rule (losses, library, evaluation protocol) is the paper's.
    """
    return ExperimentConfig(
        model=ModelConfig.from_preset("demo"),
        rl=RLConfig(learning_rate=1e-4, micro_batch_size=8, mini_batch_size=64, kl_coef=0.01),
        library=LibraryConfig(top_k=3),
        # The shipped tiny policy's distillations run to ~180 tokens (JSON lesson); a shorter limit cuts every one and
        # nothing is ever admitted. At temperature 1.0 it wins no household task (0/36), at 0.7 some: its
        # next-token distribution is flatter than an instruct model's.
        generation=GenerationConfig(max_query_tokens=24, max_rank_tokens=12, max_action_tokens=40,
                                    max_distill_tokens=192, temperature=0.7),
        env=_env(env, max_turns=8) if env != "household" else EnvConfig(
            name="household", options=(("preset", "easy"), ("num_eval", 48)), max_turns=8),
        # 12 evaluation tasks hold the six household / ALFWorld types; WebShop's five categories need 20 (its test
        # split is 76 % fashion and 2.6 % grocery: a stratified 12 would have no room for grocery).
        train=TrainConfig(steps=20, tasks_per_step=4, group_size=4, eval_every=10,
                          eval_tasks=20 if env == "webshop" else 12, eval_before_train=True, checkpoint_every=5,
                          keep_checkpoints=2, length_bucket=128),
    )


def demo(env: str = "household") -> ExperimentConfig:
    """The CPU demo's RL world, for the shipped warm-started tiny policy (``launch.demo``,
    ``experiments.learning_curves``): ``cpu_tiny`` on pick and look tasks in small household rooms (2-3 receptacles,
    0-1 distractors) with a 6-turn limit; training rollouts at the paper's temperature 1.0 with the paper's
    per-rollout loss average (Eq. 13); 6 steps of 4 tasks × G = 8; evaluated before training and after the last
    step on 32 held-out tasks played 4 times each.

    In these rooms a few hundred rollouts raise held-out success clearly, while in the warm start's own rooms (3-5
    receptacles, 10 turns) the tiny policy's failures are mostly whole-task, so most GRPO groups are all-fail and
    carry no signal (docs/results.md). A pick takes 4 commands when the object is in the first receptacle visited;
    heat needs 6, the whole turn limit, and would add mostly all-zero groups. Each held-out task is played 4 times
    because one play at temperature 0.4 is a noisy estimate. The contrastive reference comes from earlier steps only
    (``train.reference_source="earlier_steps"``): the warm start learned to distil from prompts without one, and a
    same-step reference in a quarter of its distill prompts leaves it admitting fewer, less type-specific skills.
    """
    if env != "household":
        raise ValueError(f"the demo preset plays the household world (the tiny policy's), not {env!r}")
    base = cpu_tiny()
    world = {**base.env.kwargs, "num_receptacles": (2, 3), "num_distractors": (0, 1),
             "task_types": ("pick_and_place_simple", "look_at_obj_in_light")}
    return base.replace(
        rl=base.rl.replace(loss_agg="rollout-mean"),
        generation=dataclasses.replace(base.generation, temperature=1.0),
        env=dataclasses.replace(base.env, options=tuple(sorted(world.items())), max_turns=6),
        train=dataclasses.replace(base.train, steps=6, tasks_per_step=4, group_size=8, eval_every=0, eval_tasks=32,
                                  eval_samples=4, checkpoint_every=2, reference_source="earlier_steps"),
    )


def _env(name: str, max_turns: int) -> EnvConfig:
    if name == "household":
        return EnvConfig(name="household", options=(("preset", "default"),), max_turns=max_turns)
    if name == "alfworld":
        return EnvConfig(name="alfworld", options=(), train_split="train", eval_split="valid_seen",
                         max_turns=max_turns)
    if name == "webshop":
        return EnvConfig(name="webshop", options=(), train_split="train", eval_split="test", max_turns=max_turns)
    raise ValueError(f"unknown environment {name!r}; choose household, alfworld or webshop")


PRESETS = {"paper": paper, "released": released, "cpu_tiny": cpu_tiny, "demo": demo}


def preset(name: str, env: str | None = None) -> ExperimentConfig:
    """A named preset (``paper``, ``released``, ``cpu_tiny``, ``demo``), optionally for another environment."""
    if name not in PRESETS:
        raise ValueError(f"unknown config preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]() if env is None else PRESETS[name](env)


# ---- overrides ----------------------------------------------------------------------------------------------
def _parse_value(text: str, current: Any, where: str) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{where}: expected true/false, got {text!r}")
    try:
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise ValueError(f"{where}: expected a {type(current).__name__}, got {text!r}") from None
    if current is None or isinstance(current, (tuple, list)):  # a list: an option set by an earlier override
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a free-form option may be a plain string
        if isinstance(value, list):
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)  # configs hold tuples (hashable)
        if current is None:
            return value
        raise ValueError(f"{where}: expected a JSON list, got {text!r}")
    return text


def override(cfg: ExperimentConfig, assignments: Sequence[str]) -> ExperimentConfig:
    """Applies ``section.field=value`` strings (e.g. ``rl.learning_rate=3e-6``, ``train.group_size=8``,
    ``env.options.preset=easy``, ``variant=no_library``); raises ValueError naming the first bad one."""
    sections: dict[str, dict[str, Any]] = {}
    variant = cfg.variant
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.field=value")
        key, text = item.split("=", 1)
        if key == "variant":
            variant = text
            continue
        parts = key.split(".")
        if parts[0] not in _SECTION_TYPES or len(parts) < 2:
            raise ValueError(f"override {item!r}: the key must be <section>.<field> with section one of "
                             f"{sorted(_SECTION_TYPES)} (or 'variant')")
        section = getattr(cfg, parts[0])
        changes = sections.setdefault(parts[0], {})
        if parts[0] == "env" and parts[1] == "options" and len(parts) == 3:
            opts = dict(changes.get("options", section.options))
            current = opts.get(parts[2])
            opts[parts[2]] = _parse_value(text, current, key)
            changes["options"] = tuple(sorted(opts.items()))
            continue
        if len(parts) != 2 or not hasattr(section, parts[1]) or parts[1] not in {
                f.name for f in dataclasses.fields(section)}:
            known = sorted(f.name for f in dataclasses.fields(section))
            raise ValueError(f"override {item!r}: {parts[0]} has no field {'.'.join(parts[1:])!r}; known: {known}")
        changes[parts[1]] = _parse_value(text, getattr(section, parts[1]), key)
    new = {name: dataclasses.replace(getattr(cfg, name), **changes) for name, changes in sections.items()}
    return cfg.replace(**new, variant=variant)


def fields_help(cfg: ExperimentConfig) -> list[str]:
    """``section.field = default`` lines for every field (``--helpfull``)."""
    lines = [f"variant = {cfg.variant!r}  (one of {', '.join(VARIANTS)})"]
    for name in _SECTION_TYPES:
        section = getattr(cfg, name)
        for f in dataclasses.fields(section):
            lines.append(f"{name}.{f.name} = {getattr(section, f.name)!r}")
    return lines
