"""A whole sweep on an ``s3://`` store (moto's S3 server on localhost), with the faults it must survive.

One sweep, shared by the module: launched, its driver SIGKILLed once two
trials are done, re-launched with ``--resume``, and the S3 server stopped for a
few seconds while the resumed sweep runs. Then every trial is in the bucket,
none finished before the kill ran twice, the chains' masks (written by one
trial, read by its children) nest, and ``status``, ``report`` and ``trial``
work from the bucket.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY
from lxsweep import pruning
from lxsweep.cli import main
from lxsweep.config import load_experiment
from lxsweep.plan import Plan
from lxsweep.store import Store, attempts_dir, mask_path, metrics_path
from processes import kill_tagged, tagged_env

pytestmark = pytest.mark.slow
SMOKE = ROOT / "experiments" / "smoke.yaml"
STORAGE = "s3://sweep/runs"
# low and random: a chain whose masks cross trials through the bucket, and trials that need no parent (5 trials)
SETS = [*TINY, "pruning.levels=2", "pruning.subnetworks=[low, random]", "tracking.backend=wandb",
        "resources.max_concurrent_trials=2", f"storage={STORAGE}"]
OUTAGE_S = 4.0


def _done(store: Store) -> set[str]:
    return {n for n in store.listdir("trials") if store.exists(metrics_path(n))}


def _wait(proc: subprocess.Popen, until, timeout: float) -> None:
    deadline = time.time() + timeout
    while not until():
        assert proc.poll() is None, f"the launch ended early (exit {proc.returncode})"
        assert time.time() < deadline, "timed out"
        time.sleep(1)


@pytest.fixture(scope="module")
def sweep(s3, tmp_path_factory):
    s3.create_bucket("sweep")
    exp = load_experiment(SMOKE, SETS)
    store = Store.for_experiment(exp)
    logs = tmp_path_factory.mktemp("logs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "WANDB_API"))}
    env.update(RAY_AUTH_MODE="disabled", WANDB_MODE="offline", PYTHONUNBUFFERED="1", **s3.env())
    args = [sys.executable, "-m", "lxsweep.cli", "launch", str(SMOKE), "--quiet", *[a for s in SETS for a in ("--set", s)]]
    timings = {}

    first_env, tag = tagged_env(env)
    t0 = time.time()
    with open(logs / "first.log", "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=first_env)
        _wait(proc, lambda: len(_done(store)) >= 2, 400)
        kill_tagged(tag)  # the driver and its local Ray: a driver killed mid-sweep, and nothing else on the machine
        proc.wait()
    timings["until_kill"] = time.time() - t0
    before = _done(store)

    second_env, tag = tagged_env(env)
    t0 = time.time()
    with open(logs / "resumed.log", "w") as log:
        proc = subprocess.Popen([*args, "--resume"], stdout=log, stderr=subprocess.STDOUT, env=second_env)
        try:
            _wait(proc, lambda: len(_done(store)) > len(before), 400)
            s3.stop()  # a storage outage in the middle of the resumed sweep
            time.sleep(OUTAGE_S)
            s3.start()
            proc.wait(timeout=500)
        finally:
            if proc.poll() is None:
                kill_tagged(tag)
        kill_tagged(tag)  # whatever of its Ray outlived the driver
    timings["resumed"] = time.time() - t0
    output = (logs / "resumed.log").read_text()
    assert proc.returncode == 0, output[-4000:]
    print(f"s3 sweep: {timings}")
    return exp, store, before, output


def test_every_trial_is_in_the_bucket_and_none_ran_twice(sweep):
    exp, store, before, output = sweep
    plan = Plan(exp)
    assert len(before) >= 2
    assert _done(store) == {k.name for k in plan.trials}
    assert f"{len(before)} of 5 trials already in the store; resuming" in output
    for name in _done(store) - before:  # finished by the resumed launch: their resume state is gone from the bucket
        run = f"ray/train-{name}"
        assert [n for n in store.listdir(run) if n.startswith("checkpoint_") and store.is_dir(f"{run}/{n}")] == [], name
    for name in before:  # finished before the kill: never re-run
        assert len(store.listdir(attempts_dir(name))) == 1, name
    for key in plan.trials:
        m = store.read_json(metrics_path(key.name))
        p = plan.parents[key]
        if p is not None:
            assert m["started_at"] >= store.read_json(metrics_path(p.name))["finished_at"], key


def test_chain_masks_written_by_one_trial_are_read_by_its_children(sweep, tmp_path):
    exp, store, _, _ = sweep
    for chain in ("low",):
        masks = []
        for level in (1, 2):
            local = tmp_path / f"{chain}{level}.safetensors"
            local.write_bytes(store.read_bytes(mask_path(f"{chain}-L{level}-s0")))
            masks.append(pruning.load_mask(local))
            m = store.read_json(metrics_path(f"{chain}-L{level}-s0"))
            assert m["sparsity"] == pytest.approx(pruning.sparsity(masks[-1]), abs=1e-9)  # trained with that mask
        m1, m2 = masks
        assert all(not (m2[n] & ~m1[n]).any() for n in m1), chain  # level 2 prunes within level 1's survivors


def test_status_report_and_trial_work_from_the_bucket(sweep, capsys):
    exp, store, before, _ = sweep
    capsys.readouterr()
    assert main(["status", store.root]) == 0
    assert "5/5 done, 0 running, 0 waiting, 0 failed, 0 skipped" in capsys.readouterr().out
    assert main(["report", store.root]) == 0
    assert store.read_bytes("report/results.csv").decode().count("\n") == 6
    # W&B run files copied into S3 by every trial the resumed launch ran (the killed one may not have got to it).
    copied = {d.split(f"{Path(store.root).name}-")[-1] for d in store.listdir("wandb/wandb")}
    assert {k.name for k in Plan(exp).trials} - before <= copied and "summary" in copied
    name = "low-L2-s0"
    swept = store.read_json(metrics_path(name))
    sets = [a for s in SETS for a in ("--set", s)]
    assert main(["trial", str(SMOKE), "--level", "2", "--subnetwork", "low", "--seed", "0", "--check", *sets]) == 0
    assert f"reproduced {name}: matches the sweep" in capsys.readouterr().out
    assert store.read_json(metrics_path(name)) == swept
