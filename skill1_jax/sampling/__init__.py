"""Rollout sampling: bucketed, jitted prefill + while-loop decode with a KV cache, stop strings and log-probs."""

from skill1_jax.sampling.buckets import Buckets
from skill1_jax.sampling.logits import SamplingConfig, sample_logits, sampling_log_probs
from skill1_jax.sampling.sampler import FINISH_REASONS, SampleResult, Sampler, generate, num_compiled_programs
from skill1_jax.sampling.stops import QWEN_EOS_IDS, StopMatcher

__all__ = ["Buckets", "FINISH_REASONS", "QWEN_EOS_IDS", "SampleResult", "Sampler", "SamplingConfig", "StopMatcher",
           "generate", "num_compiled_programs", "sample_logits", "sampling_log_probs"]
