"""RLConfig: every knob of the Skill1 policy update, with the paper's values as defaults.

Sources (paper Appendix B and C, Tables 4–6): λ1 = λ2 = 0.3, β = 0.01 (low-variance KL, a loss term), lr 1e-6,
mini-batch 256 samples, micro-batch 16 per device; ε = 0.2, weight decay 0.01, grad-norm clip 1.0 and the
``token-mean`` aggregation are the verl trainer defaults the paper's runs used where the paper is silent.
"""

from __future__ import annotations

import dataclasses

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "rollout-mean")
OBJECTIVES = ("skill1", "grpo")
ADVANTAGES = ("grpo", "gigpo")
GIGPO_NORMS = ("std", "none")
MOMENT_DTYPES = ("float32", "bfloat16")
REFERENCE_DTYPES = ("param", "compute")
ROW_LAYOUTS = ("padded", "packed")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Hyperparameters of the Skill1 update (Eq. 8–13).

    Attributes:
      objective: ``"skill1"`` (util + λ1 rerank + λ2 distill + β KL) or ``"grpo"`` (PPO-clip on every response
        token with the row's advantage + β KL; the plain-GRPO baseline).
      clip_eps: PPO ratio clip ε (both sides).
      lambda_rerank: λ1, weight of the REINFORCE re-rank term (Eq. 9, 13).
      lambda_distill: λ2, weight of the distillation PPO term (Eq. 10, 13).
      kl_coef: β, weight of the low-variance (k3) KL to the frozen reference policy.
      dual_clip: dual-clip constant c of PPO (Ye et al. 2020; verl's ``clip_ratio_c``): for Â < 0 the PPO loss of a
        token is capped at −c·Â (``rl.loss.ppo_clip_loss``). 0 turns it off (the paper's objective); the released
        runs use verl's default 3.
      entropy_coef: weight of the entropy bonus (subtracted from the loss; mean entropy over every response token of
        every trained row, as verl's actor computes it over its samples' response masks). 0 keeps the paper's
        objective; the released runs use verl's default 0.001.
      invalid_format_penalty: subtracted from the reward of each action turn whose reply does not parse
        (``agent.parsing.parse_action``: missing ``<action>`` or ``<think>`` tags, or CJK characters), before the
        group normalisation (``rl.advantages.turn_utilization_advantage``), as the released runs do on that turn's
        sample. In units of the task-success reward r ∈ {0, 1}: the release's 0.1 (ALFWorld) / 0.5 (WebShop) on its
        10-point reward scale are 0.01 / 0.05 here. 0 keeps the paper's Eq. 8.
      loss_agg: ``"token-mean"`` (mean over the term's tokens in the mini-batch; what the released runs used),
        ``"seq-mean-token-mean"`` (mean over a row's tokens, i.e. one generated segment's, then over rows) or
        ``"rollout-mean"`` (paper Eq. 13 / Appendix B: mean over a rollout's tokens of the term, then over
        rollouts; ``rl.rows.rollout_mean_weights``).
      learning_rate: AdamW learning rate (constant, no warm-up).
      weight_decay: AdamW decoupled weight decay.
      max_grad_norm: global-norm gradient clip.
      adam_b1, adam_b2, adam_eps: AdamW moments (torch defaults, as in verl).
      moment_dtype: dtype of AdamW's first moment: ``"float32"`` or ``"bfloat16"`` (saves 2 bytes per parameter;
        rounded to nearest, as optax ``mu_dtype``).
      second_moment_dtype: dtype of AdamW's second moment: ``"float32"`` or ``"bfloat16"`` (2 more bytes per
        parameter; stochastically rounded, see ``rl.adam``). Both bfloat16 is the 7B configuration for 16 GiB
        chips (docs/model.md).
      reference_dtype: how the frozen reference policy π_ref keeps its weights: ``"param"`` (a copy in the param
        dtype, float32) or ``"compute"`` (in ``ModelConfig``'s compute dtype, e.g. bfloat16 on accelerators: half
        the bytes; the reference forward casts every weight to that dtype on use, so its log-probs are the same bits
        either way; ``model.qwen2.compute_params``).
      row_layout: how the update and the reference scoring lay rows out (``rl.rows``): ``"padded"`` (one row per
        sequence, padded to its micro-batch's ladder length) or ``"packed"`` (several rows per sequence, first-fit
        decreasing, attention and positions per row; the same loss and gradient with less padding).
      mini_batch_size: rows per optimizer update (one ``train_step`` call).
      micro_batch_size: rows per device per gradient-accumulation step.
      logprob_chunk: sequence positions per chunk of the vocabulary projection, so [B, T, V] float32 logits are
        never materialised (at most [B, chunk, V]).
      adv_eps: ε added to the group std in GRPO normalization.
      advantage: the estimator of the action rows' advantages: ``"grpo"`` (Â_util of the rollout on every turn,
        Eq. 8, 12) or ``"gigpo"`` (Feng et al. 2025, Eq. 8: the episode-level group advantage plus ω times the
        step-level advantage over anchor-state groups, ``rl.advantages.gigpo_advantage``). Query, re-rank and
        distill rows keep their Skill1 advantages either way.
      gigpo_gamma: γ of GiGPO's step-level discounted returns (GiGPO's runs: 0.95).
      gigpo_omega: ω, weight of GiGPO's step-level advantage (the paper: 1).
      gigpo_norm: GiGPO's F_norm, at both levels: ``"std"`` (the group std + ``adv_eps``; verl-agent's
        ``mean_std_norm``, its scripts' setting) or ``"none"`` (F_norm = 1, ``mean_norm``: the paper's "w/o std"
        rows).
      temperature: the rollouts' sampling temperature τ. π_θ and π_ref are softmax(logits / τ), the policy the
        samples were drawn from and the sampler's log-probs (π_old) score, as verl's actor does; 1.0 is the paper's
        setting. In an ``ExperimentConfig`` leave it at 1.0: ``effective_rl`` sets it from
        ``GenerationConfig.temperature``.
    """

    objective: str = "skill1"
    clip_eps: float = 0.2
    lambda_rerank: float = 0.3
    lambda_distill: float = 0.3
    kl_coef: float = 0.01
    dual_clip: float = 0.0
    entropy_coef: float = 0.0
    invalid_format_penalty: float = 0.0
    loss_agg: str = "token-mean"
    learning_rate: float = 1e-6
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    moment_dtype: str = "float32"
    second_moment_dtype: str = "float32"
    reference_dtype: str = "param"
    row_layout: str = "padded"
    mini_batch_size: int = 256
    micro_batch_size: int = 16
    logprob_chunk: int = 512
    adv_eps: float = 1e-6
    advantage: str = "grpo"
    gigpo_gamma: float = 0.95
    gigpo_omega: float = 1.0
    gigpo_norm: str = "std"
    temperature: float = 1.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"RLConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"RLConfig.advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.gigpo_norm not in GIGPO_NORMS:
            raise ValueError(f"RLConfig.gigpo_norm must be one of {GIGPO_NORMS}, got {self.gigpo_norm!r}")
        if not 0.0 <= self.gigpo_gamma <= 1.0:
            raise ValueError(f"RLConfig.gigpo_gamma must be in [0, 1], got {self.gigpo_gamma}")
        if self.gigpo_omega < 0:
            raise ValueError(f"RLConfig.gigpo_omega must be >= 0, got {self.gigpo_omega}")
        for name in ("moment_dtype", "second_moment_dtype"):
            if getattr(self, name) not in MOMENT_DTYPES:
                raise ValueError(f"RLConfig.{name} must be one of {MOMENT_DTYPES}, got {getattr(self, name)!r}")
        if self.reference_dtype not in REFERENCE_DTYPES:
            raise ValueError(f"RLConfig.reference_dtype must be one of {REFERENCE_DTYPES}, "
                             f"got {self.reference_dtype!r}")
        if self.row_layout not in ROW_LAYOUTS:
            raise ValueError(f"RLConfig.row_layout must be one of {ROW_LAYOUTS}, got {self.row_layout!r}")
        if self.loss_agg not in LOSS_AGG_MODES:
            raise ValueError(f"RLConfig.loss_agg must be one of {LOSS_AGG_MODES}, got {self.loss_agg!r}")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"RLConfig.clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.dual_clip != 0.0 and not self.dual_clip > 1.0:
            raise ValueError(f"RLConfig.dual_clip must be 0 (off) or > 1, got {self.dual_clip}")
        for name in ("lambda_rerank", "lambda_distill", "kl_coef", "entropy_coef", "invalid_format_penalty",
                     "weight_decay", "adv_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"RLConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "max_grad_norm", "mini_batch_size", "micro_batch_size", "logprob_chunk",
                     "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RLConfig.{name} must be > 0, got {getattr(self, name)}")

    def replace(self, **changes) -> "RLConfig":
        return dataclasses.replace(self, **changes)
