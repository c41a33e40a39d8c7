"""The DAG of trials: parents, child masks, costs, and the run order."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lxsweep.config import from_dict
from lxsweep.plan import Plan, TrialKey, child_masks, mask_source, parent, trial_key, validate_key


def K(name: str) -> TrialKey:
    return TrialKey.parse(name)


def test_chain_parents_and_children():
    exp = from_dict({"pruning": {"levels": 3, "subnetworks": ["low", "high", "random", "reinit"]}})
    assert parent(exp, K("dense-L0-s0")) is None
    assert parent(exp, K("low-L1-s0")) == K("dense-L0-s0")
    assert parent(exp, K("low-L3-s0")) == K("low-L2-s0")
    assert parent(exp, K("high-L2-s0")) == K("high-L1-s0")
    assert parent(exp, K("random-L2-s0")) is None
    assert parent(exp, K("reinit-L3-s0")) == K("low-L2-s0")  # the ticket's mask, fresh weights
    assert mask_source(exp, K("reinit-L3-s0")) == "low-L3-s0"
    assert child_masks(exp, K("dense-L0-s0")) == [K("low-L1-s0"), K("high-L1-s0")]
    assert child_masks(exp, K("low-L2-s0")) == [K("low-L3-s0")]
    assert child_masks(exp, K("low-L3-s0")) == [K("low-L4-s0")]  # past the last level: raising levels continues


def test_an_explicit_schedule_ends_its_chains():
    # An explicit sparsities list defines no level after its last: the smoke experiment's last trials
    # once died computing a mask for a sparsity that does not exist.
    exp = from_dict({"pruning": {"sparsities": [0.5, 0.8]}})
    assert child_masks(exp, K("low-L1-s0")) == [K("low-L2-s0")]
    assert child_masks(exp, K("low-L2-s0")) == []
    assert child_masks(exp, K("high-L2-s0")) == []


def test_oneshot_and_rewind_step_change_the_dag():
    one = from_dict({"pruning": {"levels": 3, "schedule": "oneshot"}})
    assert parent(one, K("low-L3-s0")) == K("dense-L0-s0")
    assert len(child_masks(one, K("dense-L0-s0"))) == 6  # every level of both chains from the dense weights
    # Only the levels trials train; all of them when no kept dense weights could rebuild one later.
    some = {"pruning": {"levels": 3, "schedule": "oneshot", "levels_of": {"low": [3]}}}
    assert child_masks(from_dict(some), K("dense-L0-s0")) == [K("low-L3-s0"), K("high-L1-s0"), K("high-L2-s0"), K("high-L3-s0")]
    assert len(child_masks(from_dict({**some, "training": {"keep_weights": "none"}}), K("dense-L0-s0"))) == 6
    # A follower at a level its chain does not train still gets the chain's mask there, made first.
    follow = {"pruning": {"levels": 3, "schedule": "stepwise", "subnetworks": ["low", "code_high"],
                          "levels_of": {"low": [1], "code_high": [3]}}}
    assert child_masks(from_dict(follow), K("dense-L0-s0")) == [K("low-L1-s0"), K("low-L3-s0"), K("code_high-L3-s0")]
    # A control trains with its chain's mask: reinit at level 3 needs low's there though low trains only level 1.
    control = {"pruning": {"levels": 3, "schedule": "oneshot", "subnetworks": ["low", "reinit"],
                           "levels_of": {"low": [1], "reinit": [3]}}}
    assert child_masks(from_dict(control), K("dense-L0-s0")) == [K("low-L1-s0"), K("low-L3-s0")]
    step = from_dict({"pruning": {"levels": 2}, "rewind": {"to": "step", "step": 10}})
    assert parent(step, K("random-L2-s0")) == K("dense-L0-s0")  # rewinds to the dense run's step-10 weights


def test_costs_match_the_design():
    L = 10
    plan = Plan(from_dict({"pruning": {"levels": L}, "seeds": [0]}))
    assert plan.fine_tunes == 1 + 3 * L
    assert plan.critical_path == L + 1
    # A flat grid re-running each chain prefix: low(k) costs k+1 fine-tunes (dense included).
    assert plan.naive_fine_tunes == 1 + 2 * sum(k + 1 for k in range(1, L + 1)) + L
    three = Plan(from_dict({"pruning": {"levels": L}, "seeds": [0, 1, 2]}))
    assert three.fine_tunes == 3 * (1 + 3 * L)


def test_order_longest_path_first_and_ready():
    plan = Plan(from_dict({"pruning": {"levels": 3}}))
    names = [k.name for k in plan.trials]
    assert names[0] == "dense-L0-s0"
    # every chain trial before every random trial of the same seed: the critical path never waits
    assert max(names.index(f"low-L{k}-s0") for k in (1, 2)) < min(names.index(f"random-L{k}-s0") for k in (1, 2, 3))
    ready = plan.ready(done=set(), started=set())
    assert ready[0] == K("dense-L0-s0") and K("low-L1-s0") not in ready
    assert set(ready) == {K("dense-L0-s0"), *(K(f"random-L{k}-s0") for k in (1, 2, 3))}
    after = plan.ready(done={K("dense-L0-s0")}, started={K("dense-L0-s0")})
    assert after[:2] == [K("low-L1-s0"), K("high-L1-s0")]


def test_requested_subnetworks_pull_in_their_ancestors():
    plan = Plan(from_dict({"pruning": {"levels": 2, "subnetworks": ["reinit"]}}))
    assert {k.name for k in plan.trials} == {"dense-L0-s0", "low-L1-s0", "reinit-L1-s0", "reinit-L2-s0"}


def test_makespan_of_the_paper_grid():
    plan = Plan(from_dict({"pruning": {"levels": 10}, "seeds": [0, 1, 2]}))
    bound = max(plan.critical_path, plan.fine_tunes / 8)
    assert plan.makespan(8) == 12.0
    assert bound / plan.makespan(8) >= 0.9
    assert plan.makespan(1) == plan.fine_tunes  # one slot: all the work in sequence


def test_plan_command_json(smoke_file):
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "plan", str(smoke_file), "--json",
                           "--set", "resources.fine_tune_hours=0.5", "--set", "resources.max_concurrent_trials=2"],
                          capture_output=True, text=True, check=True)
    s = json.loads(proc.stdout)
    assert s["fine_tunes"] == 8 and s["critical_path"] == 4 and s["naive_fine_tunes"] == 15  # high at 50% only
    assert s["gpu_hours"] == 4.0 and s["wall_hours"] == 2.0  # 4 rounds of two trials
    assert s["trials"][0]["trial"] == "dense-L0-s0"


def test_plan_states_the_basis_of_its_gpu_hours(capsys, smoke_file):
    from lxsweep.cli import main

    paper = Path(__file__).resolve().parents[1] / "experiments" / "paper.yaml"
    assert main(["plan", str(paper), "--json", "--no-checks"]) == 0  # the paper's data and table live on the cluster
    s = json.loads(capsys.readouterr().out)
    assert s["levels"][-1]["sparsity"] >= 0.9 and s["fine_tune_basis"].startswith("estimate: ")
    assert s["gpu_hours"] == round(s["fine_tunes"] * s["fine_tune_hours"], 2)
    assert main(["plan", str(paper), "--no-checks"]) == 0
    assert f"\n  basis: {s['fine_tune_basis']}\n" in capsys.readouterr().out
    # Hours nobody explained are priced, and said to be unexplained.
    assert main(["plan", str(smoke_file), "--no-checks", "--set", "resources.fine_tune_hours=0.5"]) == 0
    assert "\n  basis: not stated — say in resources.fine_tune_basis" in capsys.readouterr().out
    assert main(["plan", str(smoke_file), "--no-checks", "--json", "--set", "resources.fine_tune_hours=0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["fine_tune_basis"] is None


def test_the_fine_tune_time_bench_prints_lines_plan_reads(capsys, smoke_file):
    """bench/fine_tune_time.py's two ways (count, time) end in a `resources:` block to paste: it must load and price."""
    import yaml

    from lxsweep.config import load_experiment

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import fine_tune_time

    ways = {"estimate: ": (["--count"], "4 x 640 training questions"),
            "measured: ": (["--steps", "2"], "4 epochs x 640 questions (batch 64: 40 steps)")}
    for kind, (how, work) in ways.items():
        assert fine_tune_time.main([str(smoke_file), *how, "--questions", "640", "--valid-questions", "100"]) == 0
        out = capsys.readouterr().out
        resources = yaml.safe_load(out[out.index("\nresources:\n"):])["resources"]
        assert resources["fine_tune_basis"].startswith(kind) and work in resources["fine_tune_basis"]
        assert resources["fine_tune_hours"] > 0
        exp = load_experiment(smoke_file, [f"resources.{k}={json.dumps(v)}" for k, v in resources.items()])
        summary = Plan(exp).summary()
        assert summary["fine_tune_basis"] == resources["fine_tune_basis"]
        assert summary["gpu_hours"] == round(summary["fine_tunes"] * resources["fine_tune_hours"], 2)


def test_scratch_is_a_level_0_control_with_no_parent():
    exp = from_dict({"pruning": {"levels": 2, "subnetworks": ["low", "scratch"]}})
    plan = Plan(exp)
    assert {k.name for k in plan.trials} == {"dense-L0-s0", "low-L1-s0", "low-L2-s0", "scratch-L0-s0"}
    assert plan.parents[K("scratch-L0-s0")] is None and child_masks(exp, K("scratch-L0-s0")) == []
    assert mask_source(exp, K("scratch-L0-s0")) is None
    with pytest.raises(ValueError, match="scratch trains at level 0, not 1"):
        validate_key(exp, K("scratch-L1-s0"))
    with pytest.raises(ValueError, match="unknown subnetwork 'medium'"):
        validate_key(exp, K("medium-L1-s0"))
    assert trial_key(exp, 0, None, 0) == K("dense-L0-s0") and trial_key(exp, 0, "low", 0) == K("dense-L0-s0")
    assert trial_key(exp, 0, "scratch", 0) == K("scratch-L0-s0") and trial_key(exp, 2, None, 0) == K("low-L2-s0")


def test_missing_ancestors_walks_the_chain_prefix_oldest_first():
    plan = Plan(from_dict({"pruning": {"levels": 3, "subnetworks": ["random"]}}))
    # reinit is not among the experiment's subnetworks: the walk still follows its chain
    assert plan.missing_ancestors(K("reinit-L3-s0"), done=set()) == [K("dense-L0-s0"), K("low-L1-s0"), K("low-L2-s0")]
    assert plan.missing_ancestors(K("low-L3-s0"), done={K("low-L1-s0")}) == [K("low-L2-s0")]
    assert plan.missing_ancestors(K("random-L2-s0"), done=set()) == []


def test_a_registered_criterion_gets_its_own_chain():
    from lxsweep import subnetworks

    # the toy plugin, as an experiment file would name it under `plugins`
    exp = from_dict({"plugins": ["toy_criterion"], "pruning": {"levels": 2, "subnetworks": ["toy", "random"]}})
    assert "toy" in subnetworks.names() and subnetworks.criterion("toy").iterative
    assert parent(exp, K("toy-L2-s0")) == K("toy-L1-s0")
    assert child_masks(exp, K("dense-L0-s0")) == [K("toy-L1-s0")]
    assert child_masks(exp, K("toy-L1-s0")) == [K("toy-L2-s0")]
    assert Plan(exp).fine_tunes == 5


def test_plan_prints_each_trials_own_sparsity_not_its_levels():
    """code_high removes as many weights as low keeps: at low's 27.1% it removes 72.9%."""
    from lxsweep.plan import trial_sparsity

    exp = from_dict({"pruning": {"subnetworks": ["low", "code_high", "random"], "levels": 3}})
    plan = {t["trial"]: t for t in Plan(exp).summary()["trials"]}
    level3 = exp.sparsity(3)
    assert plan["low-L3-s0"]["sparsity"] == round(level3, 6) == plan["random-L3-s0"]["sparsity"]
    assert plan["code_high-L3-s0"]["sparsity"] == round(1 - level3, 6)
    assert trial_sparsity(exp, TrialKey(0, "dense", 0)) == 0.0


def test_plan_prints_the_store_size_and_what_each_node_needs():
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "plan", "experiments/paper.yaml", "--no-checks"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    store = next(line for line in proc.stdout.splitlines() if line.startswith("store: ~"))
    node = next(line for line in proc.stdout.splitlines() if line.startswith("per node: ~"))
    assert " GB" in store and "per finished trial" in store and "checkpoint per running trial" in node + store
    assert "RAM per trial worker" in node and "staged prepared data" in node
    from lxsweep.config import load_experiment
    from lxsweep.sizes import needs

    n = needs(load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "paper.yaml", check=False))
    # LXMERT-base: ~218M parameters, ~180M of them prunable; 132 fine-tunes keep fp16 weights (0.44 GB each).
    assert 200e6 < n["parameters"] < 240e6 and 150e6 < n["prunable"] < n["parameters"]
    assert 50 < n["store_gb"] < 120 and 15 < n["staged_data_gb"] < 20
