"""benchmarks/gpu_check.sh --dry-run: the GPU check's every section runs on tiny shapes on the CPU, so its first use on
a GPU measures instead of debugging."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_completes_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)], check=True,
                   capture_output=True, cwd=REPO, env=env)
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["platform"] == "cpu"
    for section in ("decode", "update", "attention"):
        assert "error" not in result[section], result[section]
    for batch in ("batch_1", "batch_64"):
        assert result["decode"][batch]["tokens_per_s"] > 0
    assert result["update"]["mfu"] > 0
    # The dry run compares dense attention with itself: bit-identical outputs and gradients.
    assert result["attention"]["max_abs_diff_output"] == 0.0 and result["attention"]["max_abs_diff_grads"] == 0.0
    for phase in ("rollout", "reference", "update"):
        peak = result["phase_peaks"][phase]
        assert "error" not in peak, peak
        # The estimate holds the resident train state and π_ref; the CPU keeps no device memory statistics.
        assert peak["estimate_gib"] >= peak["resident_gib"] and peak["measured_peak_gib"] is None
