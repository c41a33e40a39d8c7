"""Reports: baselines beside the results, seed noise told apart from differences, honest axes."""
from __future__ import annotations

import pytest

from lxsweep.report import (_y_range, aggregate, best_tickets, comparisons, group_sparsity_table, plateau_table,
                            to_markdown, tolerance_table)


def _row(sub, level, seed, acc, sparsity):
    return {"trial": f"{sub}-L{level}-s{seed}", "subnetwork": sub, "level": level, "seed": seed, "sparsity": sparsity,
            "accuracy": acc, "accuracy_yesno": acc, "accuracy_number": acc, "accuracy_other": acc}


ROWS = [
    *[_row("dense", 0, s, a, 0.0) for s, a in enumerate((0.80, 0.82, 0.81))],
    *[_row("low", 1, s, a, 0.2) for s, a in enumerate((0.80, 0.81, 0.815))],
    *[_row("random", 1, s, a, 0.2) for s, a in enumerate((0.70, 0.73, 0.71))],
]
BASELINES = {"blind": {"accuracy": 0.5, "accuracy_yesno": 0.6}, "majority": {"accuracy": 0.3}}


def test_paired_differences_tell_noise_from_signal():
    comps = {(c["a"], c["b"]): c["diff"] for c in comparisons(ROWS)}
    low_dense, low_random = comps[("low", "dense")], comps[("low", "random")]
    assert low_dense.mean == pytest.approx((0.0 - 0.01 + 0.005) / 3) and not low_dense.excludes_zero
    assert low_random.mean == pytest.approx((0.10 + 0.08 + 0.105) / 3) and low_random.excludes_zero
    assert ("high", "random") not in comps  # no high trials: nothing to compare


def test_markdown_shows_baselines_gaps_and_bold_significant_differences():
    md = to_markdown(ROWS, "t", BASELINES, {})
    assert "| *blind* |  |  |  | 50.00 | 60.00 | – | – |" in md
    assert "| *majority* |  |  |  | 30.00 |" in md
    assert "Dense minus the blind baseline (points): overall +31.0, yes/no +21.0" in md
    assert "| low − random | 1 | 20.0 | **+9.50 [" in md
    assert "| low − dense | 1 | 20.0 | -0.17 [" in md and "| low − dense | 1 | 20.0 | **" not in md
    tol = tolerance_table(ROWS)
    assert tol["low"][1.0] == pytest.approx(0.2) and tol["random"][3.0] is None


def test_best_ticket_per_level_is_the_most_accurate_low_trial():
    rows = [*ROWS, _row("low", 2, 0, 0.74, 0.36), _row("low", 2, 1, 0.74, 0.36), _row("high", 1, 0, 0.9, 0.2)]
    l1, l2 = best_tickets(rows)
    assert l1["trial"] == "low-L1-s2" and l1["seeds"] == 3 and l1["accuracy_mean"] == pytest.approx((0.80 + 0.81 + 0.815) / 3)
    assert l2["trial"] == "low-L2-s0" and l2["seeds"] == 2  # a tie goes to the lower seed; high is never a ticket
    assert best_tickets([r for r in rows if r["subnetwork"] != "low"]) == []


def test_y_range_never_lets_a_constant_predictor_fill_a_panel():
    lo, hi = _y_range([58.5, 58.5, 58.6])
    assert hi - lo >= 30 and lo <= 58.5 <= hi
    lo, hi = _y_range([2.0, 3.0])
    assert -2 < lo < 0 and hi >= 30  # from 0, with room for a marker sitting at 0
    lo, hi = _y_range([10.0, 95.0])
    assert lo < 10 and 95 < hi < 106


def test_group_sparsity_averages_seeds():
    rows = [_row("low", 1, 0, 0.8, 0.2), _row("low", 1, 1, 0.8, 0.2)]
    sparsity = {"low-L1-s0": {"sparsity": 0.2, "groups": {"language": {"sparsity": 0.1}, "cross": {"sparsity": 0.3}}},
                "low-L1-s1": {"sparsity": 0.2, "groups": {"language": {"sparsity": 0.2}, "cross": {"sparsity": 0.2}}}}
    (row,) = group_sparsity_table(rows, sparsity)
    assert row["language"] == pytest.approx(0.15) and row["cross"] == pytest.approx(0.25) and "vision" not in row
    assert aggregate(rows)[0]["seeds"] == 2


def test_plateau_table_flags_arms_still_learning_when_training_ended():
    def curve(*accs):
        return [{"epoch": i + 1, "accuracy": a} for i, a in enumerate(accs)]

    rows = [  # 8 epochs: the last quarter runs from epoch 6 to 8
        *[{**_row("low", 1, s, 0.9, 0.2), "history": curve(.5, .8, .9, .9, .9, .9, .9, .9 + d)}
          for s, d in enumerate((0.0, 0.004, -0.002))],
        *[{**_row("random", 1, s, 0.7, 0.2), "history": curve(.3, .4, .5, .5, .6, .6 + d, .65, .7 + d)}
          for s, d in enumerate((0.0, 0.01, 0.005))],
    ]
    plateau = {p["subnetwork"]: p for p in plateau_table(rows)}
    assert (plateau["low"]["from_epoch"], plateau["low"]["to_epoch"]) == (6, 8)
    assert not plateau["low"]["rising"] and plateau["low"]["gain"] == pytest.approx(0.0006667, abs=1e-6)
    assert plateau["random"]["rising"] and plateau["random"]["gain"] == pytest.approx(0.1)
    assert "1 of 2 (subnetwork, level) arms gained more than one point" in to_markdown(rows, "t")


def test_an_experiment_file_reports_its_own_grid_and_out_writes_elsewhere(tmp_path, capsys):
    """levels_of and subnetworks select from a store: the report of a selection is that grid, not the whole store."""
    import shutil

    from conftest import ROOT

    from lxsweep.cli import main

    shutil.copytree(ROOT / "docs" / "results" / "demo" / "demo-6c9e05ebd7", tmp_path / "demo-6c9e05ebd7",
                    ignore=shutil.ignore_patterns("report"))
    out = tmp_path / "only-high-random"
    assert main(["report", str(ROOT / "experiments" / "demo.yaml"), "--set", f"storage={tmp_path}",
                 "--set", "pruning.subnetworks=[low, random, high]", "--set", "pruning.levels=2",
                 "--set", "pruning.levels_of={random: [1], high: [1]}", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    trials = sorted(line.split(",")[0] for line in (out / "results.csv").read_text().splitlines()[1:])
    assert trials == sorted(f"{t}-s{s}" for s in range(3) for t in ("dense-L0", "low-L1", "low-L2", "random-L1", "high-L1"))
    left_out = 123 - 15  # the committed store: the demo's 87 trials and the replay study's 36
    assert f"{left_out} other finished trial(s) in the store are left out" in err
    assert (out / "accuracy_vs_sparsity.png").is_file() and not (tmp_path / "demo-6c9e05ebd7" / "report").exists()
