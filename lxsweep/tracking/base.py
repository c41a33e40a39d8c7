"""What every tracker does, and the names they share.

A :class:`TrialTracker` follows one trial (created on rank 0 only): per-epoch
scalars, the final metrics, the store files it read and wrote (its
artifacts), and a close that says whether the trial succeeded. A
:class:`SweepTracker` follows a sweep: the results table and the
accuracy-vs-sparsity curves as trials finish. These base classes track
nothing; they are the ``none`` backend, and a backend overrides what it records.

Names are deterministic so a retried or resumed trial continues its own run:
the run id is ``<experiment>-<hash>-<trial>`` unless the caller passes its own
(a local re-run of a trial the sweep already finished gets a run of its own).
Artifacts are named after the store file they stand for
(``<experiment>-<hash>-mask-<trial>``, ``<experiment>-<hash>-weights-<trial>``),
so the trial that writes a mask and the trial that trains with it name the
same artifact, across runs, resumes and launches of the same store.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey, mask_source, parent, trial_mask_name
from lxsweep.store import Store, mask_path, tracker_dir
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


# -- artifacts: the store files a trial reads and writes ------------------------------

MASK, WEIGHTS = "mask", "model"  # artifact types (W&B's model registry wants "model" in a weights type)


@dataclass(frozen=True)
class TrialArtifact:
    """A file in the store that trackers may record as an artifact (W&B does; the others need not)."""

    name: str  # the same in every run that records this file, e.g. ``smoke-1a2b3c4d5e-mask-low-L2-s0``
    type: str  # MASK or WEIGHTS
    path: str  # relative to the store
    description: str
    metadata: dict = field(default_factory=dict)


def artifact_name(exp: Experiment, what: str, trial: str) -> str:
    """``<experiment>-<hash>-<what>-<trial>``, in the characters W&B allows (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{group(exp)}-{what}-{trial}")[:128]


def mask_artifact(exp: Experiment, mask: str, made_by: str) -> TrialArtifact:
    """The stored mask trial ``mask`` trains with, computed by trial ``made_by`` (its parent, or itself)."""
    key = TrialKey.parse(mask)
    target = exp.sparsity(key.level)
    how = "generated at its start" if made_by == mask else f"computed from the trained weights of {made_by}"
    return TrialArtifact(
        artifact_name(exp, "mask", mask), MASK, mask_path(mask),
        f"The mask {mask} trains with ({100 * target:.1f}% of the prunable weights removed), {how}.",
        {"mask": mask, "made_by": made_by, "subnetwork": key.subnetwork, "level": key.level, "seed": key.seed,
         "target_sparsity": target, "experiment": exp.name, "hash": exp.hash, "path": mask_path(mask)},
    )


def trained_mask(exp: Experiment, key: TrialKey) -> Optional[TrialArtifact]:
    """The mask trial ``key`` trains with (its parent's child mask, or one generated at its start), if any."""
    mask = trial_mask_name(exp, key)
    if mask is None:
        return None
    made_by = parent(exp, TrialKey.parse(mask)) if mask_source(exp, key) else None
    return mask_artifact(exp, mask, made_by.name if made_by else key.name)


def weights_artifact(exp: Experiment, key: TrialKey, final: dict) -> TrialArtifact:
    """Trial ``key``'s kept weights; ``final`` is its ``metrics.json`` (or its report row), whose ``weights`` is set."""
    w = final["weights"]
    mask = trained_mask(exp, key)
    return TrialArtifact(
        artifact_name(exp, "weights", key.name), WEIGHTS, w["path"],
        f"Trained weights of {key.name} ({w['dtype']}): accuracy {100 * final['accuracy']:.2f}, "
        f"{100 * final['sparsity']:.1f}% of the prunable weights zero.",
        {"trial": key.name, "subnetwork": key.subnetwork, "level": key.level, "seed": key.seed,
         "mask": mask.name if mask else None, "accuracy": final["accuracy"], "sparsity": final["sparsity"],
         "sparsity_all": final.get("sparsity_all"), "dtype": w["dtype"], "bytes": w["bytes"], "sha256": w["sha256"],
         "zeros": w["zeros"], "experiment": exp.name, "hash": exp.hash, "path": w["path"]},
    )


def trial_inputs(exp: Experiment, key: TrialKey) -> list[TrialArtifact]:
    """What trial ``key`` reads from another trial: the chain mask its parent computed (none for dense or random)."""
    mask = trained_mask(exp, key)
    return [mask] if mask is not None and mask_source(exp, key) else []


def trial_outputs(exp: Experiment, key: TrialKey, final: dict) -> list[TrialArtifact]:
    """What trial ``key`` wrote (``final``: its ``metrics.json``): a mask generated at its start, the child masks
    it computed for the next level, and its weights when ``training.keep_weights`` kept them."""
    out = [mask_artifact(exp, child, key.name) for child in final.get("child_masks") or []]
    mask = trained_mask(exp, key)
    if mask is not None and not mask_source(exp, key):
        out.insert(0, mask)
    if final.get("weights"):
        out.append(weights_artifact(exp, key, final))
    return out


def ticket_artifacts(exp: Experiment, row: dict) -> list[TrialArtifact]:
    """A finished trial's mask and (when kept) weights, from its report row: what a summary links a ticket to."""
    key = TrialKey.parse(row["trial"])
    mask = trained_mask(exp, key)
    return [a for a in (mask, weights_artifact(exp, key, row) if row.get("weights") else None) if a is not None]


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

    def use_artifacts(self, artifacts: list[TrialArtifact]) -> None:
        """Record store files the trial reads as its inputs (see :func:`trial_inputs`); a backend may ignore them."""

    def log_artifacts(self, artifacts: list[TrialArtifact]) -> None:
        """Record store files the trial wrote as its outputs (see :func:`trial_outputs`); a backend may ignore them."""

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
