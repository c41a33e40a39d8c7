"""TensorBoard event files via tensorboardX (``tracking.backend: tensorboard``), for users without W&B.

Each trial writes ``<store>/tensorboard/<run id>/``: one scalar curve per
epoch metric (step = epoch, tags named as in ``metrics.json``), the final
metrics under ``final/``, and the trial's config as text. A resumed trial
adds an event file to the same directory and logs only the epochs it ran, so
TensorBoard shows one continuous curve. The sweep writes
``<store>/tensorboard/<experiment>-<hash>-summary/`` when it closes: the
accuracy of each subnetwork against sparsity (step = sparsity in whole
percent, mean over seeds), the results table and the report figure.
``tensorboard --logdir <store>/tensorboard`` shows them all. On an object-store
store the files are written locally and copied into the store on close.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.store import Store
from lxsweep.tracking.base import (CURVE_METRICS, FINAL_METRICS, SweepTracker, TrialTracker, default_run_id,
                                   local_dir, sparsity_curves, trial_config)
from lxsweep.tracking.registry import register_tracker

BACKEND = "tensorboard"


class _Writer:
    """A SummaryWriter for one run directory that copies its files into a remote store on close."""

    def __init__(self, store: Store, run_id: str):
        from tensorboardX import SummaryWriter

        self.store, self.rel = store, f"{BACKEND}/{run_id}"
        self.dir = local_dir(store, BACKEND) / run_id
        self.writer = SummaryWriter(logdir=str(self.dir))

    def close(self) -> None:
        self.writer.close()
        if self.store.uri:
            for f in sorted(self.dir.iterdir()):
                self.store.write_bytes(f"{self.rel}/{f.name}", f.read_bytes())


class TensorBoardTrial(TrialTracker):
    """One trial's event files: per-epoch scalars, final metrics, config."""

    def __init__(self, exp: Experiment, key: TrialKey, store: Store, run_id: str):
        super().__init__(exp, key, store, run_id)
        self.out = _Writer(store, run_id)
        self.out.writer.add_text("config", _code(yaml.safe_dump(trial_config(exp, key), sort_keys=False)), 0)

    def log_epoch(self, metrics: dict) -> None:
        epoch = int(metrics["epoch"])
        for k, v in metrics.items():
            if k not in ("epoch", "step") and isinstance(v, (int, float)):
                self.out.writer.add_scalar(k, v, global_step=epoch)

    def finish_trial(self, final: dict) -> None:
        step = int(final.get("epochs", 0))
        for k in FINAL_METRICS:
            if k in final:
                self.out.writer.add_scalar(f"final/{k}", final[k], global_step=step)

    def close(self, ok: bool) -> None:
        if self.out is not None:
            self.out.writer.add_text("status", "finished" if ok else "failed", 0)
            self.out.close()
            self.out = None


class TensorBoardSweep(SweepTracker):
    """The sweep summary, written once when the sweep closes (from the last rows and figure it was given)."""

    def __init__(self, exp: Experiment, store: Store):
        super().__init__(exp, store)
        self.rows: list[dict] = []
        self.figure: Optional[str] = None

    def update(self, rows: list[dict], figure: Optional[str] = None) -> None:
        self.rows, self.figure = rows, figure or self.figure

    def close(self) -> None:
        if not self.rows:
            return
        from lxsweep.report import load_baselines, to_markdown

        baselines = load_baselines(self.store)
        out = _Writer(self.store, default_run_id(self.exp, "summary"))
        for metric in CURVE_METRICS:
            for sub, points in sparsity_curves(self.rows, metric, baselines).items():
                for sparsity, accuracy in points:
                    out.writer.add_scalar(f"{metric}_vs_sparsity/{sub}", accuracy, global_step=round(sparsity))
        out.writer.add_text("results", to_markdown(self.rows, self.exp.store_name, baselines), 0)
        if self.figure and Path(self.figure).is_file():
            import matplotlib.image

            out.writer.add_image("accuracy_vs_sparsity", matplotlib.image.imread(self.figure)[..., :3], 0,
                                 dataformats="HWC")
        out.close()
        self.rows = []


def _code(text: str) -> str:
    """Markdown code block (TensorBoard renders text summaries as Markdown)."""
    return "```\n" + text + "```"


register_tracker(BACKEND, TensorBoardTrial, TensorBoardSweep)
