"""Kill exactly the processes a test started — the launch and the local Ray it brought up — and nothing else.

``tagged_env`` marks an environment with a unique ``LXSWEEP_TEST_TAG``; every
process started with it inherits it (the driver, Ray's GCS, raylet, dashboard
agents and workers), so :func:`kill_tagged` finds them in ``/proc/<pid>/environ``
and SIGKILLs them one by one, leaving any other Ray on the machine alone
(``ray stop --force`` would kill every Ray of this user).
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

TAG = "LXSWEEP_TEST_TAG"


def tagged_env(env: dict) -> tuple[dict, str]:
    tag = uuid.uuid4().hex
    return {**env, TAG: tag}, tag


def tagged_pids(tag: str) -> list[int]:
    needle = f"{TAG}={tag}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:  # gone, or not ours
                continue
    return pids


def kill_tagged(tag: str, timeout: float = 30.0) -> int:
    """SIGKILL every process carrying ``tag`` until none is left; returns how many were killed."""
    killed: set[int] = set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = tagged_pids(tag)
        if not pids:
            return len(killed)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"processes tagged {tag} still alive after {timeout} s: {tagged_pids(tag)}")
