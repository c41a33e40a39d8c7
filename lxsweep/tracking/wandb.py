"""Weights & Biases: one run per trial and one summary run per sweep (``tracking.backend: wandb``).

Run ids are deterministic (see :mod:`lxsweep.tracking.base`), with
``resume="allow"``, so a retried or resumed trial continues its own run and
logs each epoch once (``step`` = epoch). ``tracking.mode: offline`` is the
default: no account or network needed, ``wandb sync <dir>`` uploads later. The
API key is never read, printed or stored here: wandb finds it in the
environment or ``~/.netrc`` by itself.

Artifacts make the lineage ``mask(L-1) -> trial L -> mask(L)``: a trial's run
uses the mask it trains with and logs the masks it computes and its kept
weights; the summary run uses the best ticket of each level. Every artifact is
named after its store file, so the run that logs a mask and the run that uses
it name the same artifact, and the same content is the same version (W&B
deduplicates by digest). ``tracking.artifacts: reference`` (the default)
records the store's URI and checksum of each file, ``upload`` copies the files.
A use is W&B's own "log this draft, then use it" (``run.use_artifact`` of an
artifact object): wandb refuses ``use_artifact`` in offline mode, so there the
same record is written directly, and ``wandb sync`` turns it into the same
input edge.

With an object-store store (``s3://``) the run files are written to a local
temp directory and copied into ``<store>/wandb/`` when the run finishes, so
offline runs outlive the node that ran them (``wandb sync`` them from a copy of the store).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse
from urllib.request import url2pathname

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.report import ACCURACY_COLUMNS, aggregate, best_tickets
from lxsweep.store import Store, tracker_dir
from lxsweep.tracking.base import (CURVE_METRICS, EPOCH_METRICS, FINAL_METRICS, MASK, WEIGHTS, SweepTracker,
                                   TrialArtifact, TrialTracker, default_run_id, group, local_dir, sparsity_curves,
                                   ticket_artifacts, trial_config, trial_label)
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


FILE_NAMES = {MASK: "mask.safetensors", WEIGHTS: "weights.safetensors"}  # the file's name inside its artifact


def record_artifacts(run, exp: Experiment, store: Store, artifacts: list[TrialArtifact], use: bool) -> None:
    """Log ``artifacts`` as outputs of ``run``, or (``use``) record them as its inputs; per ``tracking.artifacts``.

    A file that cannot be recorded (say, an ``s3://`` reference without
    boto3) costs a warning, never the trial: its results are in the store.
    """
    if exp.tracking.artifacts == "none" or run is None:
        return
    for a in artifacts:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                artifact = _artifact(exp, store, a, tmp)
                if not use:
                    run.log_artifact(artifact)
                elif run.offline:
                    # What run.use_artifact(artifact) records online; wandb refuses that call offline.
                    run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
                else:
                    run.use_artifact(artifact)
        except Exception as exc:  # noqa: BLE001 - tracking must not fail a finished trial
            print(f"lxsweep: warning: W&B artifact {a.name} ({a.path}) not recorded: {exc}", file=sys.stderr)


def _artifact(exp: Experiment, store: Store, a: TrialArtifact, tmp: str):
    import wandb

    artifact = wandb.Artifact(a.name, type=a.type, description=a.description, metadata=a.metadata)
    name = FILE_NAMES.get(a.type, Path(a.path).name)
    url = store.url(a.path)
    if exp.tracking.artifacts == "reference":
        artifact.add_reference(url, name=name, checksum=True)
    elif url.startswith("file://"):  # store files are written once: wandb may read them in place at upload
        artifact.add_file(url2pathname(urlparse(url).path), name=name, policy="immutable")
    else:
        local = Path(tmp) / name
        local.write_bytes(store.read_bytes(a.path))
        artifact.add_file(str(local), name=name, policy="mutable")  # copied to wandb's staging area now
    return artifact


def _settled(run_dir: Path, timeout: float = 10.0) -> None:
    """Wait until the files under ``run_dir`` stop growing: wandb's service process may still be writing the
    run file when ``finish()`` returns, and a copy taken then can lack the run's records."""
    import time

    last, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file())
        if size == last:
            return
        last = size
        time.sleep(0.3)


def _finish(run, store: Store, **kwargs) -> None:
    """Finish ``run``; on an object-store store, copy its run directory into ``<store>/wandb/`` (same layout)."""
    run_dir = Path(run.dir).parent  # <local wandb dir>/wandb/offline-run-<time>-<id>/files -> its run directory
    run.finish(**kwargs)
    if store.uri and run_dir.is_dir():
        _settled(run_dir)
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

    def use_artifacts(self, artifacts: list[TrialArtifact]) -> None:
        record_artifacts(self.run, self.exp, self.store, artifacts, use=True)

    def log_artifacts(self, artifacts: list[TrialArtifact]) -> None:
        record_artifacts(self.run, self.exp, self.store, artifacts, use=False)

    def close(self, ok: bool) -> None:
        if self.run is not None:
            _finish(self.run, self.store, exit_code=0 if ok else 1)
            self.run = None


class WandbSweep(SweepTracker):
    """The sweep's summary run: results table, accuracy-vs-sparsity charts, the report figure, the best tickets.

    ``best_tickets`` is a table with one row per level (see
    :func:`lxsweep.report.best_tickets`) naming each ticket's mask and weights
    artifacts; when the summary closes it uses those artifacts, so the
    lineage graph leads from the summary to each level's ticket.
    """

    def __init__(self, exp: Experiment, store: Store):
        super().__init__(exp, store)
        self.run = _init(exp, store, id=default_run_id(exp, "summary"), name=f"{exp.name} summary",
                         job_type="summary", config=exp.record(), tags=[exp.name, "summary"])
        self.updates = 0
        self.baselines: Optional[dict] = None  # the data's question-only baselines, read once
        self.tickets: list[dict] = []

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
        self.tickets = best_tickets(rows)
        if self.tickets:
            data["best_tickets"] = self._ticket_table(wandb)
        self.run.log(data, step=self.updates)
        for r in rows:
            self.run.summary[f"{r['trial']}/accuracy"] = r["accuracy"]
        for t in self.tickets:
            self.run.summary[f"best_ticket/L{t['level']}"] = t["trial"]

    def _ticket_table(self, wandb):
        columns = ["level", "sparsity", "trial", "seed", "accuracy", "seeds", "accuracy_mean", "mask", "weights"]
        data = []
        for t in self.tickets:
            names = {a.type: f"{a.name}:latest" for a in ticket_artifacts(self.exp, t)}
            data.append([t["level"], t["sparsity"], t["trial"], t["seed"], t["accuracy"], t["seeds"],
                         t["accuracy_mean"], names.get(MASK), names.get(WEIGHTS)])
        return wandb.Table(columns=columns, data=data)

    def close(self) -> None:
        if self.run is not None:
            for t in self.tickets:  # the final best ticket of each level: inputs of the summary
                record_artifacts(self.run, self.exp, self.store, ticket_artifacts(self.exp, t), use=True)
            _finish(self.run, self.store)
            self.run = None


register_tracker("wandb", WandbTrial, WandbSweep)
