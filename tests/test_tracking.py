"""Trackers behind one interface: TensorBoard event files and W&B offline artifacts read back, a toy tracker.

W&B's curves from a real Ray sweep are read back by the sweep tests (tests/test_sweep.py).
"""
from __future__ import annotations

import base64
import hashlib
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
from lxsweep.tracking.base import trial_outputs
from lxsweep.hooks import TrialStart
from lxsweep.trial import run_trial
from tensorboard_records import run as read_run
from wandb_records import lineage, run_info

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml"


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


# -- W&B artifacts: the lineage mask(L-1) -> trial L -> mask(L), read back from the offline run files ----------

WANDB_SETS = ["tracking.backend=wandb", "pruning.subnetworks=[low, random]", "pruning.levels=1",
              "training.keep_weights=tickets"]


def wandb_runs(store: Store) -> dict[str, dict]:
    """Every offline W&B run in the store by id (the summary's file holds several segments' records: one run)."""
    return {r["id"]: r for r in map(run_info, sorted(Path(store.path("wandb")).rglob("*.wandb")))}


@pytest.fixture(scope="module")
def wandb_store(tmp_path_factory):
    """A dense, a low and a random trial tracked with W&B offline through the trial hook, and the summary."""
    exp = load_experiment(SMOKE, [*TINY, f"storage={tmp_path_factory.mktemp('wb')}", *WANDB_SETS])
    store = Store.for_experiment(exp)
    finals = {k: tracked_trial(exp, TrialKey.parse(k), store) for k in ("dense-L0-s0", "low-L1-s0", "random-L1-s0")}
    sweep = open_sweep_tracker(exp, store)
    sweep.update(load_rows(store))
    sweep.close()
    return exp, store, finals, wandb_runs(store)


def test_wandb_trials_log_the_mask_lineage(wandb_store):
    exp, store, finals, runs = wandb_store
    run = lambda trial: runs[f"{exp.store_name}-{trial}"]  # noqa: E731
    name = lambda what, trial: f"{exp.store_name}-{what}-{trial}"  # noqa: E731
    dense_in, dense_out = lineage(run("dense-L0-s0"))
    low_in, low_out = lineage(run("low-L1-s0"))
    random_in, random_out = lineage(run("random-L1-s0"))
    assert dense_in == {} and set(dense_out) == {name("mask", "low-L1-s0"), name("weights", "dense-L0-s0")}
    # The mask dense computed is the input of the trial that trains with it: one name, one content digest, so
    # `wandb sync` makes one version with the edges dense-L0-s0 -> mask -> low-L1-s0.
    assert set(low_in) == {name("mask", "low-L1-s0")}
    assert low_in[name("mask", "low-L1-s0")]["digest"] == dense_out[name("mask", "low-L1-s0")]["digest"]
    assert set(low_out) == {name("mask", "low-L2-s0"), name("weights", "low-L1-s0")}  # its child mask, its weights
    # A random mask is made at the trial's start: an output of that trial; keep_weights=tickets keeps no random weights.
    assert random_in == {} and set(random_out) == {name("mask", "random-L1-s0")}
    child = low_out[name("mask", "low-L2-s0")]
    assert child["type"] == "mask" and child["metadata"] == {
        "mask": "low-L2-s0", "made_by": "low-L1-s0", "subnetwork": "low", "level": 2, "seed": 0,
        "target_sparsity": exp.sparsity(2), "experiment": exp.name, "hash": exp.hash,
        "path": "masks/low-L2-s0.safetensors"}
    weights, kept = low_out[name("weights", "low-L1-s0")], finals["low-L1-s0"]
    assert weights["type"] == "model" and weights["metadata"]["mask"] == name("mask", "low-L1-s0")
    for k in ("sha256", "zeros", "dtype", "bytes"):
        assert weights["metadata"][k] == kept["weights"][k], k
    assert weights["metadata"]["accuracy"] == kept["accuracy"] and weights["metadata"]["sparsity"] == kept["sparsity"]
    # tracking.artifacts: reference (the default): each file is its store URI and checksum; nothing is copied.
    for artifact in [*dense_out.values(), *low_in.values(), *low_out.values(), *random_out.values()]:
        (entry,) = artifact["files"]
        path = Path(store.path(artifact["metadata"]["path"]))
        assert entry["ref"] == path.as_uri() and entry["local_path"] == ""
        assert entry["digest"] == base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_wandb_summary_links_the_best_ticket_per_level(wandb_store):
    exp, store, finals, runs = wandb_store
    summary = runs[f"{exp.store_name}-summary"]
    assert summary["summary"]["best_ticket/L1"] == "low-L1-s0"
    used, logged = lineage(summary)
    _, low_out = lineage(runs[f"{exp.store_name}-low-L1-s0"])
    mask, weights = f"{exp.store_name}-mask-low-L1-s0", f"{exp.store_name}-weights-low-L1-s0"
    _, dense_out = lineage(runs[f"{exp.store_name}-dense-L0-s0"])
    assert set(used) == {mask, weights} and logged == {}
    assert used[mask]["digest"] == dense_out[mask]["digest"] and used[weights]["digest"] == low_out[weights]["digest"]
    (table,) = summary["dir"].glob("files/media/table/best_tickets_*.table.json")
    rows = json.loads(table.read_text())
    (row,) = [dict(zip(rows["columns"], r)) for r in rows["data"]]
    assert row["trial"] == "low-L1-s0" and row["accuracy"] == finals["low-L1-s0"]["accuracy"]
    assert row["mask"] == f"{mask}:latest" and row["weights"] == f"{weights}:latest"


def test_wandb_upload_mode_copies_and_a_rerun_logs_only_its_input(wandb_store):
    exp, store, finals, _ = wandb_store
    key, final = TrialKey.parse("low-L1-s0"), finals["low-L1-s0"]
    upload = load_experiment(SMOKE, [*TINY, f"storage={exp.storage}", *WANDB_SETS, "tracking.artifacts=upload"])
    with open_trial_tracker(upload, key, store, run_id="upload-check") as tracker:
        tracker.log_artifacts(trial_outputs(upload, key, final))
    # A local re-run of a finished trial: the artifacts named after the trial stay the sweep's.
    rerun = Tracking(exp, key, store, rerun=True)
    rerun.on_start(TrialStart(key, rank=0, world=1, epochs=1, steps_per_epoch=1, epoch=0, step=0, resumed=False))
    rerun.on_end(final)
    rerun.on_close(True)
    runs = wandb_runs(store)
    _, uploaded = lineage(runs["upload-check"])
    _, referenced = lineage(runs[f"{exp.store_name}-low-L1-s0"])
    assert set(uploaded) == set(referenced)
    for name, artifact in uploaded.items():
        (entry,) = artifact["files"]
        assert entry["ref"] == "" and entry["local_path"] == store.path(artifact["metadata"]["path"])
        assert artifact["digest"] == referenced[name]["digest"]  # the same version, whichever the mode
    (rerun_run,) = [r for i, r in runs.items() if i.startswith(f"{exp.store_name}-low-L1-s0-rerun-")]
    used, logged = lineage(rerun_run)
    assert set(used) == {f"{exp.store_name}-mask-low-L1-s0"} and logged == {}
