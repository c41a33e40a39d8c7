"""The store never loses or mixes work: corrupt files are named and skipped or refused, never deleted;
a dead attempt reads as dead; a failure is in the store the moment it happens.

One small real store (dense and low-L1 trained by ``lxsweep trial``) is made
once per module and copied for each test that damages it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY
from lxsweep.cli import main
from lxsweep.config import load_experiment
from lxsweep.plan import Plan, TrialKey
from lxsweep.status import snapshot, status_lines
from lxsweep.store import STALE_SECONDS, Store, attempt_path, attempts_dir, failed_path, mask_path, metrics_path
from lxsweep.trial import Heartbeat

SMOKE = ROOT / "experiments" / "smoke.yaml"
SETS = [*TINY, "pruning.levels=2"]


def _args(storage: Path) -> list[str]:
    return [a for s in (*SETS, f"storage={storage}") for a in ("--set", s)]


def _store(storage: Path) -> Store:
    return Store.for_experiment(load_experiment(SMOKE, [*SETS, f"storage={storage}"]))


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("made")
    for level, sub in ((0, "dense"), (1, "low")):
        assert main(["trial", str(SMOKE), "--level", str(level), "--subnetwork", sub, "--seed", "0",
                     *_args(storage)]) == 0
    return storage


@pytest.fixture
def storage(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(made, copy)
    return copy


def _files(store: Store) -> dict[str, bytes]:
    root = Path(store.root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


DAMAGE = {
    "empty": lambda b: b"",
    "truncated": lambda b: b[: len(b) // 2],
    "incomplete": lambda b: json.dumps({k: v for k, v in json.loads(b).items() if k != "accuracy"}).encode(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_status_and_report_skip_a_corrupt_metrics_file_and_name_it(storage, damage, capsys):
    store = _store(storage)
    path = Path(store.path(metrics_path("low-L1-s0")))
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    assert main(["status", store.root]) == 0
    out, err = capsys.readouterr()
    assert "1/7 done, 0 running, 5 waiting, 0 failed, 0 skipped, 1 unreadable" in out
    assert f"lxsweep: warning: skipped {path}: " in err and len(err.strip().splitlines()) == 1
    before = _files(store)
    assert main(["report", store.root]) == 0
    out, err = capsys.readouterr()
    assert f"lxsweep: warning: skipped {path}: " in err and "Traceback" not in err
    rows = Path(store.path("report/results.csv")).read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("dense-L0-s0,")  # the readable trial is reported
    after = _files(store)
    assert {k: v for k, v in after.items() if not k.startswith("report/")} == before  # nothing changed or deleted


def test_corrupt_experiment_yaml_is_one_line_for_status_and_report_still_runs(storage, capsys):
    store = _store(storage)
    exp_file = Path(store.path("experiment.yaml"))
    exp_file.write_bytes(exp_file.read_bytes()[:40] + b"\n  : [unclosed\n")
    assert main(["status", store.root]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lxsweep: error: {exp_file}: not valid YAML") and len(err.strip().splitlines()) == 1
    assert main(["report", store.root]) == 0  # the metrics are readable: the report is titled by the directory
    assert Path(store.path("report/results.csv")).read_text().count("\n") == 3


def test_trial_refuses_corrupt_inputs_before_training(storage, capsys):
    store = _store(storage)
    mask = Path(store.path(mask_path("low-L2-s0")))  # written by low-L1, read by low-L2
    mask.write_bytes(mask.read_bytes()[:100])
    before = _files(store)
    started = time.time()
    assert main(["trial", str(SMOKE), "--level", "2", "--seed", "0", *_args(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lxsweep: error: {mask}: unreadable mask") and len(err.strip().splitlines()) == 1
    assert "low-L2-s0" not in store.listdir("trials")  # refused before any attempt
    # The descendant's dense metrics.json is corrupt: refused up front, not after training.
    dense = Path(store.path(metrics_path("dense-L0-s0")))
    dense.write_bytes(dense.read_bytes()[:-30])
    before = _files(store)
    for level in ("2", "1"):  # a new trial, and a finished one (which would be reproduced)
        assert main(["trial", str(SMOKE), "--level", level, "--seed", "0", *_args(storage)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"lxsweep: error: {dense}: not valid JSON") and len(err.strip().splitlines()) == 1
    assert time.time() - started < 30
    assert _files(store) == before  # nothing written, nothing deleted
    assert "reproductions" not in store.listdir("")


def test_launch_refuses_a_store_with_a_corrupt_metrics_file_before_ray(storage, capsys):
    store = _store(storage)
    path = Path(store.path(metrics_path("dense-L0-s0")))
    path.write_bytes(b"")
    before = _files(store)
    assert main(["launch", str(SMOKE), "--quiet", *_args(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lxsweep: error: {path}: empty file — it is left untouched")
    assert _files(store) == before and "ray" not in store.listdir("")


def _attempt(store: Store, name: str, started: float, **fields) -> None:
    store.write_json(attempt_path(name, started, "test"), {"trial": name, "started_at": started, "resumed": False,
                                                           **fields})


def test_a_dead_attempt_is_shown_dead_not_running(storage):
    import socket

    store = _store(storage)
    plan = Plan(load_experiment(SMOKE, [*SETS, f"storage={storage}"]))
    now = time.time()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process of this host that no longer exists
    host = socket.gethostname()
    _attempt(store, "high-L1-s0", now - 10, host=host, pid=gone.pid, heartbeat_at=now - 5)
    _attempt(store, "random-L1-s0", now - 2 * STALE_SECONDS, host="elsewhere", pid=1, heartbeat_at=now - STALE_SECONDS - 5)
    _attempt(store, "random-L2-s0", now - 2 * STALE_SECONDS, host="elsewhere", pid=1, heartbeat_at=now - 3)
    _attempt(store, "low-L2-s0", now - 20, host=host, pid=1, heartbeat_at=now - 20, ended_at=now - 19, ok=False)
    snap = snapshot(store, plan, now)
    assert [k.name for k in snap.running] == ["random-L2-s0"]  # beating recently on another host
    assert {k.name: why.split(" ")[0] for k, why in snap.dead.items()} == {
        "high-L1-s0": "its", "random-L1-s0": "no", "low-L2-s0": "ended"}
    lines = status_lines(store, plan, now=now)
    assert "2/7 done, 1 running, 3 dead, 1 waiting, 0 failed, 0 skipped" in lines[0]
    assert f"dead: high-L1-s0 (its process {host} pid {gone.pid} is gone; a re-launch resumes it)" in lines
    assert any(line.startswith("dead: random-L1-s0 (no heartbeat for 2m") for line in lines)


def test_heartbeat_rewrites_the_attempt_and_marks_its_end(tmp_path):
    store = Store(str(tmp_path / "s"))
    rel = attempt_path("dense-L0-s0", time.time(), "hb")
    beat = Heartbeat(store, rel, {"trial": "dense-L0-s0", "started_at": time.time(), "host": "h", "pid": 1},
                     every=0.05)
    first = store.read_json(rel)["heartbeat_at"]
    time.sleep(0.3)
    assert store.read_json(rel)["heartbeat_at"] > first and "ended_at" not in store.read_json(rel)
    beat.stop(ok=False)
    final = store.read_json(rel)
    assert final["ok"] is False and final["ended_at"] >= final["heartbeat_at"] - 1e-6
    assert len(store.listdir(attempts_dir("dense-L0-s0"))) == 1  # one file per attempt, rewritten in place


def test_failed_json_is_written_the_moment_a_trial_fails(storage):
    from lxsweep.sweep import _make_searcher

    store = _store(storage)
    plan = Plan(load_experiment(SMOKE, [*SETS, f"storage={storage}"]))
    searcher = _make_searcher(plan, store, {})
    name = searcher.suggest("t1")["trial"]
    assert name == "high-L1-s0"  # the longest remaining path first
    searcher.on_trial_complete("t1", error=True)
    assert store.read_json(failed_path(name))["error"] == "error"
    snap = snapshot(store, plan)  # what `lxsweep status` shows while the sweep still runs
    assert [k.name for k in snap.failed] == [name] and [k.name for k in snap.skipped] == ["high-L2-s0"]
    assert TrialKey.parse(name) not in snap.waiting


def test_store_files_follow_the_umask_so_a_team_can_read_a_shared_store(tmp_path):
    import stat

    store = Store(str(tmp_path / "shared"))
    store.write_json("trials/dense-L0-s0/metrics.json", {"accuracy": 0.5})
    store.write_bytes("masks/low-L1-s0.safetensors", b"x")
    for rel in ("trials/dense-L0-s0/metrics.json", "masks/low-L1-s0.safetensors"):
        mode = stat.S_IMODE((tmp_path / "shared" / rel).stat().st_mode)
        assert mode & stat.S_IRGRP, oct(mode)  # 0600 from mkstemp would lock a teammate out
        assert mode == 0o666 & ~_current_umask(), oct(mode)


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("command", ["status", "report", "export"])
def test_an_unreachable_object_store_is_one_line_within_seconds(command, tmp_path):
    """Nothing listens at the endpoint: the first contact says so at once, not after the outage retries."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1", "LXSWEEP_STORE_RETRY_S": "120"}
    extra = ["--trial", "low-L1-s0", "--out", str(tmp_path / "out")] if command == "export" else []
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", command, "s3://nowhere/runs/smoke-0123456789", *extra],
                          capture_output=True, text=True, env=env, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot reach the store" in lines[0] and "AWS_ENDPOINT_URL" in lines[0]
    assert time.time() - t0 < 30


BYTE_DAMAGE = {"empty": lambda b: b"", "truncated": lambda b: b[: len(b) // 2], "not safetensors": lambda b: b"{}" * 40}


@pytest.mark.parametrize("damage", sorted(BYTE_DAMAGE))
@pytest.mark.parametrize("command", ["export", "predict"])
def test_damaged_kept_weights_are_named_with_the_repair(storage, damage, command, tmp_path, capsys):
    from lxsweep.store import weights_path

    store = _store(storage)
    path = Path(store.path(weights_path("low-L1-s0")))
    path.write_bytes(BYTE_DAMAGE[damage](path.read_bytes()))
    before = _files(store)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command == "export" else ["--split", "valid", "--out", str(out / "r.json")]
    assert main([command, store.root, "--trial", "low-L1-s0", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lxsweep: error: {path}: unreadable weights") and len(err.strip().splitlines()) == 1
    assert "re-run the trial" in err and "--level 1 --subnetwork low --seed 0" in err and "Traceback" not in err
    assert _files(store) == before and not out.exists()  # nothing written, nothing changed


def test_damaged_mask_is_named_by_export(storage, tmp_path, capsys):
    store = _store(storage)
    path = Path(store.path(mask_path("low-L1-s0")))
    path.write_bytes(path.read_bytes()[:64])
    assert main(["export", store.root, "--trial", "low-L1-s0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lxsweep: error: {path}: unreadable mask") and len(err.strip().splitlines()) == 1
