"""Reproduce a finished trial and say whether it matched.

``lxsweep trial`` on a trial whose ``metrics.json`` is already in the store
runs it again into ``reproductions/<trial>/<stamp>/`` (an
:class:`~lxsweep.store.OverlayStore`: it reads the sweep's masks, rewind point
and data, and writes only there), then compares the two ``metrics.json``:
every result (accuracies, per-epoch history, sparsity, child masks, the
weight digests ``replica_digests`` and the kept weights' ``sha256``) must be
identical. Times and the machine it ran on are not results: they are left out,
and a different environment (host, Python, torch, device) is shown beside the
verdict.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lxsweep.config import Experiment
from lxsweep.plan import TrialKey
from lxsweep.store import OverlayStore, Store, read_metrics, reproduction_dir
from lxsweep.hooks import TrialHook
from lxsweep.trial import run_trial

# When and how long: never equal between two runs.
VOLATILE = ("started_at", "finished_at", "duration_s", "first_step_at", "last_step_at", "epoch_seconds", "timeline")
# Where it ran: shown when different, not a mismatch by itself.
ENVIRONMENT = ("host", "python", "torch", "device", "facts")


@dataclass
class Reproduction:
    """A finished trial run again, and how its metrics compare with the sweep's."""

    store: Store  # the reproduction area (reads fall through to the sweep's store)
    recorded: dict
    reproduced: dict
    differences: list[str] = field(default_factory=list)  # results that differ: a mismatch
    environment: list[str] = field(default_factory=list)  # where the two runs ran differently

    @property
    def matched(self) -> bool:
        return not self.differences


def reproduction_store(store: Store, trial: str) -> OverlayStore:
    """A new reproduction area of ``trial`` in ``store``, named by the start time."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    return OverlayStore(store.path(reproduction_dir(trial, stamp)), store)


def _diff(path: str, recorded: Any, reproduced: Any, out: list[str]) -> None:
    if isinstance(recorded, dict) and isinstance(reproduced, dict):
        for k in sorted(set(recorded) | set(reproduced), key=str):
            if k in VOLATILE:
                continue
            sub = f"{path}.{k}" if path else str(k)
            if k not in reproduced:
                out.append(f"{sub}: recorded {recorded[k]!r}, missing in the reproduction")
            elif k not in recorded:
                continue  # a key this lxsweep version adds: the sweep could not record it
            else:
                _diff(sub, recorded[k], reproduced[k], out)
    elif isinstance(recorded, list) and isinstance(reproduced, list) and len(recorded) == len(reproduced):
        for i, (a, b) in enumerate(zip(recorded, reproduced)):
            _diff(f"{path}[{i}]", a, b, out)
    elif recorded != reproduced:
        out.append(f"{path}: recorded {recorded!r}, reproduced {reproduced!r}")


def compare_metrics(recorded: dict, reproduced: dict) -> tuple[list[str], list[str]]:
    """(result differences, environment differences) between two ``metrics.json`` of one trial."""
    results, env = [], []
    _diff("", {k: v for k, v in recorded.items() if k not in ENVIRONMENT},
          {k: v for k, v in reproduced.items() if k not in ENVIRONMENT}, results)
    _diff("", {k: recorded.get(k) for k in ENVIRONMENT}, {k: reproduced.get(k) for k in ENVIRONMENT}, env)
    return results, env


def reproduce_trial(exp: Experiment, key: TrialKey, store: Store, area: Store, *,
                    hooks: Sequence[TrialHook] = (), log: Callable[[str], None] = print) -> Reproduction:
    """Run finished trial ``key`` of ``store`` into ``area`` (see :func:`reproduction_store`) and compare."""
    recorded = read_metrics(store, key.name)
    reproduced = run_trial(exp, key, area, hooks=hooks, log=log)
    results, env = compare_metrics(recorded, reproduced)
    return Reproduction(area, recorded, reproduced, results, env)
