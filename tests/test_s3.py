"""An ``s3://`` store against a real S3-protocol server (moto, started by the ``s3`` fixture), without Ray.

``lxsweep trial`` writes and reads masks, metrics and the W&B run files in the
bucket; ``status``, ``report`` and a reproduction read them back; a storage
outage is waited out with backoff, and one that outlasts the retries ends in
one line. The sweep itself on S3 (Ray) is tests/test_s3_sweep.py.
"""
from __future__ import annotations

import threading
import time

import pytest

from conftest import ROOT, TINY
from lxsweep.cli import main
from lxsweep.store import RETRY_ENV, Store, StoreError, mask_path, metrics_path

SMOKE = ROOT / "experiments" / "smoke.yaml"
OUTAGE_S = 8.0  # longer than pyarrow's own three tries (~6 s): only lxsweep's retries can survive it


def _sets(storage: str) -> list[str]:
    return [a for s in (*TINY, "pruning.levels=2", "tracking.backend=wandb", f"storage={storage}") for a in ("--set", s)]


def test_trials_status_report_and_reproduction_on_s3(s3, capsys, tmp_path):
    from wandb_records import run_info

    s3.create_bucket("trials")
    storage = "s3://trials/runs"
    for level, sub in ((0, "dense"), (1, "low")):  # low-L1 reads the mask dense-L0 wrote into the bucket
        assert main(["trial", str(SMOKE), "--level", str(level), "--subnetwork", sub, "--seed", "0", *_sets(storage)]) == 0
    (name,) = Store(storage).listdir("")
    store = Store(f"{storage}/{name}")
    assert store.uri and {"dense-L0-s0", "low-L1-s0"} <= set(store.listdir("trials"))
    assert store.exists(mask_path("low-L1-s0")) and store.exists(mask_path("low-L2-s0"))  # read by L1, for L2
    low = store.read_json(metrics_path("low-L1-s0"))
    assert low["sparsity"] == pytest.approx(0.3, abs=1e-3)
    capsys.readouterr()
    assert main(["status", store.root]) == 0
    assert "2/7 done, 0 running, 5 waiting, 0 failed, 0 skipped" in capsys.readouterr().out
    assert main(["report", store.root]) == 0
    assert capsys.readouterr().out.split() == [store.path(f"report/{f}") for f in
                                               ("results.csv", "results.md", "accuracy_vs_sparsity.png",
                                                "training_curves.png", "where_pruned.png")]
    csv = store.read_bytes("report/results.csv").decode().splitlines()
    assert len(csv) == 3 and any(r.startswith("low-L1-s0,") for r in csv)
    # Offline W&B files are copied into the bucket when each trial ends (not left in a node's /tmp).
    runs = {}
    for d in store.listdir("wandb/wandb"):
        files = [f for f in store.listdir(f"wandb/wandb/{d}") if f.endswith(".wandb")]
        assert len(files) == 1, d
        local = tmp_path / files[0]
        local.write_bytes(store.read_bytes(f"wandb/wandb/{d}/{files[0]}"))
        info = run_info(local)
        assert info.get("id", "").startswith(f"{name}-"), (d, info.get("id"))  # run id: <store name>-<trial>
        runs[info["id"].removeprefix(f"{name}-")] = info
    assert set(runs) == {"dense-L0-s0", "low-L1-s0"}
    assert runs["low-L1-s0"]["history"][-1]["accuracy"] == pytest.approx(low["accuracy"])
    # `trial` on a finished trial reproduces it from the S3 store, into its own area, and matches.
    capsys.readouterr()
    assert main(["trial", str(SMOKE), "--level", "1", "--seed", "0", "--check", *_sets(storage)]) == 0
    assert "reproduced low-L1-s0: matches the sweep" in capsys.readouterr().out
    assert store.read_json(metrics_path("low-L1-s0")) == low
    (stamp,) = store.listdir("reproductions/low-L1-s0")
    assert store.exists(f"reproductions/low-L1-s0/{stamp}/trials/low-L1-s0/metrics.json")


def test_a_storage_outage_is_waited_out(s3, capsys):
    s3.create_bucket("outage")
    store = Store("s3://outage/store")
    store.write_json("before.json", {"n": 1})
    s3.stop()
    back = threading.Timer(OUTAGE_S, s3.start)
    back.start()
    started = time.time()
    try:
        store.write_json("during.json", {"n": 2})  # issued while the server is down
    finally:
        back.join()
    assert time.time() - started >= OUTAGE_S
    assert store.read_json("during.json") == {"n": 2} and store.read_json("before.json") == {"n": 1}
    err = capsys.readouterr().err
    assert f"lxsweep: warning: {store.path('during.json')}: " in err and "retrying for up to" in err


def test_an_outage_that_outlasts_the_retries_is_one_line(s3, capsys, monkeypatch):
    s3.create_bucket("down")
    store = Store("s3://down/store")
    store.write_json("experiment.yaml", {"name": "x"})
    monkeypatch.setenv(RETRY_ENV, "1")
    s3.stop()
    try:
        assert main(["status", store.root]) == 2  # the first contact: a quick probe, no retry loop
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"lxsweep: error: {store.root}: cannot reach the store")
        assert f"waited out for 1 s, {RETRY_ENV}" in err[0]
        with pytest.raises(StoreError) as outage:  # after it: an outage is retried for the budget, then one line
            store.read_json("experiment.yaml")
    finally:
        s3.start()
    line = str(outage.value)
    assert line.startswith(f"{store.path('experiment.yaml')}: the store did not answer for 1 s")
    assert "check the storage endpoint, network and credentials" in line and "\n" not in line
