"""The errors lxsweep raises for people: one line naming what is wrong and what to do.

A leaf module (it imports nothing of lxsweep), so every layer can raise them
without importing the layer that defines the thing it complains about.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad experiment file or override; the message names file, key and problem."""


class StoreError(ConfigError):
    """The store cannot be read or written (an outage that outlasted the retries); one line naming the path."""


class CorruptStoreFile(StoreError):
    """A store file that is there but unreadable as what it should be; the message names it and what to do."""

    TRIAL_FIX = "it is left untouched; move it aside (or delete it) to run that trial again, or restore it from a copy"

    def __init__(self, path: str, why: str, fix: str = TRIAL_FIX):
        self.path, self.why = path, why
        super().__init__(f"{path}: {why} — {fix}")
