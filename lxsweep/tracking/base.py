"""What every tracker does, and the names they share.

A :class:`TrialTracker` follows one trial (created on rank 0 only): per-epoch
scalars, the final metrics, and a close that says whether the trial
succeeded. A :class:`SweepTracker` follows a sweep: the results table and the
accuracy-vs-sparsity curves as trials finish. These base classes track
nothing; they are the ``none`` backend, and a backend overrides what it records.

Names are deterministic so a retried or resumed trial continues its own run:
the run id is ``<experiment>-<hash>-<trial>`` unless the caller passes its own
(a local re-run of a trial the sweep already finished gets a run of its own).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.store import Store, tracker_dir
from lxsweep.tracking.registry import register_tracker

# Per-epoch scalars besides the accuracies, and the final metrics every tracker summarises.
EPOCH_METRICS = ("train_loss", "lr", "sparsity", "epoch_seconds")
FINAL_METRICS = ("sparsity", "sparsity_all", "best_accuracy", "accuracy", "duration_s")
CURVE_METRICS = ("accuracy", "accuracy_yesno", "accuracy_number", "accuracy_other")


def group(exp: Experiment) -> str:
    """The sweep's name in every tracker: ``<experiment>-<hash>`` (the store's name)."""
    return exp.store_name


def default_run_id(exp: Experiment, name: str) -> str:
    """The run of trial (or ``summary``) ``name`` in this sweep."""
    return f"{group(exp)}-{name}"[:128]


def trial_label(key: TrialKey, sparsity: float) -> str:
    """Readable run name, e.g. ``low L3 s1 · 27.1%``."""
    return f"{key.subnetwork} L{key.level} s{key.seed} · {100 * sparsity:.1f}%"


def trial_config(exp: Experiment, key: TrialKey) -> dict:
    """The full experiment plus the trial's own coordinates: what a tracker records as the run's config."""
    return {**exp.to_dict(), "trial": key.name, "level": key.level, "subnetwork": key.subnetwork,
            "seed": key.seed, "target_sparsity": exp.sparsity(key.level), "hash": exp.hash}


def local_dir(store: Store, backend: str) -> Path:
    """Where a backend writes its files: inside a local/NFS store, else a local temp directory."""
    if store.uri:
        d = Path(tempfile.gettempdir()) / f"lxsweep-{backend}" / Path(store.root).name
    else:
        d = Path(store.path(tracker_dir(backend)))
    d.mkdir(parents=True, exist_ok=True)
    return d


def sparsity_curves(rows: list[dict], metric: str, baselines: Optional[dict] = None) -> dict[str, list[tuple[float, float]]]:
    """Per subnetwork, ``(sparsity %, mean accuracy over seeds)`` points in level order.

    The data's question-only baselines (``report.load_baselines``) become flat
    reference series ``baseline: blind`` / ``baseline: majority`` across the
    sparsities seen so far.
    """
    from lxsweep.report import aggregate

    agg = aggregate(rows)
    curves = {s: [(a["sparsity"] * 100, a[f"{metric}_mean"]) for a in agg if a["subnetwork"] == s and f"{metric}_mean" in a]
              for s in sorted({a["subnetwork"] for a in agg})}
    curves = {s: v for s, v in curves.items() if v}
    span = [x for v in curves.values() for x, _ in v]
    for name, values in sorted((baselines or {}).items()):
        if span and metric in values:
            curves[f"baseline: {name}"] = [(min(span), values[metric]), (max(span), values[metric])]
    return curves


class TrialTracker:
    """One trial's run. Use as a context manager: leaving it closes the run, marked failed on an exception."""

    def __init__(self, exp: Experiment, key: TrialKey, store: Store, run_id: str):
        self.exp, self.key, self.store, self.run_id = exp, key, store, run_id

    def log_epoch(self, metrics: dict) -> None:
        """Record one epoch's scalars (``metrics["epoch"]`` is the step)."""

    def finish_trial(self, final: dict) -> None:
        """Record the trial's final metrics (what ``metrics.json`` holds)."""

    def close(self, ok: bool) -> None:
        """End the run; ``ok=False`` marks it failed."""

    def __enter__(self) -> "TrialTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


class SweepTracker:
    """The sweep's summary: called with every finished trial's row, and the report figure at the end."""

    def __init__(self, exp: Experiment, store: Store):
        self.exp, self.store = exp, store

    def update(self, rows: list[dict], figure: Optional[str] = None) -> None:
        """The current results (one row per finished trial, see ``report.load_rows``) and the figure's path."""

    def close(self) -> None:
        """End the summary."""


register_tracker("none", TrialTracker, SweepTracker)
