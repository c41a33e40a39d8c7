"""A criterion and a tracker registered from modules outside the package: trial, status, report (their real
Ray sweep, DDP on a two-node cluster, is
tests/test_sweep.py::test_ddp_across_two_nodes_shares_the_store_runs_plugins_and_matches_one_worker).

``tests/toy_criterion.py`` registers the ``toy`` criterion and
``tests/toy_tracker.py`` the ``toy`` tracker; the experiment names both under
``plugins``, nothing under ``lxsweep/`` knows them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import ROOT, TINY

from lxsweep import pruning, subnetworks
from lxsweep.config import load_experiment
from lxsweep.report import REPORT_FILES
from lxsweep.store import Store, mask_path

TESTS = Path(__file__).resolve().parent
SMOKE = ROOT / "experiments" / "smoke.yaml"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "WANDB_API"))}
    # The plugin must be importable where lxsweep runs (here: the tests directory on PYTHONPATH).
    env.update(RAY_AUTH_MODE="disabled", WANDB_MODE="offline", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    return env


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lxsweep.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def _sets(tmp_path: Path, subnets: str, levels: int, *extra: str) -> list[str]:
    """The smoke experiment, tiny, with the toy plugins (criterion and tracker): ``--set`` arguments."""
    return [*TINY, f"storage={tmp_path / 'runs'}", "plugins=[toy_criterion, toy_tracker]", "tracking.backend=toy",
            f"pruning.subnetworks={subnets}", f"pruning.levels={levels}", *extra]


def _tracked(store: Store, exp_name: str, trial: str) -> list[str]:
    """The toy tracker's events for one trial's run."""
    lines = Path(store.path(f"toy/{exp_name}-{trial}.jsonl")).read_text().splitlines()
    return [json.loads(x)["event"] for x in lines]


def _args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def _colour_pixels(png: Path, name: str) -> int:
    """Pixels of the figure drawn in the subnetwork's colour (its lines and markers, alpha 0.9 over white)."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    colour = subnetworks.style(name)[0]
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) * 0.9 + 255 * 0.1
    return int((np.abs(rgb - target).max(axis=2) <= 2).sum())


def _report_shows_toy(store: Store, tmp_path: Path) -> None:
    """results.md has toy rows; the figure has toy's colour, which a figure of the other rows lacks."""
    from lxsweep.report import load_rows, plot

    md = Path(store.path("report/results.md")).read_text()
    assert "| toy | 1 |" in md, md
    assert "| toy − dense | 1 |" in md, md  # the comparison toy's registration declares
    without = tmp_path / "without-toy.png"
    plot([r for r in load_rows(store) if r["subnetwork"] != "toy"], without, "no toy")
    assert _colour_pixels(without, "toy") == 0
    assert _colour_pixels(Path(store.path("report/accuracy_vs_sparsity.png")), "toy") >= 20


def test_toy_criterion_trial_then_status_and_report_on_experiment_and_store(tmp_path):
    sets = _sets(tmp_path, "[toy]", 2)
    plan = cli("plan", str(SMOKE), "--no-checks", *_args(sets))
    assert plan.returncode == 0, plan.stderr
    assert "toy-L2-s0" in plan.stdout and "<- toy-L1-s0" in plan.stdout  # a chain in the DAG
    proc = cli("trial", str(SMOKE), "--level", "2", "--subnetwork", "toy", "--seed", "0", *_args(sets))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running it first: dense-L0-s0, toy-L1-s0" in proc.stdout
    assert "result toy-L2-s0: accuracy" in proc.stdout
    assert "toy-L2-s0: 100%" in proc.stderr  # the progress bar

    exp = load_experiment(SMOKE, sets)
    store = Store.for_experiment(exp)
    for trial in ("dense-L0-s0", "toy-L1-s0", "toy-L2-s0"):  # local trials use the experiment's tracker
        assert _tracked(store, exp.store_name, trial) == ["epoch"] * exp.training.epochs + ["final", "close"]
    meta = pruning.read_mask_metadata(store.path(mask_path("toy-L2-s0")))
    assert json.loads(meta["kind"]) == "toy" and json.loads(meta["from"]) == "toy-L1-s0"
    m1, m2 = (pruning.load_mask(store.path(mask_path(f"toy-L{k}-s0"))) for k in (1, 2))
    assert all(not (m2[n] & ~m1[n]).any() for n in m1)  # a chain: nested masks

    # A store opened by `trial` is as complete as one opened by `launch`: status and report work on both targets.
    for target in (str(SMOKE), store.root):
        extra = _args(sets) if target == str(SMOKE) else []
        status = cli("status", target, *extra)
        assert status.returncode == 0, status.stderr
        assert "3/3 done, 0 running, 0 waiting, 0 failed, 0 skipped" in status.stdout, status.stdout
        report = cli("report", target, *extra)
        assert report.returncode == 0, report.stderr
        assert report.stdout.split() == [store.path(f"report/{f}") for f in REPORT_FILES]
        _report_shows_toy(store, tmp_path)
    assert "| toy | 2 |" in Path(store.path("report/results.md")).read_text()
