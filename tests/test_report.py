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

    import yaml

    shutil.copytree(ROOT / "docs" / "results" / "demo" / "second-run" / "demo-6c9e05ebd7", tmp_path / "demo-6c9e05ebd7",
                    ignore=shutil.ignore_patterns("report"))
    # The second run's experiment, as its store recorded it (experiments/demo.yaml is now the third design).
    recorded = yaml.safe_load((tmp_path / "demo-6c9e05ebd7" / "experiment.yaml").read_text())
    recorded.pop("hash")
    (tmp_path / "second-run.yaml").write_text(yaml.safe_dump(recorded))
    out = tmp_path / "only-high-random"
    assert main(["report", str(tmp_path / "second-run.yaml"), "--set", f"storage={tmp_path}",
                 "--set", "pruning.subnetworks=[low, random, high]", "--set", "pruning.levels=2",
                 "--set", "pruning.levels_of={random: [1], high: [1]}", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    trials = sorted(line.split(",")[0] for line in (out / "results.csv").read_text().splitlines()[1:])
    assert trials == sorted(f"{t}-s{s}" for s in range(3) for t in ("dense-L0", "low-L1", "low-L2", "random-L1", "high-L1"))
    left_out = 123 - 15  # the committed store: the demo's 87 trials and the replay study's 36
    assert f"{left_out} other finished trial(s) in the store are left out" in err
    assert (out / "accuracy_vs_sparsity.png").is_file() and not (tmp_path / "demo-6c9e05ebd7" / "report").exists()


def _tested(sub, level, seed, test, valid, sparsity=0.0):
    """A row of a store with a test split: final accuracy on test, the last validation epoch under `valid`."""
    return {"trial": f"{sub}-L{level}-s{seed}", "subnetwork": sub, "level": level, "seed": seed, "sparsity": sparsity,
            "accuracy": test, "evaluated_on": "test", "evaluated_questions": 4000, "valid": {"accuracy": valid}}


def test_calibration_checks_the_rewind_point_against_issue_24s_thresholds_on_validation():
    from lxsweep.report import calibration

    rows = [*[_tested("dense", 0, s, 0.93, 0.94) for s in range(3)],
            *[_tested("probe", 0, s, 0.55, 0.56) for s in range(3)],
            *[_tested("scratch", 0, s, 0.70, 0.71) for s in range(3)],
            *[_tested("low", 1, s, a, 0.9, 0.2) for s, a in enumerate((0.929, 0.931, 0.930))],
            *[_tested("random", 1, s, a, 0.8, 0.2) for s, a in enumerate((0.80, 0.83, 0.81))]]
    baselines = {"blind": {"accuracy": 0.45}, "majority": {"accuracy": 0.2},
                 "test": {"blind": {"accuracy": 0.44}, "majority": {"accuracy": 0.21}}}
    cal = calibration(rows, baselines)
    assert cal["validation"] == pytest.approx({"blind": 45.0, "probe": 56.0, "scratch": 71.0, "dense": 94.0})
    assert cal["test"]["dense"] == pytest.approx(93.0) and cal["test"]["blind"] == pytest.approx(44.0)
    assert [ok for *_, ok in cal["checks"]] == [True, True, True, True]
    from lxsweep.report import calibration_summary

    assert "probe 56.00" in calibration_summary(cal) and "dense − scratch 23.00 (≥ 15: met)" in calibration_summary(cal)
    md = to_markdown(rows, "t", baselines, {})
    assert "on the **test** split" in md and "on its 4,000 questions): 0.79 points at 50% accuracy" in md
    assert "| *blind* |  |  |  | 44.00 |" in md  # the baselines of the split the numbers are on
    assert "| probe (rewind point frozen, fresh head) | 56.00 | 55.00 |" in md and "| dense − scratch | ≥ 15 | 23.00 | yes |" in md
    # the probe too close to dense: a threshold fails, in bold
    worse = [r if r["subnetwork"] != "probe" else {**r, "valid": {"accuracy": 0.80}} for r in rows]
    assert "| probe − blind | ≤ 15 | 35.00 | **no** |" in to_markdown(worse, "t", baselines, {})
    # comparisons: the family's size, Holm-adjusted p, and equivalence to dense only where TOST shows it
    comps = {(c["a"], c["b"]): c for c in comparisons(rows)}
    assert comps[("low", "dense")]["equivalent"] is True and comps[("low", "random")]["equivalent"] is None
    assert comps[("random", "dense")]["equivalent"] is False
    assert f"{len(comps)} comparisons" in md and "| Holm p |" in md
    assert all(c["p_holm"] >= c["p"] for c in comps.values())
    assert calibration([r for r in rows if r["subnetwork"] != "probe"], baselines) is None
