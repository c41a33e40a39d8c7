"""What a trial's settings resolved to on the machine that ran it, and whether a store may mix them.

The experiment says ``precision: auto``; the machine decides: bf16 autocast on
a GPU, fp32 on a CPU. The hash cannot know which, so each trial records its
resolved facts (device, dtype, world size, threads, package versions, the
lxsweep commit) and the store records the first trial's in ``facts.json``. A
later trial whose resolved precision or device type differs would silently
mix incomparable results into one sweep, so it is refused unless
``resources.allow_mixed`` is set (then it runs with a loud warning).
"""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from lxsweep.config import ConfigError
from lxsweep.store import FACTS_FILE, Store

# The facts that change a result: trials that differ in one of these must not share a store.
MUST_MATCH = ("precision", "device_type")
PACKAGES = ("torch", "transformers", "ray", "lxsweep")


class MixedTrialsError(ConfigError):
    """A trial would mix resolved precision or device type into a store that holds others."""


def resolved_facts(runtime: Any) -> dict:
    """The facts of this process's trial; ``runtime`` is a :class:`lxsweep.train.Runtime`."""
    device = runtime.device
    dtype = runtime.autocast_dtype
    return {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "precision": "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16 else "fp32",
        "autocast_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "world_size": runtime.world,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
        # the build, not the distribution's number: 2.14.1+cu130 and 2.13.0+cpu compute differently
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "commit": _git_commit(),
    }


def check_compatible(store: Store, facts: dict, allow_mixed: bool = False, record: bool = True,
                     trial: str = "this trial", warn: Callable[[str], None] = print) -> None:
    """Refuse (or, with ``allow_mixed``, warn about) a trial whose resolved facts differ from the store's.

    The first trial to run records its facts as the store's (when ``record``);
    raises :class:`MixedTrialsError` with a one-line message otherwise.
    """
    if not store.exists(FACTS_FILE):
        if record:
            store.write_json(FACTS_FILE, {**{k: facts[k] for k in MUST_MATCH}, "device_name": facts["device_name"],
                                          "first_trial": trial})
        return
    first = store.read_json(FACTS_FILE)
    differ = [k for k in MUST_MATCH if first.get(k) != facts[k]]
    if not differ:
        return
    what = ", ".join(f"{k} {facts[k]} (the store's trials: {first.get(k)})" for k in differ)
    if not allow_mixed:
        raise MixedTrialsError(
            f"{trial} resolves to {what} in {store.path(FACTS_FILE)}; mixing would compare incomparable results — "
            f"run it where the other trials ran, set training.precision explicitly in a new store, "
            f"or --set resources.allow_mixed=true to mix anyway")
    warn(f"lxsweep: WARNING: {trial} resolves to {what}; mixing them in {store.root} because resources.allow_mixed "
         f"is set — its results are not comparable with the others'")


def _version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> Optional[str]:
    """The lxsweep checkout's commit (``+dirty`` with uncommitted changes); None unless lxsweep runs from one."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        top, commit = head.stdout.split()
        if Path(top).resolve() != here.parent:  # lxsweep installed inside some other repository
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return commit + ("+dirty" if dirty else "")
