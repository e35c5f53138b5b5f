"""benchmarks/step_model.py: seconds per paper step from work counts and chip figures, checked by hand."""

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def step_model():
    spec = importlib.util.spec_from_file_location("step_model", REPO / "benchmarks" / "step_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_model_decode_step_reads_weights_and_kv_at_the_stated_bandwidth(step_model):
    chip = step_model.CHIPS["h100-8"]
    work = {"stages": {"distill": {"rows": 256, "calls": 1, "prompt_tokens": 256 * 3500, "prefill_tokens": 256 * 3500,
                                   "decoded_tokens": 256 * 500, "concurrent_rows": 256, "decode_steps": 2000,
                                   "row_steps_used": 256 * 500, "row_steps_computed": 256 * 2000,
                                   "context_tokens": 4500}}}
    out = step_model.seconds(chip, work, None)
    # Qwen2.5-7B: 7,615,616,512 params in bfloat16 on every GPU (replicated layout), 32 rows per GPU, each reading
    # 4,500 cached tokens × (2 × 28 layers × 4 KV heads × 128 × 2 bytes) = 57,344 bytes per token.
    step_bytes = 2 * 7_615_616_512 + 32 * 4500 * 57_344
    step_s = step_bytes / (3.35e12 * 0.70)
    assert out["rollout"]["distill"]["decode_step_ms"] == pytest.approx(step_s * 1e3, abs=0.01)
    assert out["rollout"]["distill"]["decode_s"] == pytest.approx(2000 * step_s, abs=0.1)
    assert out["rollout"]["distill"]["decode_row_step_utilisation"] == 0.25
    # The update: 8 · P · tokens FLOPs (forward, rematerialised forward, backward) + attention, at 40 % of 8 GPUs.
    tokens = 256 * 4000
    attention = 3 * 4 * 28 * 3584 * tokens * 4000 / 2
    assert out["update_s"] == pytest.approx((8 * 7_615_616_512 * tokens + attention) / (8 * 989e12 * 0.4), abs=0.1)


def test_engine_work_decodes_the_generated_tokens_over_the_useful_fraction_in_steps_of_its_slots(step_model):
    ratios = {"useful_row_step_fraction": 0.8, "prefill_computed_over_requested": 1.1}
    work = step_model.paper_work(ratios, slots=40, turns=10)
    action = work["stages"]["action"]
    assert work["episodes"] == 256 and action["rows"] == 2560 and action["concurrent_rows"] == 40
    assert action["row_steps_computed"] == pytest.approx(2560 * 150 / 0.8)
    assert action["decode_steps"] == pytest.approx(2560 * 150 / 0.8 / 40)
    assert action["prefill_tokens"] == pytest.approx(2560 * 2000 * 1.1)
    # More slots than episodes: a stage never decodes more rows at once than it has episodes.
    assert step_model.paper_work(ratios, slots=512)["stages"]["query"]["concurrent_rows"] == 256
    assert step_model.engine_slots(256) == 40  # the paper preset: 2^18 cache slots at 6,144 per request


def test_step_model_writes_both_targets_beside_table3(step_model, tmp_path, monkeypatch):
    out = tmp_path / "step_model.json"
    monkeypatch.setattr("sys.argv", ["step_model.py", "--out", str(out), "--run", str(tmp_path / "no_run"),
                                     "--memory", str(tmp_path / "none.json")])
    step_model.main()
    result = json.loads(out.read_text())
    assert result["paper_table3"]["seconds_per_step"] == [387, 494]
    assert result["measured_run"] is None  # no run directory: every count comes from PAPER_WORK
    assert result["assumptions"]["engine"]["source"].startswith("rollout.json")  # the ratios: the rollout benchmark's
    for name in ("h100-8", "v5e-16"):
        target = result["targets"][name]
        assert set(target["phases_s"]) == {"rollout", "reference", "update"}
        assert target["step_s"] == pytest.approx(sum(target["phases_s"].values()), abs=0.2)
        assert target["dominant_phase"] == max(target["phases_s"], key=target["phases_s"].get)
        by_slots = target["slots_scenarios"]
        assert [s["slots"] for s in by_slots] == [40, 80, 160, 256]
        rollout = [s["phases_s"]["rollout"] for s in by_slots]
        assert rollout == sorted(rollout, reverse=True)  # more rows per weight read: less decode time
