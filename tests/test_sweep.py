"""The sweep on a real local Ray: DAG order, resumability, failures, DDP, multi-node, W&B, reports.

These launch real Ray clusters and take minutes; one small sweep is shared by
most assertions.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TINY
from lxsweep import pruning
from lxsweep.config import load_experiment
from lxsweep.plan import Plan, TrialKey
from lxsweep.store import Store, mask_path

pytestmark = pytest.mark.slow
SMOKE = ROOT / "experiments" / "smoke.yaml"
FAKE_KEY = "fake0123456789abcdef0123456789abcdef0123"
BASE = [*TINY, "pruning.levels=2", "tracking.backend=wandb", "resources.max_concurrent_trials=2"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "WANDB_API"))}
    env.update(RAY_AUTH_MODE="disabled", WANDB_MODE="offline", PYTHONUNBUFFERED="1", **extra)
    return env


def launch(storage: Path, *sets: str, env: dict | None = None, timeout: int = 600, extra: tuple = ()) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "lxsweep.cli", "launch", str(SMOKE), "--quiet", *extra]
    for s in (*BASE, f"storage={storage}", *sets):
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env or _env())


def experiment(storage: Path, *sets: str):
    return load_experiment(SMOKE, [*BASE, f"storage={storage}", *sets])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    storage = tmp_path_factory.mktemp("sweep")
    proc = launch(storage, env=_env(WANDB_API_KEY=FAKE_KEY))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = experiment(storage)
    return exp, Store.for_experiment(exp), proc


def _metrics(store: Store) -> dict[str, dict]:
    return {n: store.read_json(f"trials/{n}/metrics.json") for n in store.listdir("trials")
            if store.exists(f"trials/{n}/metrics.json")}


def test_every_trial_runs_after_its_parent(sweep):
    exp, store, proc = sweep
    plan = Plan(exp)
    metrics = _metrics(store)
    assert set(metrics) == {k.name for k in plan.trials} and len(metrics) == 7
    for key in plan.trials:
        p = plan.parents[key]
        if p is not None:
            assert metrics[key.name]["started_at"] >= metrics[p.name]["finished_at"], key
    for chain in ("low", "high"):
        m1, m2 = (pruning.load_mask(store.path(mask_path(f"{chain}-L{k}-s0"))) for k in (1, 2))
        assert all(not (m2[n] & ~m1[n]).any() for n in m1), chain
    assert "store:" in proc.stdout and "low-L2-s0" in proc.stdout  # the closing results table
    # Storage policy: a finished trial keeps weights, mask and metrics, not its resume state (optimizer included).
    left = [p for p in Path(store.path("ray")).rglob("checkpoint_*") if p.is_dir()]
    assert left == [] and store.exists("weights/low-L2-s0.safetensors") and store.exists("masks/low-L2-s0.safetensors")


def test_relaunch_skips_finished_trials(sweep):
    exp, store, _ = sweep
    before = {n: len(store.listdir(f"trials/{n}/attempts")) for n in store.listdir("trials")}
    proc = launch(Path(exp.storage))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "7 of 7 trials already in the store" in proc.stdout
    assert {n: len(store.listdir(f"trials/{n}/attempts")) for n in store.listdir("trials")} == before


def test_a_frontier_search_extends_a_finished_grid_running_only_its_choices(sweep, tmp_path):
    import shutil

    exp, store, _ = sweep
    shutil.copytree(store.root, tmp_path / Path(store.root).name, ignore=shutil.ignore_patterns("ray", "wandb"))
    sets = ("seeds=[0,1]", "pruning.levels=1", "search.mode=frontier", "search.subnetworks=[low]", "tracking.backend=none")
    before = {n: len(store.listdir(f"trials/{n}/attempts")) for n in store.listdir("trials")}
    proc = launch(tmp_path, *sets)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "frontier search over the grid's 8 trials" in proc.stdout  # dense, low, high, random at level 1, 2 seeds
    copy = Store.for_experiment(experiment(tmp_path, *sets))
    chosen = {c["trial"]: c["why"] for c in copy.read_json("search.json")["chosen"]}
    ran = {n for n in copy.listdir("trials") if n.endswith("-s1")}
    assert ran == {"dense-L0-s1", "low-L1-s1"} == {n for n in chosen if n.endswith("-s1")}  # only its choices
    assert chosen["low-L1-s1"] == "does the ticket match dense at level 1"
    assert {n: len(copy.listdir(f"trials/{n}/attempts")) for n in before} == before  # seed 0's grid reused
    md = Path(copy.path("report/results.md")).read_text()
    assert "Where each subnetwork stops matching dense" in md and "Chosen by frontier search: 4 of the grid's 8" in md


def test_report_matches_metrics_and_plot(sweep, tmp_path):
    from PIL import Image

    from lxsweep.report import load_baselines, load_rows, plot, report_title

    exp, store, _ = sweep
    metrics = _metrics(store)
    with open(store.path("report/results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(metrics)
    for row in rows:
        m = metrics[row["trial"]]
        for col in ("accuracy", "accuracy_yesno", "accuracy_number", "accuracy_other", "sparsity"):
            assert float(row[col]) == pytest.approx(m[col], rel=0, abs=1e-12), (row["trial"], col)
    md = Path(store.path("report/results.md")).read_text()
    dense = metrics["dense-L0-s0"]["accuracy"]
    assert f"| dense | 0 | 0.0 | 1 | {100 * dense:.2f} ± 0.00 |" in md
    png = Path(store.path("report/accuracy_vs_sparsity.png"))
    img = Image.open(png)
    assert img.size == (1760, 860)  # answer types + the synthetic question kinds
    again = tmp_path / "again.png"  # rendered from the metrics.json numbers and the baselines: the same pixels
    title = report_title(store)
    assert title == f"{exp.name} ({exp.hash})"  # the experiment names its figures, not the store directory
    plot(load_rows(store), again, f"{title}: validation accuracy vs sparsity (mean, band ±1 std over seeds)",
         load_baselines(store))  # no test split in the smoke task: the numbers are validation's
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(img))


def test_status_counts_finished_and_partial(sweep, tmp_path):
    import shutil

    exp, store, _ = sweep
    out = subprocess.run([sys.executable, "-m", "lxsweep.cli", "status", store.root], capture_output=True, text=True)
    assert out.returncode == 0
    assert "7/7 done, 0 running, 0 waiting, 0 failed, 0 skipped" in out.stdout
    assert "best ticket: low-L" in out.stdout
    partial = tmp_path / Path(store.root).name
    shutil.copytree(store.root, partial, ignore=shutil.ignore_patterns("ray", "wandb"))
    for name in ("low-L2-s0", "high-L2-s0"):
        (partial / "trials" / name / "metrics.json").unlink()
    shutil.rmtree(partial / "trials" / "random-L2-s0")
    (partial / "trials" / "high-L2-s0" / "failed.json").write_text("{}")
    out = subprocess.run([sys.executable, "-m", "lxsweep.cli", "status", str(partial)], capture_output=True, text=True)
    assert "4/7 done, 1 running, 1 waiting, 1 failed, 0 skipped" in out.stdout, out.stdout


def test_wandb_runs_read_back(sweep):
    from wandb_records import lineage, run_info

    exp, store, _ = sweep
    files = sorted(Path(store.path("wandb")).rglob("*.wandb"))
    runs = [run_info(f) for f in files]
    trials = {r["config"]["trial"]: r for r in runs if r.get("job_type") != "summary"}
    assert set(trials) == {k.name for k in Plan(exp).trials}
    assert len([r for r in runs if r.get("job_type") != "summary"]) == 7  # one run per trial, no duplicates
    for name, r in trials.items():
        key = TrialKey.parse(name)
        assert r["group"] == f"{exp.name}-{exp.hash}" and r["job_type"] == key.subnetwork
        assert r["id"] == f"{exp.name}-{exp.hash}-{name}"
        assert r["config"]["level"] == key.level and r["config"]["training"]["epochs"] == exp.training.epochs
        epochs = [h for h in r["history"] if "accuracy" in h]
        assert [h["epoch"] for h in epochs] == list(range(1, exp.training.epochs + 1))
        final = store.read_json(f"trials/{name}/metrics.json")
        assert epochs[-1]["accuracy"] == pytest.approx(final["accuracy"])
        # Artifacts from the Ray worker: the chain mask it trained with in, the masks it made and its weights out.
        used, logged = lineage(r)
        art = lambda what, trial: f"{exp.name}-{exp.hash}-{what}-{trial}"  # noqa: E731
        assert set(used) == ({art("mask", name)} if key.subnetwork in ("low", "high") else set()), name
        made = [*final["child_masks"], *([name] if key.subnetwork == "random" else [])]
        assert set(logged) == {art("weights", name), *(art("mask", m) for m in made)}, name
    summary = [r for r in runs if r.get("job_type") == "summary"]
    best = ("low-L1-s0", "low-L2-s0")  # one seed: each level's low trial is its best ticket
    assert {k: v for r in summary for k, v in r["summary"].items() if k.startswith("best_ticket/")} == {
        "best_ticket/L1": best[0], "best_ticket/L2": best[1]}
    used = {n for r in summary for n in lineage(r)[0]}  # every launch's summary segment uses the tickets
    assert used == {f"{exp.name}-{exp.hash}-{w}-{t}" for w in ("mask", "weights") for t in best}
    logged = {k for r in summary for h in r["history"] for k in h}
    assert {"results/_type", "aggregate/_type", "accuracy_vs_sparsity/_type"} <= logged, logged
    assert any(k.startswith("chart/accuracy") for k in logged)
    assert any(k.endswith("/accuracy") for r in summary for k in r["summary"])


def test_api_key_never_written(sweep):
    exp, store, proc = sweep
    assert FAKE_KEY not in proc.stdout + proc.stderr
    for path in Path(store.root).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_trial_command_reproduces_a_sweep_trial(sweep):
    exp, store, _ = sweep
    name = "low-L2-s0"
    swept = store.read_json(f"trials/{name}/metrics.json")
    sets = [a for s in (*BASE, f"storage={exp.storage}") for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "trial", str(SMOKE), "--level", "2", "--subnetwork",
                           "low", "--seed", "0", "--check", *sets], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"reproduced {name}: matches the sweep" in proc.stdout
    assert store.read_json(f"trials/{name}/metrics.json") == swept  # never over the sweep's files
    (stamp,) = store.listdir(f"reproductions/{name}")
    again = store.read_json(f"reproductions/{name}/{stamp}/trials/{name}/metrics.json")
    for k in ("accuracy", "accuracy_yesno", "accuracy_number", "accuracy_other", "train_loss", "sparsity"):
        assert again[k] == swept[k], k
    assert again["replica_digests"] == swept["replica_digests"]  # bit-identical final weights
    assert f"{name}: 100%" in proc.stderr  # the progress bar
    # Tracked like a sweep trial, but a re-run of a finished trial is a run of its own: the sweep's run is untouched.
    from wandb_records import run_info

    sweep_id = f"{exp.name}-{exp.hash}-{name}"
    runs = [run_info(f) for f in Path(store.root).rglob(f"*{name}*.wandb")]  # the sweep's and the reproduction's
    assert [r.get("id") for r in runs if r.get("id") == sweep_id] == [sweep_id]
    rerun = [r for r in runs if (r.get("id") or "").startswith(f"{sweep_id}-rerun-")]
    assert len(rerun) == 1 and rerun[0]["job_type"] == "low" and rerun[0]["config"]["trial"] == name
    from wandb_records import lineage

    used, logged = lineage(rerun[0])  # it read the sweep's mask; the trial's own artifacts stay the sweep's
    assert set(used) == {f"{exp.name}-{exp.hash}-mask-{name}"} and logged == {}
    assert [h["epoch"] for h in rerun[0]["history"] if "accuracy" in h] == list(range(1, exp.training.epochs + 1))


def test_worker_crash_resumes_and_a_trial_failing_for_good_skips_its_descendants(sweep, tmp_path):
    """One sweep, two faults: the dense trial's worker dies once (Train resumes it from its checkpoint, same
    result); low-L1 dies on every attempt (it fails for good, low-L2 is skipped, the rest finishes, exit 1)."""
    exp, store, _ = sweep
    sets = ("pruning.subnetworks=[low, random]", "resources.max_failures=1")
    proc = launch(tmp_path, *sets, env=_env(LXSWEEP_FAULT="dense-L0-s0:1,low-L1-s0:1:always"))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 trial(s) failed: low-L1-s0" in proc.stderr
    assert "skipped because a parent failed: low-L2-s0" in proc.stderr
    crashed = Store.for_experiment(experiment(tmp_path, *sets))
    assert crashed.exists("trials/low-L1-s0/failed.json")
    assert len(crashed.listdir("trials/low-L1-s0/attempts")) == 2  # the first try and its one restart
    assert not crashed.exists("trials/low-L2-s0/metrics.json")
    for done in ("dense-L0-s0", "random-L1-s0", "random-L2-s0"):  # nothing already computed is lost
        assert crashed.exists(f"trials/{done}/metrics.json"), done
    attempts = [crashed.read_json(f"trials/dense-L0-s0/attempts/{a}") for a in crashed.listdir("trials/dense-L0-s0/attempts")]
    assert [a["resumed"] for a in sorted(attempts, key=lambda a: a["started_at"])] == [False, True]
    m, ref = crashed.read_json("trials/dense-L0-s0/metrics.json"), store.read_json("trials/dense-L0-s0/metrics.json")
    assert m["accuracy"] == ref["accuracy"] and m["replica_digests"] == ref["replica_digests"]
    # W&B: the resumed attempt continues the same run id and logs only the epochs it ran.
    from wandb_records import run_info

    files = sorted(Path(crashed.path("wandb")).rglob("*dense-L0-s0*.wandb"), key=lambda f: f.parent.name)  # by start time
    segments = [run_info(f) for f in files]
    # The killed attempt's file may end before its run record; every record that is there names one run id.
    assert len(segments) == 2 and {s.get("id") for s in segments} - {None} == {f"{crashed.root.split('/')[-1]}-dense-L0-s0"}
    assert segments[-1].get("id")
    epochs = [h["epoch"] for s in segments for h in s["history"] if "accuracy" in h]
    assert len(epochs) == len(set(epochs)) and max(epochs) == 2
    assert [h["epoch"] for h in segments[-1]["history"] if "accuracy" in h] == [2]


def test_ddp_across_two_nodes_shares_the_store_runs_plugins_and_matches_one_worker(sweep, tmp_path):
    """Two worker nodes of one CPU each: every trial is a two-worker DDP group spanning both (nothing else
    fits), writing one shared store; the workers import the experiment's plugins (a criterion and a tracker
    from tests/, which lxsweep/ knows nothing of); the result matches the one-worker sweep's."""
    from ray.cluster_utils import Cluster

    from test_plugins import TESTS, _report_shows_toy, _tracked

    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Nodes inherit this process's environment: the plugins must be importable in every Ray worker.
    pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), *([pythonpath] if pythonpath else [])])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"driver_slot": 4}})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        sets = ("plugins=[toy_criterion, toy_tracker]", "tracking.backend=toy", "pruning.subnetworks=[toy, random]",
                "pruning.levels=1", "resources.workers_per_trial=2")
        args = [sys.executable, "-m", "lxsweep.cli", "launch", str(SMOKE), "--quiet", "--address", cluster.address]
        for s in (*BASE, f"storage={tmp_path}", *sets):
            args += ["--set", s]
        proc = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        exp = experiment(tmp_path, *sets)
        store = Store.for_experiment(exp)
        names = store.listdir("trials")
        assert sorted(names) == ["dense-L0-s0", "random-L1-s0", "toy-L1-s0"]
        assert all(store.exists(f"trials/{n}/metrics.json") for n in names)
    finally:
        cluster.shutdown()
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
    meta = pruning.read_mask_metadata(store.path(mask_path("toy-L1-s0")))
    assert json.loads(meta["kind"]) == "toy"  # made in the Ray worker of dense-L0-s0, which imported the plugin
    assert _tracked(store, exp.store_name, "toy-L1-s0") == ["epoch"] * exp.training.epochs + ["final", "close"]
    assert json.loads(Path(store.path("toy/summary.json")).read_text()) == ["dense-L0-s0", "random-L1-s0", "toy-L1-s0"]
    _report_shows_toy(store, tmp_path)
    m = store.read_json("trials/dense-L0-s0/metrics.json")
    assert m["world_size"] == 2
    assert len(m["replica_digests"]) == 2 and len(set(m["replica_digests"])) == 1  # both ranks hold the same weights
    assert len(store.listdir("trials/dense-L0-s0/attempts")) == 1  # only rank 0 writes artifacts
    one = sweep[1].read_json("trials/dense-L0-s0/metrics.json")
    # Same global batches; only float summation order differs.
    assert abs(m["accuracy"] - one["accuracy"]) <= 0.03
