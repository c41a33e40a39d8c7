"""Weights & Biases: one run per trial and one summary run per sweep (``tracking.backend: wandb``).

Run ids are deterministic (see :mod:`lxsweep.tracking.base`), with
``resume="allow"``, so a retried or resumed trial continues its own run and
logs each epoch once (``step`` = epoch). ``tracking.mode: offline`` is the
default: no account or network needed, ``wandb sync <dir>`` uploads later. The
API key is never read, printed or stored here: wandb finds it in the
environment or ``~/.netrc`` by itself. With an object-store store (``s3://``)
the run files are written to a local temp directory and copied into
``<store>/wandb/`` when the run finishes, so offline runs outlive the node that
ran them (``wandb sync`` them from a copy of the store).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.report import ACCURACY_COLUMNS, aggregate
from lxsweep.store import Store, tracker_dir
from lxsweep.tracking.base import (CURVE_METRICS, EPOCH_METRICS, FINAL_METRICS, SweepTracker, TrialTracker,
                                   default_run_id, group, local_dir, sparsity_curves, trial_config, trial_label)
from lxsweep.tracking.registry import register_tracker


def _init(exp: Experiment, store: Store, **kwargs):
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    if exp.tracking.mode == "offline":
        os.environ["WANDB_MODE"] = "offline"  # the keyword alone still asks for a key in some paths
    return wandb.init(
        project=exp.tracking.project, entity=exp.tracking.entity, group=group(exp), mode=exp.tracking.mode,
        dir=str(local_dir(store, "wandb")), resume="allow", reinit="create_new", **kwargs,
    )


def _finish(run, store: Store, **kwargs) -> None:
    """Finish ``run``; on an object-store store, copy its run directory into ``<store>/wandb/`` (same layout)."""
    run_dir = Path(run.dir).parent  # <local wandb dir>/wandb/offline-run-<time>-<id>/files -> its run directory
    run.finish(**kwargs)
    if store.uri and run_dir.is_dir():
        rel = run_dir.relative_to(local_dir(store, "wandb")).as_posix()
        store.upload_dir(run_dir, f"{tracker_dir('wandb')}/{rel}")


class WandbTrial(TrialTracker):
    """The W&B run of one trial: config, tags, per-epoch curves with summary max, final metrics."""

    def __init__(self, exp: Experiment, key: TrialKey, store: Store, run_id: str):
        super().__init__(exp, key, store, run_id)
        self.run = _init(
            exp, store, id=run_id, name=trial_label(key, exp.sparsity(key.level)), job_type=key.subnetwork,
            config=trial_config(exp, key), tags=[exp.name, key.subnetwork, f"L{key.level}", f"seed{key.seed}"],
        )
        self.run.define_metric("epoch")
        self.run.define_metric("accuracy*", step_metric="epoch", summary="max,last")
        for m in EPOCH_METRICS:
            self.run.define_metric(m, step_metric="epoch", summary="last")

    def log_epoch(self, metrics: dict) -> None:
        self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=int(metrics["epoch"]))

    def finish_trial(self, final: dict) -> None:
        for k in FINAL_METRICS:
            if k in final:
                self.run.summary[f"final/{k}"] = final[k]

    def close(self, ok: bool) -> None:
        if self.run is not None:
            _finish(self.run, self.store, exit_code=0 if ok else 1)
            self.run = None


class WandbSweep(SweepTracker):
    """The sweep's summary run: results table, accuracy-vs-sparsity charts, the report figure."""

    def __init__(self, exp: Experiment, store: Store):
        super().__init__(exp, store)
        self.run = _init(exp, store, id=default_run_id(exp, "summary"), name=f"{exp.name} summary",
                         job_type="summary", config=exp.record(), tags=[exp.name, "summary"])
        self.updates = 0
        self.baselines: Optional[dict] = None  # the data's question-only baselines, read once

    def update(self, rows: list[dict], figure: Optional[str] = None) -> None:
        if self.run is None or not rows:
            return
        import wandb

        columns = ["trial", "subnetwork", "level", "seed", "sparsity", *[c for c in ACCURACY_COLUMNS if c in rows[0]]]
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        self.updates += 1
        data: dict = {"results": table}
        from lxsweep.report import load_baselines

        if self.baselines is None:
            self.baselines = load_baselines(self.store) or {}
        for name, values in self.baselines.items():
            for metric, value in values.items():
                self.run.summary[f"baseline/{name}/{metric}"] = value
        for metric in CURVE_METRICS:
            series = sparsity_curves(rows, metric, self.baselines)
            if not series:
                continue
            keys = list(series)
            xs = [[x for x, _ in series[k]] for k in keys]
            ys = [[y for _, y in series[k]] for k in keys]
            data[f"chart/{metric}"] = wandb.plot.line_series(xs=xs, ys=ys, keys=keys, title=f"{metric} vs sparsity (mean over seeds)", xname="sparsity %")
        agg = aggregate(rows)
        agg_cols = sorted({k for a in agg for k in a})
        data["aggregate"] = wandb.Table(columns=agg_cols, data=[[a.get(c) for c in agg_cols] for a in agg])
        if figure and Path(figure).is_file():
            data["accuracy_vs_sparsity"] = wandb.Image(figure)
        self.run.log(data, step=self.updates)
        for r in rows:
            self.run.summary[f"{r['trial']}/accuracy"] = r["accuracy"]

    def close(self) -> None:
        if self.run is not None:
            _finish(self.run, self.store)
            self.run = None


register_tracker("wandb", WandbTrial, WandbSweep)
