"""Trackers behind one interface: TensorBoard event files read back, a toy tracker registered from a test.

W&B's offline files are read back by the sweep tests (tests/test_sweep.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY
from lxsweep.config import load_experiment
from lxsweep.hooks import Tracking
from lxsweep.plan import TrialKey
from lxsweep.report import load_rows
from lxsweep.store import Store
from lxsweep.tracking import open_sweep_tracker, open_trial_tracker, tracker_names
from lxsweep.train import run_trial
from tensorboard_records import run as read_run


def tracked_trial(exp, key: TrialKey, store: Store) -> dict:
    """Run one trial with the tracking hook a sweep worker and `lxsweep trial` both pass."""
    return run_trial(exp, key, store, hooks=[Tracking(exp, key, store)], log=lambda s: None)


@pytest.fixture(scope="module")
def tensorboard_store(tmp_path_factory):
    """A dense and a random trial tracked with TensorBoard, and the sweep summary over both."""
    storage = tmp_path_factory.mktemp("tb")
    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml",
                          [*TINY, f"storage={storage}", "tracking.backend=tensorboard", "pruning.subnetworks=[random]"])
    store = Store.for_experiment(exp)
    finals = {k: tracked_trial(exp, TrialKey.parse(k), store) for k in ("dense-L0-s0", "random-L1-s0")}
    sweep = open_sweep_tracker(exp, store)
    sweep.update(load_rows(store))
    sweep.close()
    return exp, store, finals


def test_tensorboard_trial_curves_read_back(tensorboard_store):
    exp, store, finals = tensorboard_store
    for name, final in finals.items():
        run = read_run(Path(store.path("tensorboard")) / f"{exp.store_name}-{name}")
        epochs = list(range(1, exp.training.epochs + 1))
        for metric in ("accuracy", "accuracy_yesno", "train_loss", "lr"):
            assert [step for step, _ in run["scalars"][metric]] == epochs, metric
            assert [v for _, v in run["scalars"][metric]] == pytest.approx([h[metric] for h in final["history"]])
        assert run["scalars"]["final/accuracy"] == [(exp.training.epochs, pytest.approx(final["accuracy"]))]
        assert f"trial: {name}" in run["texts"]["config"] and run["texts"]["status"] == "finished"
    assert "sparsity" in read_run(Path(store.path("tensorboard")) / f"{exp.store_name}-random-L1-s0")["scalars"]


def test_tensorboard_sweep_summary_read_back(tensorboard_store):
    exp, store, finals = tensorboard_store
    run = read_run(Path(store.path("tensorboard")) / f"{exp.store_name}-summary")
    dense, random = finals["dense-L0-s0"], finals["random-L1-s0"]
    assert run["scalars"]["accuracy_vs_sparsity/dense"] == [(0, pytest.approx(dense["accuracy"]))]
    assert run["scalars"]["accuracy_vs_sparsity/random"] == [(round(100 * random["sparsity"]), pytest.approx(random["accuracy"]))]
    assert "| random | 1 |" in run["texts"]["results"]


def test_failed_trial_is_marked_failed(tmp_path):
    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml",
                          [*TINY, f"storage={tmp_path}", "tracking.backend=tensorboard"])
    store = Store.for_experiment(exp)
    with pytest.raises(RuntimeError):
        with open_trial_tracker(exp, TrialKey.parse("dense-L0-s0"), store, run_id="crash") as tracker:
            tracker.log_epoch({"epoch": 1, "accuracy": 0.5})
            raise RuntimeError("worker lost")
    run = read_run(Path(store.path("tensorboard")) / "crash")
    assert run["texts"]["status"] == "failed" and run["scalars"]["accuracy"] == [(1, 0.5)]


def test_toy_tracker_registered_from_a_test_module(tensorboard_store):
    import toy_tracker  # noqa: F401  (registers "toy"; nothing under lxsweep/ names it)

    assert "toy" in tracker_names()
    tb_exp, store, _ = tensorboard_store  # tracking is not in the hash: same store, its rewind point is reused
    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml",
                          [*TINY, f"storage={tb_exp.storage}", "tracking.backend=toy", "pruning.subnetworks=[random]"])
    assert Store.for_experiment(exp).root == store.root
    key = TrialKey.parse("dense-L0-s0")
    final = tracked_trial(exp, key, store)
    with open_trial_tracker(exp, key, store, run_id="local-rerun") as rerun:  # a local re-run: a run of its own
        rerun.finish_trial(final)
    lines = [json.loads(x) for x in Path(store.path(f"toy/{exp.store_name}-dense-L0-s0.jsonl")).read_text().splitlines()]
    assert [x["event"] for x in lines] == ["epoch"] * exp.training.epochs + ["final", "close"]
    assert lines[-2]["accuracy"] == final["accuracy"] and lines[-1]["ok"] is True
    assert [json.loads(x)["event"] for x in Path(store.path("toy/local-rerun.jsonl")).read_text().splitlines()] == [
        "final", "close"]
    sweep = open_sweep_tracker(exp, store)
    sweep.update(load_rows(store))
    assert json.loads(Path(store.path("toy/summary.json")).read_text()) == ["dense-L0-s0", "random-L1-s0"]
