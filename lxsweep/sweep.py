"""The sweep: the plan's DAG on Ray Tune, every trial a Ray Train job.

This is the only module that imports ``ray.tune``. The searcher releases a
trial when its parent is done (longest remaining path first); each Tune trial
is a small driver function that runs a ``TorchTrainer`` of
:func:`lxsweep.trial.run_trial` (Ray Train V2 runs inside Tune function
trials). Completion is durable in the store (``metrics.json`` per trial), so
any re-launch continues where the last one stopped; an interrupted trial's
Train run has a deterministic name and resumes from its last checkpoint.
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ray.tune import Callback

from lxsweep.config import ConfigError, Experiment, from_record, write_experiment
from lxsweep.errors import CorruptStoreFile
from lxsweep.hooks import TrialHook, numbers
from lxsweep.plan import Plan, TrialKey
from lxsweep.status import status_lines
from lxsweep.store import (RAY_DIR, SEARCH_FILE, Store, driver_path, failed_path, finished_trials, metrics_path,
                           node_path, refuse_unreadable)

DRIVER_RESOURCE = "driver_slot"
STATUS_SECONDS = 10.0


# -- the Ray Train worker -----------------------------------------------------


def _experiment_from(config: dict) -> Experiment:
    """The driver's experiment, with its hash as recorded (a worker never re-derives the store's name)."""
    return from_record(config["experiment"], config.get("source", "<sweep>"))


def train_worker(config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: :func:`run_trial` with the sweep's hooks.

    The hooks (in order): the tracker run, the Ray report with a checkpoint
    every epoch, and fault injection when ``LXSWEEP_FAULT`` asks for it.
    """
    timeline = {"worker_started_at": time.time()}
    import ray
    import ray.train
    import torch

    from lxsweep.hooks import FaultInjection, Tracking
    from lxsweep.trial import run_trial

    timeline["imports_done_at"] = time.time()
    exp = _experiment_from(config)
    key = TrialKey.parse(config["trial"])
    store = Store(config["store"])
    rank = ray.train.get_context().get_world_rank()

    resume_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume_state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)
    if rank == 0:  # where each attempt ran: shows placement across nodes
        store.write_json(node_path(key.name), {"node_id": ray.get_runtime_context().get_node_id()})

    def log(line: str) -> None:
        print(f"[lxsweep] {line}", flush=True)

    hooks = [Tracking(exp, key, store), RayReport(rank), *FaultInjection.from_env()]
    run_trial(exp, key, store, hooks=hooks, resume_state=resume_state, log=log, timeline=timeline)


class RayReport(TrialHook):
    """Every epoch: ``ray.train.report`` of the numeric metrics, with a checkpoint from rank 0.

    A restarted worker group resumes from the last reported checkpoint
    (model, optimizer, scheduler, step, RNG).
    """

    def __init__(self, rank: int):
        self.rank = rank

    def on_epoch(self, metrics: dict, state: Callable[[], dict]) -> None:
        import ray.train
        import torch

        flat = numbers(metrics)
        if self.rank != 0:
            ray.train.report(flat)
            return
        with tempfile.TemporaryDirectory(prefix="lxsweep-ckpt-") as tmp:
            torch.save(state(), Path(tmp) / "state.pt")
            ray.train.report(flat, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def trial_driver(config: dict) -> None:
    """A Tune function trial: one ``TorchTrainer`` run of one trial key."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    started = time.time()
    exp = _experiment_from(config)
    r = exp.resources
    store = Store(config["store"])
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=r.workers_per_trial,
            use_gpu=r.gpus_per_worker > 0,
            resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.gpus_per_worker > 0 else {})},
        ),
        run_config=RunConfig(
            name=f"train-{config['trial']}",  # deterministic: a re-run resumes from this run's checkpoint
            storage_path=store.path(RAY_DIR),
            failure_config=FailureConfig(max_failures=r.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()
    if not store.exists(metrics_path(config["trial"])):
        raise RuntimeError(f"trial {config['trial']} ended without writing {metrics_path(config['trial'])}")
    if not exp.training.keep_checkpoints:  # finished: its resume state is dead weight (training.keep_checkpoints)
        run = f"{RAY_DIR}/train-{config['trial']}"
        for name in store.listdir(run):
            if name.startswith("checkpoint_") and store.is_dir(f"{run}/{name}"):  # not the manager's snapshot file
                store.delete_tree(f"{run}/{name}")
    # Ray's share of the trial's wall time (bench/ray_overhead.py reads it).
    store.write_json(driver_path(config["trial"]), {"started_at": started, "finished_at": time.time()})


# -- the searcher -------------------------------------------------------------


def _make_searcher(plan: Plan, store: Store, base_config: dict):
    from ray.tune.search import Searcher

    class DagSearcher(Searcher):
        """Releases a trial once its parent is done, highest remaining path first.

        Returns ``None`` while nothing is ready but trials run, and
        ``Searcher.FINISHED`` when nothing is ready and nothing runs (a None
        then would make Tune wait forever).
        """

        def __init__(self):
            super().__init__()
            finished = finished_trials(store)
            self.done: set[TrialKey] = {k for k in plan.trials if k.name in finished}
            self.already_done = set(self.done)
            self.running: dict[str, TrialKey] = {}
            self.failed: dict[TrialKey, str] = {}
            self.skipped: set[TrialKey] = set()
            # search.mode frontier: only the trials lxsweep/frontier.py has chosen from the results so far.
            self.chosen: Optional[set[TrialKey]] = None
            if plan.exp.search.mode == "frontier":
                self._choose()

        def _choose(self) -> None:
            from lxsweep.frontier import choose, record
            from lxsweep.report import load_rows

            grid = set(plan.trials)
            want, answers = choose(plan.exp, load_rows(store))
            want = {k: why for k, why in want.items() if k in grid}
            previous = store.read_json(SEARCH_FILE) if store.exists(SEARCH_FILE) else None
            if self.chosen is None or set(want) - self.chosen:
                store.write_json(SEARCH_FILE, record(previous, plan.exp, want, answers, len(grid), time.time()))
            self.chosen = (self.chosen or set()) | set(want)

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def suggest(self, trial_id: str) -> Any:
            blocked = self.done | set(self.running.values()) | set(self.failed) | self.skipped
            ready = [k for k in plan.ready(self.done, blocked) if self.chosen is None or k in self.chosen]
            if not ready:
                return None if self.running else Searcher.FINISHED
            key = ready[0]
            self.running[trial_id] = key
            return {**base_config, "trial": key.name}

        def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
            key = self.running.pop(trial_id, None)
            if key is None:
                return
            if not error and store.exists(metrics_path(key.name)):
                self.done.add(key)
                if self.chosen is not None:
                    self._choose()
                return
            self.failed[key] = "error" if error else "no metrics.json"
            # Now, not when the launch ends: `lxsweep status` on the running sweep shows it (and its skipped descendants).
            store.write_json(failed_path(key.name), {"trial": key.name, "error": self.failed[key], "at": time.time()})
            for d in plan.descendants(key):
                if d not in self.done:
                    self.skipped.add(d)

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as f:
                pickle.dump({"done": self.done, "failed": self.failed, "skipped": self.skipped}, f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                state = pickle.load(f)
            # The store is the source of truth for completion; the pickle adds failures.
            self.done |= state["done"]
            self.failed.update(state["failed"])
            self.skipped |= state["skipped"]

    return DagSearcher()


# -- the console --------------------------------------------------------------

class StatusCallback(Callback):
    """Prints the status lines every ``every`` seconds and when a trial ends; updates the W&B summary run."""

    def __init__(self, store: Store, plan: Plan, searcher, progress: bool = True, every: float = 10.0):
        self.store, self.plan, self.searcher, self.progress, self.every = store, plan, searcher, progress, every
        self.last = 0.0
        self.tracker = None
        self.slots = 1

    def setup(self, **info):
        from lxsweep.tracking import open_sweep_tracker

        self.tracker = open_sweep_tracker(self.plan.exp, self.store)

    def _show(self, force: bool = False) -> None:
        if not force and time.time() - self.last < self.every:
            return
        self.last = time.time()
        self.slots = max(self.slots, len(self.searcher.running))
        lines = status_lines(self.store, self.plan, self.slots)
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] " + "\n           ".join(lines), file=sys.stdout, flush=True)

    def on_step_begin(self, iteration, trials, **info):
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.progress:
            t = trial.config.get("trial", trial.trial_id)
            if "accuracy" in result and "epoch" in result:
                print(f"           {t} epoch {int(result['epoch'])}: accuracy {100 * result['accuracy']:.2f}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update_summary()
        self._show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(force=True)

    def _update_summary(self) -> None:
        if self.tracker is None:
            return
        from lxsweep.report import load_rows

        self.tracker.update(load_rows(self.store))

    def final(self) -> list[str]:
        """Write the report, log it to the summary run, close the run; returns the report paths."""
        from lxsweep.report import load_rows, write_report

        paths = write_report(self.store)
        if self.tracker is not None:
            fig = next((p for p in paths if p.endswith(".png")), None)
            self.tracker.update(load_rows(self.store), figure=fig if fig and not self.store.uri else None)
            self.tracker.close()
        return paths


# -- launching ----------------------------------------------------------------


def plugin_modules(exp: Experiment) -> list:
    """The experiment's plugin modules as Ray ships them to every worker (``runtime_env.py_modules``).

    The top-level module or package of each plugin (already imported by the
    driver when it built the experiment), so workers import them whether or
    not they are installed on the cluster's nodes.
    """
    tops = dict.fromkeys(name.split(".")[0] for name in exp.plugins)
    return [sys.modules[t] for t in tops if t != "lxsweep"]


def _connect(address: Optional[str], exp: Experiment) -> None:
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    env: dict = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")}}
    shipped = plugin_modules(exp)
    if shipped:
        env["py_modules"] = shipped
    if address:
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=env)
        except ConnectionError as exc:  # the port answered, but not as a Ray head (or its GCS went away)
            raise ConfigError(f"--address {address[:200]}: not a Ray head that answers ({str(exc)[:200]}) — check "
                              f"the port (`ray start --head` prints it; cluster.yaml's head uses 6379) and that the "
                              f"head is up (`ray status` on it)") from None
        if ray.cluster_resources().get(DRIVER_RESOURCE, 0) < 1:
            ray.shutdown()
            raise RuntimeError(
                f"the Ray cluster at {address} declares no '{DRIVER_RESOURCE}' resource, so no trial could start; "
                f"start its nodes with --resources='{{\"{DRIVER_RESOURCE}\": 8}}' (cluster.yaml does)"
            )
    else:
        # One machine has no node to lose: Train's preemption watcher (one more actor process per trial, polling)
        # only costs CPU the trials need. A cluster keeps it (spot nodes are preempted).
        env["env_vars"].setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
                                   os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"))
        ray.init(address="local", resources={DRIVER_RESOURCE: 64}, log_to_driver=False, include_dashboard=False, runtime_env=env)


def _concurrency(exp: Experiment) -> Optional[int]:
    """Trials at once: the experiment's limit, else as many worker groups as the cluster fits now.

    An autoscaling cluster may have no GPU node yet: then every ready trial is
    released (None = no limit), its resource demand makes the autoscaler add
    nodes, and the searcher's priority order still decides who starts first.
    """
    import ray

    r = exp.resources
    if r.max_concurrent_trials:
        return r.max_concurrent_trials
    res = ray.cluster_resources()
    fits = []
    if r.gpus_per_worker > 0:
        fits.append(res.get("GPU", 0) / (r.gpus_per_worker * r.workers_per_trial))
    if r.cpus_per_worker > 0:
        fits.append(res.get("CPU", 0) / (r.cpus_per_worker * r.workers_per_trial))
    slots = int(min(fits)) if fits else 1
    if slots < 1:
        print("lxsweep: the cluster cannot hold one trial yet; releasing ready trials for the autoscaler "
              "(set resources.max_concurrent_trials to cap concurrency)")
        return None
    return slots


def launch(exp: Experiment, address: Optional[str] = None, resume: bool = False, progress: bool = True) -> int:
    """Run every trial of ``exp`` not yet in its store; returns the process exit code."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    from lxsweep.status import summary_lines
    from lxsweep.pretrain import rewind_point

    store = Store.for_experiment(exp)
    plan = Plan(exp)
    refuse_unreadable(store)  # a corrupt metrics.json is neither done nor to be overwritten: the user decides
    if exp.search.mode == "frontier" and store.exists(SEARCH_FILE):
        try:
            store.read_json(SEARCH_FILE)
        except CorruptStoreFile as exc:  # the record of why each trial was chosen: not overwritten unasked
            raise ConfigError(f"{exc.path}: {exc.why} — it is left untouched; move it aside and re-launch: the "
                              f"choices are re-derived from the trials' results (only when each was made is lost)") from None
    write_experiment(store, exp)
    grid = (f"{plan.fine_tunes} trials" if exp.search.mode == "grid" else
            f"frontier search over the grid's {plan.fine_tunes} trials (its choices: {store.path(SEARCH_FILE)})")
    print(f"lxsweep: {exp.name} ({exp.hash}): {grid}, critical path {plan.critical_path}; store {store.root}")
    _connect(address, exp)
    try:
        rewind_point(exp, store, log=lambda s: print(f"lxsweep: {s}"))  # once, before trials race for it
        base = {"experiment": exp.record(), "source": exp.source, "store": store.root}
        searcher = _make_searcher(plan, store, base)
        if searcher.already_done:
            print(f"lxsweep: {len(searcher.already_done)} of {plan.fine_tunes} trials already in the store; "
                  f"{'resuming' if resume else 'continuing'}")
        status = StatusCallback(store, plan, searcher, progress=progress, every=STATUS_SECONDS)
        tuner = tune.Tuner(
            tune.with_resources(trial_driver, {"cpu": 0, DRIVER_RESOURCE: 1}),
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=-1, max_concurrent_trials=_concurrency(exp), reuse_actors=True,
                trial_name_creator=lambda t: t.config.get("trial", t.trial_id),
                trial_dirname_creator=lambda t: f"{t.config.get('trial', 'trial')}-{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=store.path(RAY_DIR),
                callbacks=[status], verbose=0,
            ),
        )
        tuner.fit()
        paths = status.final()
    finally:
        ray.shutdown()
    failed, skipped = searcher.failed, searcher.skipped  # failed.json was written as each one failed
    for line in summary_lines(store, plan):
        print(line)
    for p in paths:
        print(f"report: {p}")
    if failed or skipped:
        print(f"lxsweep: {len(failed)} trial(s) failed: {', '.join(k.name for k in sorted(failed))}", file=sys.stderr)
        if skipped:
            print(f"lxsweep: {len(skipped)} skipped because a parent failed: {', '.join(k.name for k in sorted(skipped))}", file=sys.stderr)
        print(f"lxsweep: fix the cause and re-launch: finished trials are kept in {store.root}", file=sys.stderr)
        return 1
    return 0
