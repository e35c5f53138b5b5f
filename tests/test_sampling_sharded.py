"""Sampling with sharded params on 8 CPU devices: the training shardings (fsdp 4 × tensor 2) and each sampling
layout give the single-device greedy tokens, and the compiled decode program moves what the layout implies."""

import jax
import numpy as np
import pytest
from flax import nnx

from skill1_jax.config import SAMPLING_LAYOUTS
from skill1_jax.parallel.sharding import make_mesh, shard_model
from skill1_jax.sampling import Sampler, SamplingConfig, generate
from skill1_jax.sampling.collectives import COLLECTIVES, decode_collectives, model_weight_shapes
from skill1_jax.sampling.layout import LAYOUTS, SamplingLayout
from test_sampling import VOCAB, scaled_tiny_model

PROMPT_LENGTHS = (4, 30, 9, 50, 17, 2, 61, 33)  # batch 8, prompt bucket 64: splits over every layout's rows


@pytest.fixture(scope="module")
def prompts():
    rs = np.random.RandomState(1)
    return [list(rs.randint(0, VOCAB, n)) for n in PROMPT_LENGTHS]


@pytest.fixture(scope="module")
def single(prompts):
    return generate(scaled_tiny_model(), prompts, max_new_tokens=8, temperature=0.0, rng=jax.random.key(0),
                    eos_ids=())


def test_greedy_on_sharded_params_equals_single_device(prompts, single):
    assert jax.device_count() == 8
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    sharded_model = shard_model(scaled_tiny_model(), mesh)
    assert len(nnx.state(sharded_model)["q_kernel"].get_value().sharding.device_set) == 8
    rng = jax.random.key(0)
    with jax.transfer_guard("disallow"):
        sharded = generate(sharded_model, prompts, max_new_tokens=8, temperature=0.0, rng=rng, eos_ids=())
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, atol=1e-4)


def _placed(layout: str, abstract: bool = False):
    """(graphdef, params) of the tiny model on ``layout`` (``abstract``: as shapes and shardings); "train" is an
    8-way FSDP training mesh."""
    model = scaled_tiny_model()
    if layout == "train":
        shard_model(model, make_mesh(fsdp=8))
    graphdef, params = nnx.split(model)
    placement = SamplingLayout(layout, model.cfg.num_kv_heads)
    return graphdef, (placement.abstract if abstract else placement.place)(graphdef, params)


@pytest.mark.parametrize("layout", ["replicated", "tensor"])
def test_greedy_tokens_and_logprobs_on_sampling_layout_equal_single_device(layout, prompts, single):
    assert set(LAYOUTS) == set(SAMPLING_LAYOUTS)
    graphdef, params = _placed(layout)
    mesh = params["q_kernel"].get_value().sharding.mesh
    assert dict(mesh.shape) == ({"data": 8, "fsdp": 1, "tensor": 1} if layout == "replicated"
                                else {"data": 4, "fsdp": 1, "tensor": 2})  # tensor: gcd(2 KV heads, 8 devices)
    rng = jax.random.key(0)
    with jax.transfer_guard("disallow"):
        out = Sampler(VOCAB, eos_ids=()).generate(graphdef, params, prompts, SamplingConfig(8, temperature=0.0), rng)
    np.testing.assert_array_equal(out.tokens, single.tokens)
    np.testing.assert_allclose(out.logprobs, single.logprobs, atol=1e-5)


# Tiny model, f32: D 64, 2 layers, 4 query / 2 KV heads of 16, MLP 128, tied 512 × 64 embedding. Whole weights in
# elements: q, o 4,096; k, v 2,048; gate, up, down 8,192 (36,864 per layer); embedding 32,768.
WEIGHT_BYTES = (2 * 36864 + 32768) * 4  # 425,984
# Tensor layout (tensor 2 × data 4, 2 of the 8 rows per device), per token: the embedding lookup from the
# vocabulary-split table, the output projection and MLP down projection of each layer each all-reduce the
# [2, 1, 64] f32 activation (5 × 512 B); greedy sampling over the vocabulary split in 2 all-reduces the row maxima
# (f32[2], 8 B), then the chosen 32-entry block and its normaliser ((f32[2, 1, 32], f32[2]), 264 B), and
# all-gathers each half's block maxima and their indices (f32[2, 2] + s32[2, 2], 32 B); the loop condition
# all-reduces "every row done" over the data axis (pred, 1 B).
TENSOR_LOOP = {"all-reduce": {"count": 8, "bytes": 5 * 512 + 8 + 264 + 1}, "all-gather": {"count": 2, "bytes": 32}}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_decode_collectives_match_the_hand_count_of_each_layout(layout):
    graphdef, params = _placed(layout, abstract=True)  # compiled without placing anything
    _, decode = Sampler(VOCAB, eos_ids=()).lower_decode(graphdef, params, batch=8, prompt_length=64,
                                                        cfg=SamplingConfig(8, temperature=0.0))
    report = decode_collectives(decode.as_text(), model_weight_shapes(scaled_tiny_model().cfg))
    moved = {where: {k: v for k, v in report[where].items() if v["count"]} for where in ("loop", "outside")}
    copies = {(c["where"], tuple(c["shape"])) for c in report["full_weight_copies"]}
    if layout == "train":  # every weight gathered once per segment, before the loop: 14 kernels and the head
        assert moved["outside"] == {"all-gather": {"count": 15, "bytes": WEIGHT_BYTES}}
        assert report["full_weight_copy"] and {w for w, _ in copies} == {"outside"}
        assert moved["loop"]["all-gather"]["bytes"] < 2048 * 4  # per token only token ids move, no weight
    elif layout == "replicated":  # whole weights are inputs; per token only the "all rows done" flag is reduced
        assert moved == {"loop": {"all-reduce": {"count": 1, "bytes": 1}}, "outside": {}}
        assert copies == {("input", (64, 4, 16)), ("input", (64, 2, 16)), ("input", (4, 16, 64)),
                          ("input", (64, 128)), ("input", (128, 64)), ("input", (512, 64))}
    else:
        assert moved == {"loop": TENSOR_LOOP, "outside": {}}
        assert not report["full_weight_copy"]
    assert set(report["loop"]) == set(COLLECTIVES)
