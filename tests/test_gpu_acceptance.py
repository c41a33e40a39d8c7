"""bench/gpu_acceptance.sh keeps working where no GPU is: its --dry form runs the same measurements on the CPU."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from conftest import ROOT


def test_the_dry_run_measures_everything_the_gpu_run_reports(tmp_path):
    out = tmp_path / "dry.json"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_acceptance.sh"), "--dry", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [t["batch"] for t in result["throughput"]] == [4, 8]
    for t in result["throughput"]:
        assert t["questions_per_s"] > 0 and t["dense_step_s"] > 0 and t["flops_per_question"] > 0
        assert t["masked_overhead"] > -0.5
    assert 0 <= result["loader"]["loader_wait_share"] < 1 and result["loader"]["fed_questions_per_s"] > 0
    assert result["determinism"]["losses_identical"]  # the CPU is deterministic: two runs, the same losses
    assert len(result["determinism"]["losses"]) >= 3 and result["paper_fine_tune_hours"] > 0
    assert "two runs, same losses" in proc.stdout and "identical" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the full run would start")
def test_without_a_gpu_the_full_run_is_one_line():
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_acceptance.sh")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no GPU here" in lines[0] and "--dry" in lines[0]
