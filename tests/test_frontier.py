"""Frontier search: its verdicts, its choices, the same answers as the grid, resume and extension in a store.

The search reads only each finished trial's accuracies, so most tests feed it
results of a known world (a ticket that holds, then falls) and check what it
chooses; one replays the committed demo store's real results, and the sweep
test in tests/test_sweep.py runs it on a real Ray cluster.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import ROOT
from lxsweep import frontier
from lxsweep.config import ConfigError, from_dict, from_record, write_experiment
from lxsweep.frontier import MATCH, MISS, UNDECIDED, COLLAPSED, STANDING, choose, judge_collapse, judge_match
from lxsweep.plan import Plan, TrialKey, parent
from lxsweep.report import load_rows, write_report
from lxsweep.status import status_lines
from lxsweep.store import SEARCH_FILE, Store, metrics_path

OLD_DEMO = ROOT / "docs" / "results" / "demo" / "second-run" / "demo-6c9e05ebd7"


def study(**search) -> "Experiment":  # noqa: F821
    return from_dict({"name": "f", "seeds": [0, 1, 2], "pruning": {
        "rate": 0.2, "levels": 12, "subnetworks": ["low", "random", "reinit"],
        "levels_of": {"random": [1, 3, 5, 7, 9], "reinit": [2, 10]}}, "search": {"mode": "frontier", **search}})


def world(key: TrialKey) -> float:
    """A known study: dense 0.90; the ticket holds to level 7, falls past 8 and collapses at 11; random falls
    past 3; seeds differ by up to ±0.3 points (and the ticket by ±2.5 at level 8, where 2 seeds cannot decide)."""
    jitter = (0.0, 0.003, -0.003)[key.seed]
    if key.subnetwork == "dense":
        return 0.90 + jitter
    drop = {"low": {8: 0.018, 9: 0.05, 10: 0.08, 11: 0.20, 12: 0.30}.get(key.level, 0.0),
            "random": 0.0 if key.level <= 3 else 0.05 * key.level,
            "reinit": 0.005 * key.level}[key.subnetwork]
    spread = 0.025 * (1, -1, 0.2)[key.seed] if key == TrialKey(8, "low", key.seed) else 0.0
    return 0.90 + jitter - drop + spread


def row(key: TrialKey, accuracy: float, exp) -> dict:
    return {"trial": key.name, "level": key.level, "subnetwork": key.subnetwork, "seed": key.seed,
            "accuracy": accuracy, "sparsity": exp.sparsity(key.level), "started_at": 0.0, "duration_s": 1.0}


def grid_rows(exp) -> list[dict]:
    return [row(k, world(k), exp) for k in Plan(exp).trials]


# -- verdicts ------------------------------------------------------------------


def test_verdicts_read_the_interval_against_the_margin():
    s = study().search
    dense = {0: 0.90, 1: 0.91, 2: 0.90}
    assert judge_match({0: 0.90, 1: 0.91, 2: 0.90}, dense, [0, 1, 2], s).outcome == MATCH
    assert judge_match({0: 0.80, 1: 0.81, 2: 0.80}, dense, [0, 1, 2], s).outcome == MISS
    # -1.5 points on average but spread too wide to say inside or outside ±2
    assert judge_match({0: 0.89, 1: 0.89, 2: 0.875}, dense, [0, 1, 2], s).outcome == UNDECIDED
    assert judge_match({0: 0.90}, dense, [0], s).outcome == UNDECIDED  # one seed has no interval
    assert judge_collapse({0: 0.50, 1: 0.52}, dense, [0, 1], s).outcome == COLLAPSED
    assert judge_collapse({0: 0.89, 1: 0.90}, dense, [0, 1], s).outcome == STANDING
    assert judge_collapse({0: 0.75, 1: 0.85}, dense, [0, 1], s).outcome == UNDECIDED


def test_a_tighter_confidence_leaves_more_undecided():
    dense = {0: 0.90, 1: 0.90}
    ticket = {0: 0.895, 1: 0.885}
    assert judge_match(ticket, dense, [0, 1], study(confidence=0.75).search).outcome == MATCH
    assert judge_match(ticket, dense, [0, 1], study(confidence=0.95).search).outcome == UNDECIDED


# -- choices -------------------------------------------------------------------


def run_search(exp, results=world, done: dict | None = None) -> tuple[list[str], dict]:
    """Run the search to its end, each chosen trial finishing (with ``results``) once its parent has; checks that
    every trial was chosen from results that did not include its own."""
    done = dict(done or {})
    order = []
    while True:
        want, _ = choose(exp, done.values())
        ready = [k for k in want if k not in done and (parent(exp, k) is None or parent(exp, k) in done)]
        if not ready:
            return order, done
        for k in ready:
            done[k] = row(k, results(k), exp)
            order.append(k.name)


def test_the_search_finds_the_grids_answers_with_fewer_trials():
    exp = study()
    order, done = run_search(exp)
    grid = grid_rows(exp)
    search = [(a.subnetwork, a.matches_up_to, a.first_miss, a.collapse) for a in frontier.answers(exp, done.values())]
    full = [(a.subnetwork, a.matches_up_to, a.first_miss, a.collapse) for a in frontier.answers(exp, grid)]
    assert search == full == [("low", 7, 8, 11), ("random", 3, 5, None)]
    # 3 dense, two chains to the collapse, the third seed's chain to level 8, random at 3 levels with 2 seeds
    assert len(order) == 3 + 2 * 11 + 8 + 3 * 2 < len(grid)
    names = set(order)
    assert not any(n.startswith("reinit") for n in names)  # not asked about: reinit compares with the ticket
    assert "low-L12-s0" not in names and "low-L11-s0" in names  # the chains stop at the collapse
    assert "low-L8-s2" in names and "low-L7-s2" in names and "low-L9-s2" not in names  # a third seed only to level 8
    assert {n for n in names if n.startswith("random")} == {f"random-L{level}-s{seed}" for level in (1, 3, 5)
                                                            for seed in (0, 1)}  # bisection of 1..9: 5, 1, 3


def test_choices_depend_on_results_not_on_their_order():
    exp = study()
    _, done = run_search(exp)
    rows = list(done.values())
    first = choose(exp, rows)[0]
    assert choose(exp, rows[::-1])[0] == first
    # every choice is explained, and a chosen trial's parent is chosen too
    assert all(why for why in first.values())
    assert all(parent(exp, k) is None or parent(exp, k) in first for k in first)
    seeded = [why for k, why in first.items() if k == TrialKey(8, "low", 2)]
    assert seeded and seeded[0].startswith("seed 2 added: low − dense was undecided")


def test_asking_about_a_control_bisects_it_and_stops_at_the_tickets_collapse():
    exp = study(subnetworks=["low", "reinit"], max_seeds=2)
    order, done = run_search(exp)
    names = set(order)
    assert "low-L8-s2" not in names  # max_seeds 2: the straddling level counts as not shown to match
    answers = {a.subnetwork: a for a in frontier.answers(exp, done.values())}
    assert answers["low"].matches_up_to == 7 and answers["low"].first_miss == 8
    # reinit at level 10 needs the chain's level 9 (run: the collapse is at 11)
    assert {"reinit-L2-s0", "reinit-L10-s0"} <= names
    assert answers["reinit"].matches_up_to == 2 and answers["reinit"].first_miss == 10


def test_frontier_settings_are_checked_and_leave_the_hash_alone():
    grid = from_dict({"seeds": [0, 1, 2]})
    assert study().hash == from_dict({"name": "f", "seeds": [0, 1, 2], "pruning": {
        "rate": 0.2, "levels": 12, "subnetworks": ["low", "random", "reinit"],
        "levels_of": {"random": [1, 3, 5, 7, 9], "reinit": [2, 10]}}}).hash
    assert grid.search.mode == "grid"
    for search, says in (({"min_seeds": 4}, "search.min_seeds: 4 is out of range — expected an integer in 2..3"),
                         ({"margin": 2.0}, "search.margin: 2.0 is out of range"),
                         ({"subnetworks": ["high"]}, "search.subnetworks[0]: 'high' is not in pruning.subnetworks")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            study(**search)
    with pytest.raises(ConfigError, match="search.mode: frontier needs at least two seeds"):
        from_dict({"search": {"mode": "frontier"}})


# -- the committed demo store: real results ------------------------------------


def test_replaying_the_committed_demo_finds_its_answers():
    import yaml

    raw = yaml.safe_load((OLD_DEMO / "experiment.yaml").read_text())
    raw["search"] = {"mode": "frontier"}
    exp = from_record(raw)
    names = {k.name for k in Plan(exp).trials}
    rows = [r for r in load_rows(Store(str(OLD_DEMO))) if r["trial"] in names]
    order, found = frontier.replay(exp, rows)
    taken = [r for r in rows if r["trial"] in set(order)]
    key = lambda answers: [(a.subnetwork, a.matches_up_to, a.first_miss, a.collapse) for a in answers]  # noqa: E731
    assert key(frontier.answers(exp, taken)) == key(frontier.answers(exp, rows)) == [
        ("low", 15, 16, 20), ("random", 1, 3, None)]
    assert len(order) < len(rows)


# -- in a store: the searcher, resume, extension, status, report ---------------


def searcher(exp, store: Store):
    from lxsweep.sweep import _make_searcher

    return _make_searcher(Plan(exp), store, {"experiment": exp.record()})


def drive(exp, store: Store, stop_after: int | None = None) -> list[str]:
    """The sweep's searcher, with each trial it releases finishing with ``world``'s result written to the store
    (as a trial's metrics.json); returns the trials released."""
    from ray.tune.search import Searcher

    s, released, running = searcher(exp, store), [], []
    while stop_after is None or len(released) < stop_after:
        config = s.suggest(f"t{len(released)}")
        if config is None or config == Searcher.FINISHED:
            if not running:
                return released
            tid, name = running.pop(0)
            key = TrialKey.parse(name)
            store.write_json(metrics_path(name), {**row(key, world(key), exp), "started_at": time.time()})
            s.on_trial_complete(tid)
            continue
        released.append(config["trial"])
        running.append((f"t{len(released) - 1}", config["trial"]))
    return released


def test_a_resumed_search_makes_the_same_choices_and_an_extension_reuses_the_store(tmp_path):
    exp = study(max_seeds=2)
    exp.storage = str(tmp_path)
    store = Store.for_experiment(exp)
    write_experiment(store, exp)
    first = drive(exp, store, stop_after=9)  # the launch is stopped part way (running trials never finish)
    recorded = store.read_json(SEARCH_FILE)
    finished = {n for n in first if store.exists(metrics_path(n))}
    again = drive(exp, store)  # the re-launch: what was done stays done, the rest follows
    assert finished and not set(again) & finished
    assert set(first) - finished <= set(again)  # the ones cut short run again
    fresh = tmp_path / "fresh"
    exp2 = study(max_seeds=2)
    exp2.storage = str(fresh)
    store2 = Store.for_experiment(exp2)
    write_experiment(store2, exp2)
    drive(exp2, store2)  # the same study in one go
    done = lambda st: sorted(n for n in st.listdir("trials") if st.exists(metrics_path(n)))  # noqa: E731
    assert done(store) == done(store2)
    chosen = [c["trial"] for c in store.read_json(SEARCH_FILE)["chosen"]]
    assert chosen[: len(recorded["chosen"])] == [c["trial"] for c in recorded["chosen"]]  # nothing withdrawn
    assert len(chosen) == len(set(chosen))
    # Extension: a third seed may now be added; only the new trials run.
    before = set(done(store))
    wider = study()
    wider.storage = str(tmp_path)
    assert Store.for_experiment(wider).root == store.root  # search.* is not hashed: the same store
    added = drive(wider, store)
    assert added and not set(added) & before
    assert "low-L8-s2" in added
    # Extension to the full grid: the rest of it, nothing twice.
    grid = study(mode="grid")
    grid.storage = str(tmp_path)
    rest = drive(grid, store)
    assert set(done(store)) == {k.name for k in Plan(grid).trials}
    assert not set(rest) & (before | set(added))


def test_status_and_report_show_the_frontier(tmp_path):
    exp = study()
    exp.storage = str(tmp_path)
    store = Store.for_experiment(exp)
    write_experiment(store, exp)
    drive(exp, store)
    lines = status_lines(store, Plan(exp))
    n = len(json.loads(Path(store.path(SEARCH_FILE)).read_text())["chosen"])
    assert lines[0].startswith(f"f ({exp.hash}): frontier search: {n} done of {n} chosen so far (the grid has "
                               f"{len(Plan(exp).trials)})")
    assert any(line.startswith("low matches dense (±2 points) up to level 7 (79.0%)") for line in lines)
    assert any("collapses (more than 10 points below dense) at level 11 (91.4%)" in line for line in lines)
    write_report(store, out=tmp_path / "report")
    md = (tmp_path / "report" / "results.md").read_text()
    assert "- low matches dense (±2 points) up to level 7 (79.0%)" in md
    assert f"Chosen by frontier search: {n} of the grid's {len(Plan(exp).trials)} trials" in md
