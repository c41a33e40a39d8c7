"""Experiment tracking behind one small interface, chosen by ``tracking.backend``.

``wandb`` (the default), ``tensorboard`` and ``none`` are built in; add one
with :func:`register_tracker`. The trial and the sweep open their trackers
here and never learn which backend runs.
"""
from __future__ import annotations

from typing import Optional

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.store import Store
from lxsweep.tracking.base import SweepTracker, TrialArtifact, TrialTracker, default_run_id
from lxsweep.tracking.registry import backend, register_tracker, tracker_names

__all__ = ["SweepTracker", "TrialArtifact", "TrialTracker", "open_sweep_tracker", "open_trial_tracker",
           "register_tracker", "tracker_names"]


def open_trial_tracker(exp: Experiment, key: TrialKey, store: Store, run_id: Optional[str] = None) -> TrialTracker:
    """The tracker of one trial (open it on rank 0 only); ``run_id`` defaults to the sweep's run of this trial."""
    return backend(exp.tracking.backend).trial(exp, key, store, run_id or default_run_id(exp, key.name))


def open_sweep_tracker(exp: Experiment, store: Store) -> SweepTracker:
    """The sweep's summary tracker."""
    opener = backend(exp.tracking.backend).sweep or SweepTracker
    return opener(exp, store)
