"""Helpers shared by the benchmark scripts: interleaved timing, /proc memory, machine facts.

The scripts run on shared 2-core machines where other work comes and goes, so
every comparison is *interleaved*: each repetition runs every variant once
(in a rotating order), and overheads are medians of per-repetition ratios, so
background load hits all variants alike.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch


def interleaved(variants: Mapping[str, Callable[[], None]], reps: int, sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each variant, ``reps`` times, variants interleaved.

    Repetition ``r`` runs the variants starting at position ``r % len`` so no
    variant always follows the same neighbour. ``sync`` waits for queued
    device work (``torch.cuda.synchronize`` on a GPU).
    """
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            sync()
            start = time.perf_counter()
            variants[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: Mapping[str, Sequence[float]], name: str, base: str) -> float:
    """Median over repetitions of ``times[name][r] / times[base][r]``."""
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The memory lines of ``/proc/<pid>/status`` (VmRSS, VmHWM, RssAnon, RssFile, ...) in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current VmRSS (Linux ``clear_refs`` value 5)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def child_pids() -> list[int]:
    """Process ids of this process's children (e.g. DataLoader workers)."""
    pids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as handle:
                pids += [int(p) for p in handle.read().split()]
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return pids


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    from lxsweep.latency import cpu_model

    info = {"nproc": str(os.cpu_count()), "cpu": cpu_model(), "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_machine() -> None:
    """One line of machine facts, plus the load average: other work on the machine skews absolute numbers."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()) + f"; load average {load}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pastes straight into docs/PERFORMANCE.md)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def lxmert_base_prunable_shapes() -> dict[str, torch.Size]:
    """Name -> shape of every prunable weight of LXMERT-base (``LxmertConfig()`` defaults).

    Built on the meta device, so no memory is allocated and nothing is
    downloaded; the names are the real ``LxmertForQuestionAnswering`` ones.
    """
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    from lxsweep import pruning

    with torch.device("meta"):
        model = LxmertForQuestionAnswering(LxmertConfig())
    params = dict(model.named_parameters())
    return {name: params[name].shape for name in pruning.prunable_names(params)}
