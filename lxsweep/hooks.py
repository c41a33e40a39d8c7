"""Trial hooks: the interface, and the hooks ``lxsweep trial`` and the Ray Train worker share (none imports Ray).

:func:`lxsweep.trial.run_trial` calls them around the one training loop
(:class:`lxsweep.train.Fit`); the Ray-only hook (report and checkpoint) lives
in lxsweep/sweep.py.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.store import Store


@dataclass(frozen=True)
class TrialStart:
    """What a hook learns when the trial starts (after the model, data and any resume state are loaded)."""

    key: TrialKey
    rank: int
    world: int
    epochs: int
    steps_per_epoch: int
    epoch: int  # epochs already done (resumed from a checkpoint), else 0
    step: int
    resumed: bool
    max_steps: Optional[int] = None  # a trial that stops before its last epoch ends (the probe)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs if self.max_steps is None else self.max_steps


class TrialHook:
    """Callbacks around one trial; override what you need. Called on every rank unless noted.

    Order within a trial: ``on_start``, ``on_step`` after each optimizer
    step, ``on_epoch`` after each evaluation (``state()`` builds the checkpoint
    on demand), ``on_metrics`` then ``on_end`` on rank 0 around writing
    ``metrics.json``, ``on_close`` always (``ok`` False after an exception).
    Hooks run in the order given.
    """

    def on_start(self, start: TrialStart) -> None:
        pass

    def on_step(self, step: int) -> None:
        pass

    def on_epoch(self, metrics: dict, state: Callable[[], dict]) -> None:
        pass

    def on_metrics(self, metrics: dict) -> None:
        """Rank 0, before ``metrics.json`` is written: may add keys."""

    def on_end(self, metrics: dict) -> None:
        """Rank 0, after ``metrics.json`` is written."""

    def on_close(self, ok: bool) -> None:
        pass


class StepClock(TrialHook):
    """Wall clock of this attempt's first and last optimizer step (bench/ray_overhead.py reads them)."""

    def __init__(self) -> None:
        self.first: Optional[float] = None
        self.last: Optional[float] = None

    def on_step(self, step: int) -> None:
        self.last = time.time()
        if self.first is None:
            self.first = self.last

    def on_metrics(self, metrics: dict) -> None:
        metrics.update(first_step_at=self.first, last_step_at=self.last)


# Fault injection for tests and drills: "<trial>:<epoch>" hard-exits the worker after that epoch
# unless it was resumed from a checkpoint (so a restart succeeds); "<trial>:<epoch>:always" every time.
FAULT_ENV = "LXSWEEP_FAULT"


def numbers(metrics: dict) -> dict:
    """The numeric entries of an epoch's metrics (what trackers and Ray reports take)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


class Tracking(TrialHook):
    """The trial's tracker run (rank 0 only): one point per epoch, the final metrics, closed on exit.

    At the start the run records the mask the trial trains with as its input;
    at the end the masks and weights it wrote as its outputs (the tracker's
    artifacts; see :func:`lxsweep.tracking.base.trial_outputs`).
    ``rerun=True`` (a local re-run of a trial the store already has) gives the
    run an id of its own, so it never appends to the sweep's run of that trial,
    and records only its input: the artifacts named after the trial are the
    sweep's.
    """

    def __init__(self, exp: Experiment, key: TrialKey, store: Store, rerun: bool = False):
        self.exp, self.key, self.store, self.rerun = exp, key, store, rerun
        self.tracker = None

    def on_start(self, start: TrialStart) -> None:
        if start.rank != 0:
            return
        from lxsweep.tracking import open_trial_tracker
        from lxsweep.tracking.base import default_run_id, trial_inputs

        run_id = None  # the sweep's run of this trial: a resumed attempt continues it
        if self.rerun:
            run_id = f"{default_run_id(self.exp, self.key.name)[:110]}-rerun-{time.strftime('%Y%m%d-%H%M%S')}"
        self.tracker = open_trial_tracker(self.exp, self.key, self.store, run_id)
        self.tracker.use_artifacts(trial_inputs(self.exp, self.key))

    def on_epoch(self, metrics: dict, state: Callable[[], dict]) -> None:
        if self.tracker is not None:
            self.tracker.log_epoch(numbers(metrics))

    def on_end(self, metrics: dict) -> None:
        if self.tracker is not None:
            from lxsweep.tracking.base import trial_outputs

            self.tracker.finish_trial(metrics)
            if not self.rerun:
                self.tracker.log_artifacts(trial_outputs(self.exp, self.key, metrics))

    def on_close(self, ok: bool) -> None:
        if self.tracker is not None:
            self.tracker.close(ok)
            self.tracker = None


class ProgressBar(TrialHook):
    """A tqdm bar over the trial's optimizer steps (on stderr), with the last epoch's accuracy."""

    def __init__(self) -> None:
        self.bar = None

    def on_start(self, start: TrialStart) -> None:
        from tqdm import tqdm

        if start.rank == 0:
            self.bar = tqdm(total=start.total_steps, initial=start.step, desc=start.key.name, unit="step",
                            dynamic_ncols=True)

    def on_step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch(self, metrics: dict, state: Callable[[], dict]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(epoch=metrics["epoch"], accuracy=f"{metrics['accuracy']:.4f}")

    def on_close(self, ok: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class FaultInjection(TrialHook):
    """Hard-exit the process after epoch E of trial T (``LXSWEEP_FAULT=T:E[:always]``, comma-separated for several
    trials), as a lost worker would; ``always`` crashes the resumed attempts too, so the trial fails for good."""

    def __init__(self, spec: str):
        parts = spec.split(":")
        self.trial, self.epoch, self.always = parts[0], int(parts[1]), parts[2:] == ["always"]
        self.armed = False

    @classmethod
    def from_env(cls) -> list["FaultInjection"]:
        """The hook the environment asks for, if any (a list, to splat into the hooks)."""
        return [cls(spec) for spec in os.environ.get(FAULT_ENV, "").split(",") if spec]

    def on_start(self, start: TrialStart) -> None:
        self.armed = start.key.name == self.trial and (not start.resumed or self.always)

    def on_epoch(self, metrics: dict, state: Callable[[], dict]) -> None:
        # A resumed attempt starts past the checkpointed epoch E: ``always`` dies at its first epoch from E on.
        if self.armed and metrics["epoch"] >= self.epoch:
            # Die a few seconds into the next epoch, as an OOM kill or a lost node would: by then Ray Train
            # has registered this epoch's checkpoint (reports are committed when its controller polls).
            time.sleep(3)
            os._exit(17)


def log_line(line: str) -> None:
    """Print a log line above an active progress bar."""
    import sys

    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
