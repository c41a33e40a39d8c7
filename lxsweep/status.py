"""Sweep status from the store alone: counts, best ticket, elapsed and remaining time.

``lxsweep status`` prints it for any store; during ``launch`` a Tune callback
(``lxsweep.sweep.StatusCallback``) refreshes the same lines on the console
every few seconds instead of Ray's raw log stream (Ray's logs still go to
files under the session directory).
"""
from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from lxsweep.config import read_experiment
from lxsweep.plan import Plan, TrialKey
from lxsweep.store import (SEARCH_FILE, STALE_SECONDS, TRIALS_DIR, CorruptStoreFile, Store, attempt_started,
                           attempts_dir, failed_path, metrics_path, read_metrics)
from lxsweep import subnetworks
from lxsweep.subnetworks import DENSE

TOLERANCE_POINTS = 3.0


@dataclass
class Snapshot:
    done: dict[TrialKey, dict] = field(default_factory=dict)
    running: list[TrialKey] = field(default_factory=list)
    waiting: list[TrialKey] = field(default_factory=list)
    failed: list[TrialKey] = field(default_factory=list)
    skipped: list[TrialKey] = field(default_factory=list)
    dead: dict[TrialKey, str] = field(default_factory=dict)  # its last attempt stopped without finishing: why
    unreadable: dict[TrialKey, CorruptStoreFile] = field(default_factory=dict)  # a corrupt metrics.json, skipped
    started_at: Optional[float] = None


def plan_of(store: Store) -> Plan:
    return Plan(read_experiment(store))


def _pid_gone(host: Optional[str], pid: Optional[int]) -> bool:
    """Whether process ``pid`` of ``host`` is known to be gone (only this host's processes can be asked)."""
    if host != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def attempt_state(attempt: dict, now: float) -> Optional[str]:
    """None while an attempt runs; else why it is dead (ended with an error, stale heartbeat, process gone)."""
    where = f"{attempt.get('host', '?')} pid {attempt.get('pid', '?')}"
    if "ended_at" in attempt:
        return None if attempt.get("ok") else f"ended with an error on {where}"
    beat = attempt.get("heartbeat_at", attempt.get("started_at", now))
    if _pid_gone(attempt.get("host"), attempt.get("pid")):
        return f"its process {where} is gone"
    if now - beat > STALE_SECONDS:
        return f"no heartbeat for {_fmt(now - beat)} from {where}"
    return None


def _last_attempt(store: Store, key: TrialKey, names: list[str], warn: Callable[[str], None]) -> Optional[dict]:
    for name in sorted(names, key=attempt_started, reverse=True):
        try:
            attempt = store.read_json(f"{attempts_dir(key.name)}/{name}")
        except CorruptStoreFile as exc:
            warn(f"lxsweep: warning: skipped {exc}")
            continue
        if isinstance(attempt, dict):
            return attempt
    return None


def snapshot(store: Store, plan: Plan, now: Optional[float] = None,
             warn: Callable[[str], None] = lambda line: None) -> Snapshot:
    """Classify every planned trial from the files in the store; ``warn`` hears of each unreadable file skipped."""
    snap = Snapshot()
    now = now or time.time()
    present = set(store.listdir(TRIALS_DIR))
    starts = []
    failed: set[TrialKey] = set()
    for key in plan.trials:
        if key.name not in present:
            continue
        if store.exists(metrics_path(key.name)):
            try:
                snap.done[key] = read_metrics(store, key.name)
                starts.append(snap.done[key]["started_at"])
            except CorruptStoreFile as exc:
                snap.unreadable[key] = exc
                warn(f"lxsweep: warning: skipped {exc}")
        elif store.exists(failed_path(key.name)):
            failed.add(key)
        elif names := store.listdir(attempts_dir(key.name)):
            starts.append(min(attempt_started(n) for n in names))
            last = _last_attempt(store, key, names, warn)
            why = attempt_state(last, now) if last is not None else None
            if why is None:
                snap.running.append(key)
            else:
                snap.dead[key] = why
    skipped = {d for k in failed for d in plan.descendants(k) if d not in snap.done}
    snap.failed = sorted(failed, key=plan.priority)
    snap.skipped = sorted(skipped, key=plan.priority)
    settled = set(snap.done) | failed | skipped | set(snap.running) | set(snap.dead) | set(snap.unreadable)
    snap.waiting = [k for k in plan.trials if k not in settled]
    snap.started_at = min(starts) if starts else None
    return snap


def best_ticket(done: dict[TrialKey, dict], dense_seed: Callable[[int], int] = lambda seed: seed) -> Optional[dict]:
    """The sparsest lottery ticket (low-magnitude trial) within 3 points of its dense trial's accuracy.

    ``dense_seed(seed)``: the seed of the dense trial a seed's chain starts from (``Experiment.dense_seed``).
    """
    dense = {k.seed: m["accuracy"] for k, m in done.items() if k.subnetwork == DENSE}
    ok = [m for k, m in done.items() if k.subnetwork == subnetworks.ticket() and dense_seed(k.seed) in dense
          and m["accuracy"] * 100 >= dense[dense_seed(k.seed)] * 100 - TOLERANCE_POINTS]
    return max(ok, key=lambda m: (m["sparsity"], m["accuracy"]), default=None)


def remaining_seconds(plan: Plan, snap: Snapshot, slots: int, among: Optional[set[TrialKey]] = None) -> Optional[float]:
    """Mean trial time × max(remaining critical path, remaining trials / slots); ``among``: only these trials
    (a frontier search's chosen ones; their chain below them is chosen with them)."""
    if not snap.done:
        return None
    mean = statistics.fmean(m["duration_s"] for m in snap.done.values())
    left = [k for k in plan.trials if k not in snap.done and k not in snap.skipped and k not in snap.failed
            and (among is None or k in among)]
    if not left:
        return 0.0
    path = 1 if among is not None else max(plan.height[k] for k in left)
    return mean * max(path, len(left) / max(1, slots))


def _frontier_lines(store: Store, plan: Plan, snap: Snapshot, warn: Callable[[str], None]) -> Optional[tuple[set[str], list[str]]]:
    """A frontier search's chosen trials (search.json) and one line per answer so far; None for a grid."""
    from lxsweep.frontier import choose, describe

    exp = plan.exp
    if exp.search.mode != "frontier":
        return None
    try:
        recorded = store.read_json(SEARCH_FILE) if store.exists(SEARCH_FILE) else {}
        chosen = {c["trial"] for c in recorded.get("chosen", [])}
    except (CorruptStoreFile, AttributeError, KeyError, TypeError) as exc:
        warn(f"lxsweep: warning: skipped {store.path(SEARCH_FILE)}: unreadable ({exc}); the next launch rewrites it")
        chosen = set()
    _, answers = choose(exp, snap.done.values())
    return chosen, [describe(exp, a, exp.sparsity) for a in answers]


def status_lines(store: Store, plan: Plan, slots: Optional[int] = None, now: Optional[float] = None,
                 warn: Callable[[str], None] = lambda line: None) -> list[str]:
    now = now or time.time()
    snap = snapshot(store, plan, now, warn)
    n = len(plan.trials)
    frontier = _frontier_lines(store, plan, snap, warn)
    chosen, answers = frontier if frontier is not None else (None, [])
    if chosen is not None:  # a frontier search waits only for what it has chosen; more may be chosen later
        snap.waiting = [k for k in snap.waiting if k.name in chosen]
    dead = f"{len(snap.dead)} dead, " if snap.dead else ""
    unreadable = f", {len(snap.unreadable)} unreadable" if snap.unreadable else ""
    done = (f"{len(snap.done)}/{n} done" if chosen is None
            else f"frontier search: {sum(k.name in chosen for k in snap.done)} done of {len(chosen)} chosen so far "
                 f"(the grid has {n})")
    lines = [f"{plan.exp.name} ({plan.exp.hash}): {done}, {len(snap.running)} running, {dead}"
             f"{len(snap.waiting)} waiting, {len(snap.failed)} failed, {len(snap.skipped)} skipped{unreadable}"]
    if snap.started_at:
        among = None if chosen is None else {k for k in plan.trials if k.name in chosen}
        left = remaining_seconds(plan, snap, slots or max(1, len(snap.running)), among)
        eta = (f", about {_fmt(left)} left" + ("" if chosen is None else " for those chosen")
               if left is not None and (snap.running or snap.waiting) else "")
        lines.append(f"elapsed {_fmt(now - snap.started_at)}{eta}")
    lines += answers
    ticket = best_ticket(snap.done, plan.exp.dense_seed)
    if ticket:
        lines.append(f"best ticket: {ticket['trial']} at {100 * ticket['sparsity']:.1f}% sparsity, "
                     f"accuracy {100 * ticket['accuracy']:.2f}")
    if snap.running:
        lines.append("running: " + ", ".join(k.name for k in snap.running))
    for key, why in snap.dead.items():
        lines.append(f"dead: {key.name} ({why}; a re-launch resumes it)")
    if snap.failed:
        lines.append("failed: " + ", ".join(k.name for k in snap.failed))
    return lines


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def print_status(store: Store) -> int:
    for line in status_lines(store, plan_of(store), warn=lambda line: print(line, file=sys.stderr, flush=True)):
        print(line)
    return 0


def summary_lines(store: Store, plan: Plan) -> list[str]:
    """The end-of-launch results table: one line per finished trial."""
    snap = snapshot(store, plan)
    lines = [f"store: {store.root}", f"{'trial':<16} {'sparsity':>9} {'accuracy':>9}"]
    for key in sorted(snap.done, key=lambda k: (k.seed, k.level, k.subnetwork)):
        m = snap.done[key]
        lines.append(f"{key.name:<16} {100 * m['sparsity']:8.1f}% {100 * m['accuracy']:9.2f}")
    return lines
