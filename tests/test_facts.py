"""Resolved facts: recorded per trial, and a store refuses trials that resolved to another precision or device."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY
from lxsweep.config import from_dict, load_experiment
from lxsweep.facts import FACTS_FILE, MixedTrialsError, check_compatible, resolved_facts
from lxsweep.store import Store
from lxsweep.plan import TrialKey
from lxsweep.train import runtime
from lxsweep.trial import run_trial


def test_auto_precision_resolves_to_fp32_on_cpu():
    facts = resolved_facts(runtime(from_dict({"training": {"precision": "auto"}})))
    assert (facts["device_type"], facts["precision"], facts["autocast_dtype"], facts["world_size"]) == ("cpu", "fp32", None, 1)
    assert facts["torch"] == torch.__version__ and facts["torch_cuda"] == torch.version.cuda  # with its build tag
    assert facts["transformers"] and facts["ray"] and facts["python"]
    assert facts["torch_threads"] == torch.get_num_threads() >= 1
    assert facts["commit"] is None or len(facts["commit"].split("+")[0]) == 40
    assert resolved_facts(runtime(from_dict({"training": {"precision": "bf16"}})))["precision"] == "bf16"


def test_first_trial_sets_the_store_facts_and_a_different_one_is_refused(tmp_path):
    store = Store(str(tmp_path / "store"))
    cpu = resolved_facts(runtime(from_dict({})))
    check_compatible(store, cpu, trial="dense-L0-s0")
    assert store.read_json(FACTS_FILE)["precision"] == "fp32"
    check_compatible(store, cpu, trial="low-L1-s0")  # same facts: fine
    gpu = {**cpu, "device_type": "cuda", "precision": "bf16", "device_name": "NVIDIA H100"}
    with pytest.raises(MixedTrialsError, match=r"low-L2-s0 resolves to precision bf16 \(the store's trials: fp32\)"):
        check_compatible(store, gpu, trial="low-L2-s0")
    warnings: list[str] = []
    check_compatible(store, gpu, allow_mixed=True, trial="low-L2-s0", warn=warnings.append)
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "not comparable" in warnings[0]
    assert store.read_json(FACTS_FILE)["precision"] == "fp32"  # the store keeps its first trial's facts


def test_trial_refuses_to_mix_then_records_facts_when_allowed(tmp_path):
    """A store whose trials ran bf16 on GPUs; a CPU re-run would resolve `precision: auto` to fp32."""
    sets = [*TINY, f"storage={tmp_path}"]
    store = Store.for_experiment(load_experiment(ROOT / "experiments" / "smoke.yaml", sets))
    store.write_json(FACTS_FILE, {"precision": "bf16", "device_type": "cuda", "device_name": "NVIDIA H100"})
    args = [sys.executable, "-m", "lxsweep.cli", "trial", str(ROOT / "experiments" / "smoke.yaml"), "--level", "0",
            "--seed", "0", *[a for s in sets for a in ("--set", s)]]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lxsweep: error: dense-L0-s0 resolves to precision fp32")
    assert "resources.allow_mixed=true" in lines[0]
    assert not store.exists("trials/dense-L0-s0/metrics.json")
    log: list[str] = []
    allowed = load_experiment(ROOT / "experiments" / "smoke.yaml", [*sets, "resources.allow_mixed=true"])
    facts = run_trial(allowed, TrialKey.parse("dense-L0-s0"), store, log=log.append)["facts"]
    assert any(line.startswith("lxsweep: WARNING: dense-L0-s0 resolves to precision fp32") for line in log)
    assert (facts["precision"], facts["device_type"]) == ("fp32", "cpu")
