"""Tracker backends by name: how to open one trial's tracker and one sweep's tracker.

The built-in backends register themselves when their module is first imported;
importing lazily keeps ``import wandb`` (seconds) out of every process that
tracks with something else. Anyone can add a backend with
:func:`register_tracker` from their own module (a test, a plugin) without
editing lxsweep. This module imports nothing of lxsweep; ``lxsweep.preflight``
asks it which names are valid before a command tracks anything.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

# name -> module whose import registers it
BUILTIN = {"none": "lxsweep.tracking.base", "wandb": "lxsweep.tracking.wandb",
           "tensorboard": "lxsweep.tracking.tensorboard"}


@dataclass(frozen=True)
class Backend:
    """``trial(exp, key, store, run_id)`` -> a TrialTracker; ``sweep(exp, store)`` -> a SweepTracker, or None
    (the sweep then has the base :class:`~lxsweep.tracking.base.SweepTracker`, which records nothing)."""

    trial: Callable[..., Any]
    sweep: Optional[Callable[..., Any]]


_BACKENDS: dict[str, Backend] = {}


def register_tracker(name: str, trial: Callable[..., Any], sweep: Optional[Callable[..., Any]] = None) -> None:
    """Make ``tracking.backend: <name>`` open ``trial(exp, key, store, run_id)`` per trial.

    ``sweep(exp, store)`` opens the sweep's summary tracker; without it the
    sweep has none (the base :class:`~lxsweep.tracking.base.SweepTracker`).
    """
    _BACKENDS[name] = Backend(trial=trial, sweep=sweep)


def tracker_names() -> list[str]:
    """Every backend name ``tracking.backend`` accepts."""
    return sorted(set(BUILTIN) | set(_BACKENDS))


def backend(name: str) -> Backend:
    """The registered backend ``name`` (importing a built-in one on first use)."""
    if name not in _BACKENDS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _BACKENDS:
        raise KeyError(f"unknown tracking backend {name!r} — use one of {', '.join(tracker_names())}")
    return _BACKENDS[name]
