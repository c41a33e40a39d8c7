"""One trial, end to end: the rewind point and its mask, the fit, the masks and metrics it leaves.

:func:`run_trial` is the only trial function in lxsweep: ``lxsweep trial``
and a Ray Train worker both call it; they differ only in the
:class:`~lxsweep.hooks.TrialHook` objects they pass (progress bar, tracker,
Ray report and checkpoint, fault injection; see lxsweep/hooks.py and
lxsweep/sweep.py). It imports no Ray: distributed training is plain
``torch.distributed`` (DDP), initialised by whoever launched the workers.

Where a trial's mask and starting weights come from, and which masks it
leaves, is :mod:`lxsweep.masks`; the loop itself is :class:`lxsweep.train.Fit`.
"""
from __future__ import annotations

import hashlib
import os
import platform
import resource
import socket
import time
import uuid
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist

from lxsweep import masks, pruning, subnetworks
from lxsweep import model as lxmodel
from lxsweep.config import Experiment, read_experiment
from lxsweep.data.source import load_dataset
from lxsweep.facts import check_compatible, resolved_facts
from lxsweep.hooks import StepClock, TrialHook, TrialStart
from lxsweep.plan import TrialKey, dense_key, keeps_weights, parent, validate_key
from lxsweep.pretrain import rewind_point
from lxsweep.store import (EXPERIMENT_FILE, HEARTBEAT_SECONDS, Store, attempt_path, failed_path, metrics_path,
                           read_metrics, sparsity_path, weights_path)
from lxsweep.train import Fit, Runtime, runtime


def run_trial(
    exp: Experiment,
    key: TrialKey,
    store: Optional[Store] = None,
    *,
    hooks: Sequence[TrialHook] = (),
    resume_state: Optional[dict] = None,
    log: Callable[[str], None] = print,
    timeline: Optional[dict] = None,
) -> dict:
    """Run one trial end to end and return its final metrics (also written to the store).

    1. build the model at the rewind point (seeded answer head), then its mask and starting weights;
    2. fine-tune with the mask enforced, evaluating every epoch (``hooks`` see every step and epoch);
    3. rank 0 writes the child masks of its chain and ``metrics.json`` (the done marker).

    ``timeline``: wall-clock marks taken before the call (the Ray worker's start and imports); the trial
    adds its own (``data_opened_at``, ``model_loaded_at``, ``fit_ready_at``) and records them all in
    ``metrics.json`` under ``timeline`` (bench/trial_overhead.py splits a trial's fixed cost with them).
    """
    timeline = {**(timeline or {}), "trial_started_at": time.time(), "rss_start_mb": _rss_mb()}
    validate_key(exp, key)
    store = store or Store.for_experiment(exp)
    rt = runtime(exp)
    facts = resolved_facts(rt)  # what `precision: auto` etc. became here; never mix them in one store
    check_compatible(store, facts, exp.resources.allow_mixed, record=rt.is_main, trial=key.name, warn=log)
    started = time.time()
    beat = Heartbeat(store, attempt_path(key.name, started, uuid.uuid4().hex[:6]), {
        "trial": key.name, "started_at": started, "resumed": resume_state is not None,
        "host": socket.gethostname(), "pid": os.getpid(),
    }) if rt.is_main else None
    ok = False
    try:
        data = load_dataset(exp, store)
        timeline.update(data_opened_at=time.time(), rss_data_mb=_rss_mb())
        model, tokenizer, mask = initial_model(exp, key, store, data.num_answers, log, answers=data.answers)
        timeline.update(model_loaded_at=time.time(), rss_model_mb=_rss_mb())
        torch.manual_seed(key.seed_for("dropout"))
        fit = Fit(exp, rt, model, mask, data, tokenizer, epochs=exp.training.epochs, name=key.name,
                  shuffle_seed=lambda epoch: key.seed_for(f"data{epoch}"), **_recipe(exp, key, model))
        timeline["fit_ready_at"] = time.time()  # tokens, optimizer, DDP
        if resume_state is not None:
            fit.load_state(resume_state)
            log(f"{key.name}: resumed from epoch {fit.epoch}")
        hooks = [StepClock(), *masks.start_hooks(exp, key, store, fit.model, fit.total_steps, rt.is_main), *hooks]
        start = TrialStart(key, rt.rank, rt.world, fit.epochs, fit.steps_per_epoch, fit.epoch, fit.step,
                           resume_state is not None, fit.total_steps)
        for hook in hooks:
            hook.on_start(start)
        history = fit.run(log, hooks)
        test = fit.evaluate("test") if data.test is not None else None  # every rank: DDP gathers the shards
        digests = replica_digests(fit.model, rt)
        if not rt.is_main:
            ok = True
            return history[-1]
        timeline["process_cpu_s"] = round(time.process_time(), 3)  # this process's CPU so far, every thread
        timeline["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        metrics = {**_final_metrics(exp, key, store, fit, mask, history, started, digests, test), "facts": facts,
                   "timeline": timeline}
        for hook in hooks:
            hook.on_metrics(metrics)
        store.delete(failed_path(key.name))
        store.write_json(metrics_path(key.name), metrics)
        for hook in hooks:
            hook.on_end(metrics)
        ok = True
        return metrics
    finally:
        for hook in hooks:
            hook.on_close(ok)
        if beat is not None:
            beat.stop(ok)


def initial_model(exp: Experiment, key: TrialKey, store: Store, num_answers: int, log: Callable[[str], None] = print,
                  answers: Optional[Sequence[str]] = None):
    """(model, tokenizer, mask) at the start of a trial: the rewind point, its mask, its control's weights.

    The answer head starts seeded, or with ``model.answer_table`` from the
    checkpoint's QA head (``answers``, the label order, is then needed) — in
    every trial alike; a control that re-initialises (reinit, scratch) redraws it too.
    """
    model_dir = rewind_point(exp, store, log)
    tokenizer = lxmodel.load_tokenizer(exp.model.tokenizer or model_dir)
    table = lxmodel.read_answer_table(exp.model.answer_table) if exp.model.answer_table else None
    # The answer head's start is the rewind point's: the dense trial's seed (shared with rewind.dense_seed).
    model = lxmodel.load_model(model_dir, num_answers, seed=dense_key(key.seed, exp).seed_for("answer-head"),
                               answer_table=table, answers=answers, log=log)
    return model, tokenizer, masks.start(exp, key, store, model)


def _recipe(exp: Experiment, key: TrialKey, model: torch.nn.Module) -> dict:
    """Fit's length and lr for a control that trains only the answer head (``probe``), whose other weights it
    freezes here; {} (the fine-tune's recipe) for every other trial."""
    control = subnetworks.control(key.subnetwork)
    if control is None or control.trains != "head":
        return {}
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("answer_head."))
    return {"max_steps": exp.training.probe_steps, "lr": exp.training.probe_lr}


def check_trial_inputs(exp: Experiment, key: TrialKey, store: Store) -> None:
    """Refuse, before any training, a trial whose store inputs are there but unreadable.

    Reads what the trial and the chain prefix it may run first will read:
    the store's ``experiment.yaml``, the ``metrics.json`` of the trial, of
    its ancestors and of its seed's dense trial, and the mask it trains with.
    Raises :class:`~lxsweep.errors.CorruptStoreFile` naming the first bad
    file; absent files are fine (they are made on the way).
    """
    if store.exists(EXPERIMENT_FILE):
        read_experiment(store)
    chain, k = [key], parent(exp, key)
    while k is not None:
        chain.append(k)
        k = parent(exp, k)
    for k in dict.fromkeys([*reversed(chain), dense_key(key.seed, exp)]):
        if store.exists(metrics_path(k.name)):
            read_metrics(store, k.name)
    masks.check_trial_mask(exp, key, store)


# -- what a finished trial leaves --------------------------------------------------


def _final_metrics(exp: Experiment, key: TrialKey, store: Store, fit: Fit, mask: Optional[pruning.Mask],
                   history: list[dict], started: float, digests: list[str], test: Optional[dict] = None) -> dict:
    """Rank 0: write the kept weights, the child masks and the sparsity report; the trial's final metrics.

    The top-level ``accuracy*`` are the final weights' on the test split when the data has one
    (``evaluated_on: test``; the last validation epoch's are then under ``valid``), else the last epoch's.
    """
    rt = fit.rt
    weights = write_weights(exp, key, store, fit.model)
    children = masks.write_child_masks(exp, key, store, fit.model, mask)
    total_params = sum(p.numel() for p in fit.model.parameters())
    report_ = pruning.sparsity_report(mask, total_params) if mask else None
    if report_:
        store.write_json(sparsity_path(key.name), report_)
    final = history[-1]
    last_valid = {k: v for k, v in final.items() if k.startswith("accuracy")}
    return {
        "trial": key.name, "level": key.level, "subnetwork": key.subnetwork, "seed": key.seed,
        "target_sparsity": exp.sparsity(key.level),
        "sparsity": report_["sparsity"] if report_ else 0.0,
        "sparsity_all": report_["sparsity_all_parameters"] if report_ else 0.0,
        # Measured on the trained weights: below `sparsity` when the mask was not enforced (pruned weights regrew).
        **({"trained_sparsity": fit.measured_sparsity()} if mask else {}),
        **({k: v for k, v in test.items() if k.startswith("accuracy")} if test is not None else last_valid),
        "evaluated_on": "valid" if test is None else "test",
        "evaluated_questions": len(fit.data.valid if test is None else fit.data.test),
        **({"valid": last_valid} if test is not None else {}),
        "best_accuracy": max(h["accuracy"] for h in history),  # over the epochs' validation
        "train_loss": final["train_loss"], "epochs": len(history), "steps": fit.step,
        "history": history, "child_masks": children, "weights": weights,
        "started_at": started, "finished_at": time.time(), "duration_s": round(time.time() - started, 3),
        "experiment": exp.name, "hash": exp.hash, "world_size": rt.world, "replica_digests": digests,
        "device": str(rt.device), "host": socket.gethostname(), "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_weights(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> Optional[dict]:
    """Rank 0: store the trained weights in ``training.weights_dtype``; what ``metrics.json`` records of them.

    Floating tensors are cast (pruned entries are exactly zero in every
    dtype); ``zeros`` counts the exact zeros among the prunable weights of the
    stored file, ``sha256`` digests its tensors (:func:`tensors_digest`: not the
    file's bytes, whose header order safetensors does not fix).
    """
    if not keeps_weights(exp, key):
        return None
    from safetensors.torch import save

    dtype = getattr(torch, exp.training.weights_dtype)
    # `+ 0.0` turns the -0.0 that masking leaves into +0.0 (and changes nothing else), so the file's
    # bits are those any sparse form rebuilds: one zero, not two.
    state = {n: (t.detach().to("cpu", dtype) + 0.0 if t.is_floating_point() else t.detach().cpu()).contiguous()
             for n, t in model.state_dict().items()}
    prunable = pruning.prunable_names(state, exp.pruning.scope)
    data = save(state, metadata={"trial": key.name, "dtype": exp.training.weights_dtype})
    store.write_bytes(weights_path(key.name), data)
    return {"path": weights_path(key.name), "dtype": exp.training.weights_dtype, "bytes": len(data),
            "sha256": tensors_digest(state),
            "zeros": sum(int((state[n] == 0).sum()) for n in prunable)}


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex digits) of a state dict's names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{list(state[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def replica_digests(model: torch.nn.Module, rt: Runtime) -> list[str]:
    """A digest of every rank's final weights (DDP replicas must agree bit for bit).

    The values as float32 in name order: not :func:`tensors_digest`, because every stored ``metrics.json``
    (and the reproduction check that compares them) records digests made this way.
    """
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    mine = h.hexdigest()[:16]
    if rt.world == 1:
        return [mine]
    out: list = [None] * rt.world
    dist.all_gather_object(out, mine)
    return out


def _rss_mb() -> float:
    """This process's resident memory now (MB); pages of a memory-mapped file count once they are read."""
    try:
        return round(int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except OSError:  # not Linux
        return 0.0


class Heartbeat:
    """A trial attempt's file in the store, rewritten every ``every`` seconds while it runs.

    It says who runs it (host, pid), since when, and ``heartbeat_at``; at the
    end ``ended_at`` and ``ok``. ``lxsweep status`` calls an attempt whose
    beat is stale (``store.STALE_SECONDS``), or whose process is gone from
    this host, dead rather than running. A beat that fails (a store outage)
    is skipped: the next one writes again.
    """

    def __init__(self, store: Store, rel: str, record: dict, every: float = HEARTBEAT_SECONDS):
        import threading

        self.store, self.rel, self.record, self.every = store, rel, dict(record), every
        self.record["heartbeat_at"] = time.time()
        store.write_json(rel, self.record)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lxsweep-heartbeat-{record['trial']}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.write_json(self.rel, {**self.record, "heartbeat_at": time.time()})
            except Exception:  # noqa: BLE001 — a missed beat must never end the trial; the next one retries
                pass

    def stop(self, ok: bool) -> None:
        self._stop.set()
        self._thread.join()
        now = time.time()
        try:
            self.store.write_json(self.rel, {**self.record, "heartbeat_at": now, "ended_at": now, "ok": ok})
        except Exception:  # noqa: BLE001 — never hide the trial's own error; a stale beat reads as dead anyway
            pass
