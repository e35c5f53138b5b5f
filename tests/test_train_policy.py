"""``ModelPolicy`` (train/policy.py) on the continuous-batching engine: a reply depends only on its request, the
collection's key and the params, never on which other requests share the collection or when it was queued."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from skill1_jax import config as C
from skill1_jax.model.qwen2 import Qwen2
from skill1_jax.train.policy import ModelPolicy, Request, engine_config

from train_helpers import TEST_MODEL


def test_a_reply_is_the_same_alone_among_others_and_queued_mid_collection_under_a_transfer_guard(demo_tokenizer):
    gen = dataclasses.replace(C.cpu_tiny().generation, max_action_tokens=12, max_query_tokens=8)
    graphdef, params = nnx.split(Qwen2(TEST_MODEL, rngs=nnx.Rngs(0)))
    policy = ModelPolicy(graphdef, params, demo_tokenizer, gen)
    plays = [Request(prompt=f"you see a {x}. go to the {y}", rollout=r, turn=t)
             for r, (x, y, t) in enumerate([("mug", "desk", 0), ("key", "shelf", 2), ("mug", "desk", 0),
                                             ("lamp", "bed", 1)])]
    query = Request(prompt="find tips for the mug", rollout=1)
    rng = jax.random.key(5)
    together = policy.generate("action", plays, "train", rng)
    alone = [policy.generate("action", [p], "train", rng)[0] for p in plays]
    with jax.transfer_guard("disallow"):  # the engine moves data only through explicit device_put / device_get
        collection = policy.open("train", rng, rollouts=8)
        collection.submit("action", plays[2:])
        collection.submit("query", [query])
        first = collection.step()  # one decode window; the rest of the plays join mid-collection
        collection.submit("action", plays[:2])
        later = list(first)
        while collection.busy:
            later += collection.step()
    mid = {id(r): reply for r, reply in later}
    assert set(mid) == {id(r) for r in plays + [query]}
    for a, b, c, request in zip(together, alone, [mid[id(p)] for p in plays], plays):
        assert len(a.response_ids) > 0
        for other in (b, c):
            np.testing.assert_array_equal(a.response_ids, other.response_ids)
            np.testing.assert_array_equal(a.logprobs, other.logprobs)  # bitwise: no tolerance
            assert (a.text, a.truncated) == (other.text, other.truncated)
        np.testing.assert_array_equal(a.prompt_ids, c.prompt_ids)
    # Requests 0 and 2 differ only in their rollout: different keys, so (almost surely) different replies.
    assert not np.array_equal(together[0].logprobs, together[2].logprobs)
    # The stage is part of the key: the same prompt as a query request is answered from another stream.
    assert mid[id(query)].response_ids.size <= gen.max_query_tokens


def test_engine_slots_are_one_per_rollout_within_the_kv_budget_at_the_request_cache():
    paper, released = C.paper().generation, C.released().generation
    # 2^18 slots of KV at 6,144 per request: 42 requests, 40 in whole tiles of 8, for a 256-rollout stage
    assert (engine_config(paper, 256).slots, engine_config(paper, 256).cache_length) == (40, 6144)
    assert engine_config(released, 128).slots == 128  # 2^20 holds all of them
    tiny = engine_config(C.cpu_tiny().generation, 13)
    assert (tiny.slots, tiny.cache_length) == (16, 512)  # no budget: every rollout, in whole tiles; cache grows
    limited = dataclasses.replace(paper, request_cache_tokens=0, kv_cache_tokens=4 * 18432)
    with pytest.raises(ValueError, match=r"kv_cache_tokens=73728 holds no 8 requests of 18432 cache slots"):
        engine_config(limited, 256)  # the default request cache: max_prompt_tokens 16,384 + 2,048
