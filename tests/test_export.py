"""Kept weights, exported tickets, reproductions: what a user takes away from a finished sweep."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lxsweep import pruning
from lxsweep.config import load_experiment
from lxsweep.plan import TrialKey
from lxsweep.store import Store, mask_path, metrics_path, weights_path
from lxsweep.train import keeps_weights, run_trial

K = TrialKey.parse
QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, request):
    """A small finished sweep: the dense trial and the first ticket, weights kept (the default)."""
    from conftest import ROOT, TINY

    tmp = tmp_path_factory.mktemp("sweep")
    exp = load_experiment(ROOT / "experiments" / "smoke.yaml", [*TINY, f"storage={tmp / 'runs'}"])
    store = Store.for_experiment(exp)
    from lxsweep.store import write_experiment

    write_experiment(store, exp)
    for name in ("dense-L0-s0", "low-L1-s0"):
        run_trial(exp, K(name), store, **QUIET)
    return exp, store


def test_trained_weights_are_kept_compact_with_pruned_entries_zero(sweep):
    exp, store = sweep
    metrics = store.read_json(metrics_path("low-L1-s0"))
    info = metrics["weights"]
    assert info["path"] == weights_path("low-L1-s0") and info["dtype"] == "float16"
    state = load_file(store.path(info["path"]))
    assert all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    mask = pruning.load_mask(store.path(mask_path("low-L1-s0")))
    removed = sum(int((~m).sum()) for m in mask.values())
    for name, m in mask.items():
        assert torch.count_nonzero(state[name][~m]) == 0, name
    assert info["zeros"] >= removed and info["zeros"] - removed < 1e-4 * removed + 2  # fp16 underflow aside
    assert info["bytes"] == Path(store.path(info["path"])).stat().st_size
    total = sum(t.numel() for t in state.values())
    assert info["bytes"] < 2.1 * total + 100_000  # two bytes a weight plus the header


def test_keep_weights_selects_trials_without_changing_the_hash(smoke_file, tiny_overrides):
    base = load_experiment(smoke_file, tiny_overrides)
    tickets = load_experiment(smoke_file, [*tiny_overrides, "training.keep_weights=tickets"])
    none = load_experiment(smoke_file, [*tiny_overrides, "training.keep_weights=none", "training.weights_dtype=bfloat16"])
    assert base.hash == tickets.hash == none.hash
    assert [keeps_weights(tickets, K(n)) for n in ("dense-L0-s0", "low-L2-s0", "high-L1-s0", "random-L1-s0")] \
        == [True, True, False, False]
    assert all(keeps_weights(base, K(n)) for n in ("high-L1-s0", "random-L1-s0"))
    assert not keeps_weights(none, K("dense-L0-s0"))
    store = Store.for_experiment(tickets)
    metrics = run_trial(tickets, K("random-L1-s0"), store, **QUIET)
    assert metrics["weights"] is None and not store.exists(weights_path("random-L1-s0"))
