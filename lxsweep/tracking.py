"""Weights & Biases: one run per trial (rank 0 only) and one summary run per sweep.

Run ids are deterministic (experiment hash + trial), with ``resume="allow"``,
so a retried or resumed trial continues its own run and logs each epoch once
(``step`` = epoch). ``offline`` is the default: no account or network needed,
``wandb sync <dir>`` uploads later. The API key is never read, printed or
stored here: wandb finds it in the environment or ``~/.netrc`` by itself.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Optional

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.store import WANDB_DIR, Store

EPOCH_METRICS = ("train_loss", "lr", "sparsity", "epoch_seconds")


def wandb_dir(store: Store) -> str:
    """Where run files go: inside a local/NFS store, else a local temp directory."""
    if store.uri:
        d = Path(tempfile.gettempdir()) / "lxsweep-wandb" / Path(store.root).name
    else:
        d = Path(store.path(WANDB_DIR))
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def run_id(exp: Experiment, name: str) -> str:
    return f"{exp.name}-{exp.hash}-{name}"[:128]


def rerun_id(exp: Experiment, name: str) -> str:
    """A run id of its own for a local re-run of a finished trial (never appends to the sweep's run)."""
    return f"{run_id(exp, name)[:110]}-rerun-{time.strftime('%Y%m%d-%H%M%S')}"


def group(exp: Experiment) -> str:
    return f"{exp.name}-{exp.hash}"


def _init(exp: Experiment, store: Store, **kwargs):
    if exp.tracking.wandb == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    if exp.tracking.wandb == "offline":
        os.environ["WANDB_MODE"] = "offline"  # the keyword alone still asks for a key in some paths
    return wandb.init(
        project=exp.tracking.project, entity=exp.tracking.entity, group=group(exp), mode=exp.tracking.wandb,
        dir=wandb_dir(store), resume="allow", reinit="create_new", **kwargs,
    )


def trial_label(key: TrialKey, sparsity: float) -> str:
    """Readable run name, e.g. ``low L3 s1 · 27.1%``."""
    return f"{key.subnetwork} L{key.level} s{key.seed} · {100 * sparsity:.1f}%"


class TrialTracker:
    """The W&B run of one trial (create it on rank 0 only)."""

    def __init__(self, exp: Experiment, key: TrialKey, store: Store, rerun: bool = False):
        """``rerun``: a run id of its own; else the trial's deterministic id (resumed attempts continue its run)."""
        self.key = key
        sparsity = exp.sparsity(key.level)
        config = {**exp.to_dict(), "trial": key.name, "level": key.level, "subnetwork": key.subnetwork,
                  "seed": key.seed, "target_sparsity": sparsity, "hash": exp.hash}
        self.run = _init(
            exp, store, id=(rerun_id if rerun else run_id)(exp, key.name), name=trial_label(key, sparsity), job_type=key.subnetwork,
            config=config, tags=[exp.name, key.subnetwork, f"L{key.level}", f"seed{key.seed}"],
        )
        if self.run is not None:
            self.run.define_metric("epoch")
            self.run.define_metric("accuracy*", step_metric="epoch", summary="max,last")
            for m in EPOCH_METRICS:
                self.run.define_metric(m, step_metric="epoch", summary="last")

    def log_epoch(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=int(metrics["epoch"]))

    def finish_trial(self, final: dict) -> None:
        if self.run is not None:
            for k in ("sparsity", "sparsity_all", "best_accuracy", "accuracy", "duration_s"):
                if k in final:
                    self.run.summary[f"final/{k}"] = final[k]

    def close(self, ok: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = None


class SweepTracker:
    """The sweep's summary run: results table, accuracy-vs-sparsity charts, the report figure."""

    def __init__(self, exp: Experiment, store: Store):
        self.exp, self.store = exp, store
        self.run = _init(exp, store, id=run_id(exp, "summary"), name=f"{exp.name} summary", job_type="summary",
                         config={**exp.to_dict(), "hash": exp.hash}, tags=[exp.name, "summary"])
        self.updates = 0

    def update(self, rows: list[dict], figure: Optional[str] = None) -> None:
        """Log the current results (one row per finished trial) and the aggregate curves."""
        if self.run is None or not rows:
            return
        import wandb

        from lxsweep.report import aggregate, ACCURACY_COLUMNS

        columns = ["trial", "subnetwork", "level", "seed", "sparsity", *[c for c in ACCURACY_COLUMNS if c in rows[0]]]
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        self.updates += 1
        data: dict = {"results": table}
        agg = aggregate(rows)
        for metric in ("accuracy", "accuracy_yesno", "accuracy_number", "accuracy_other"):
            series = {s: [(a["sparsity"] * 100, a[f"{metric}_mean"]) for a in agg if a["subnetwork"] == s and f"{metric}_mean" in a]
                      for s in sorted({a["subnetwork"] for a in agg})}
            series = {s: v for s, v in series.items() if v}
            if not series:
                continue
            keys = list(series)
            xs = [[x for x, _ in series[k]] for k in keys]
            ys = [[y for _, y in series[k]] for k in keys]
            data[f"chart/{metric}"] = wandb.plot.line_series(xs=xs, ys=ys, keys=keys, title=f"{metric} vs sparsity (mean over seeds)", xname="sparsity %")
        agg_cols = sorted({k for a in agg for k in a})
        data["aggregate"] = wandb.Table(columns=agg_cols, data=[[a.get(c) for c in agg_cols] for a in agg])
        if figure and Path(figure).is_file():
            data["accuracy_vs_sparsity"] = wandb.Image(figure)
        self.run.log(data, step=self.updates)
        for r in rows:
            self.run.summary[f"{r['trial']}/accuracy"] = r["accuracy"]

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
