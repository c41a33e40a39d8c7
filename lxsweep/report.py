"""Reports from the store alone: tables, seed statistics, baselines and the figures.

Everything is computed from files in the store — each trial's ``metrics.json``
(with its per-epoch history) and ``sparsity.json``, and the data's
``baselines.json`` — so a report can be regenerated at any time (during a
sweep, after it, on another machine):

- ``results.csv``: one row per trial;
- ``results.md``: the baselines, mean ± std over seeds per subnetwork and level,
  paired differences with 95% intervals (does a gap exceed seed noise?),
  where iterative pruning removes weights (per group), the read-off at the
  experiment's ``pruning.nominal`` sparsities (:func:`nominal_table`) and, when
  masks were not enforced, the sparsity left after retraining;
- ``accuracy_vs_sparsity.png``: the paper's figure, with the question-only
  baselines drawn as reference lines;
- ``training_curves.png``: validation accuracy per epoch (has every arm plateaued?);
- ``where_pruned.png``: sparsity per group of layers along each chain.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Optional

from lxsweep import subnetworks
from lxsweep.frontier import valid_accuracy
from lxsweep.stats import holm, paired_test, proportion_se
from lxsweep.store import (EXPERIMENT_FILE, LATENCY_FILE, SEARCH_FILE, TRIALS_DIR, CorruptStoreFile, Store,
                           metrics_path, read_metrics, report_path, sparsity_path)
from lxsweep.subnetworks import DENSE, PROBE, SCRATCH

ACCURACY_COLUMNS = ("accuracy", "accuracy_yesno", "accuracy_number", "accuracy_other")
PANELS = {"accuracy": "overall", "accuracy_yesno": "yes/no", "accuracy_number": "number", "accuracy_other": "other"}
REPORT_FILES = ("results.csv", "results.md", "accuracy_vs_sparsity.png", "training_curves.png", "where_pruned.png")
LATENCY_FIGURE = "accuracy_vs_latency.png"  # also, when the store has latency.json (`lxsweep latency`)
MAX_KIND_PANELS = 8  # real VQA has 65 question types: too many panels; their numbers stay in the CSV
BASELINE_STYLE = {"blind": (":", "blind (question only)"), "majority": ("-.", "majority answer")}
GROUPS = ("language", "vision", "cross", "pooler")


# -- reading the store -------------------------------------------------------------


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_rows(store: Store, with_history: bool = False, warn: Callable[[str], None] = _stderr) -> list[dict]:
    """One row per finished trial, from ``trials/*/metrics.json``, in (subnetwork, level, seed) order.

    An unreadable ``metrics.json`` (empty, truncated, incomplete) is skipped, and ``warn`` names it.
    """
    rows = []
    drop = ("child_masks",) if with_history else ("history", "child_masks")
    for name in store.listdir(TRIALS_DIR):
        if store.exists(metrics_path(name)):
            try:
                m = read_metrics(store, name)
            except CorruptStoreFile as exc:
                warn(f"lxsweep: warning: skipped {exc}")
                continue
            rows.append({k: v for k, v in m.items() if k not in drop})
    return sorted(rows, key=lambda r: (subnetworks.order(r["subnetwork"]), r["subnetwork"], r["level"], r["seed"]))


def load_group_sparsity(store: Store, rows: list[dict], warn: Callable[[str], None] = _stderr) -> dict[str, dict]:
    """Per masked trial, its ``sparsity.json`` (overall, per group, per layer); unreadable ones skipped with a warning."""
    out = {}
    for r in rows:
        if r["level"] > 0 and store.exists(sparsity_path(r["trial"])):
            try:
                report = store.read_json(sparsity_path(r["trial"]))
            except CorruptStoreFile as exc:
                warn(f"lxsweep: warning: skipped {exc}")
                continue
            if isinstance(report, dict) and "sparsity" in report:
                out[r["trial"]] = report
            else:
                warn(f"lxsweep: warning: skipped {store.path(sparsity_path(r['trial']))}: incomplete sparsity report")
    return out


def load_baselines(store: Store) -> Optional[dict]:
    """The data's question-only baselines: ``baselines.json``, computed from the data when it can be read."""
    from lxsweep.baselines import BASELINES_FILE, experiment_baselines
    from lxsweep.config import read_experiment
    from lxsweep.store import EXPERIMENT_FILE

    if store.exists(BASELINES_FILE):
        try:
            return store.read_json(BASELINES_FILE)
        except CorruptStoreFile as exc:
            _stderr(f"lxsweep: warning: skipped {exc}")
            return None
    if not store.exists(EXPERIMENT_FILE):
        return None
    try:
        return experiment_baselines(read_experiment(store), store)
    except CorruptStoreFile as exc:
        _stderr(f"lxsweep: warning: report without baselines: {exc}")
        return None
    except (OSError, ValueError):  # the data is not reachable from here (e.g. a cluster path): report without
        return None


# -- numbers -----------------------------------------------------------------------


def kind_columns(rows: list[dict]) -> list[str]:
    """Per-question-kind accuracy columns (VQA's question_type), beyond the answer types."""
    return sorted({k for r in rows for k in r if k.startswith("accuracy_") and k not in ACCURACY_COLUMNS})


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (subnetwork, level)."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["subnetwork"], r["level"])].append(r)
    metrics = [*ACCURACY_COLUMNS, *kind_columns(rows)]
    out = []
    for (sub, level), rs in sorted(groups.items(), key=lambda x: (x[0][1], subnetworks.order(x[0][0]), x[0][0])):
        a = {"subnetwork": sub, "level": level, "seeds": len(rs),
             "sparsity": statistics.fmean(r["sparsity"] for r in rs) if level else 0.0}
        trained = [r["trained_sparsity"] for r in rs if "trained_sparsity" in r]
        if trained:
            a["trained_sparsity"] = statistics.fmean(trained)
        for m in metrics:
            vals = [r[m] for r in rs if m in r]
            if vals:
                a[f"{m}_mean"], a[f"{m}_std"] = _mean_std(vals)
        out.append(a)
    return out


def best_tickets(rows: list[dict]) -> list[dict]:
    """Per level, the lottery ticket to take away: the ``low`` trial with the highest final accuracy over its seeds.

    A ticket is one trial (one mask, one set of weights), so the choice is a
    trial, not the seed mean; each returned row is that trial's row plus its
    level's ``seeds`` and ``accuracy_mean`` (what the tables report), in level
    order. Ties go to the lower seed.
    """
    levels: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if r["subnetwork"] == subnetworks.ticket() and r["level"] > 0:
            levels[r["level"]].append(r)
    return [{**max(rs, key=lambda r: (r["accuracy"], -r["seed"])), "seeds": len(rs),
             "accuracy_mean": statistics.fmean(r["accuracy"] for r in rs)} for _, rs in sorted(levels.items())]


def _by_seed(rows: list[dict], sub: str, level: int, metric: str = "accuracy") -> dict[int, float]:
    return {r["seed"]: r[metric] for r in rows if r["subnetwork"] == sub and r["level"] == level and metric in r}


EQUIVALENCE_MARGIN = 0.02  # "matches dense": the 90% interval of (subnetwork - dense) inside ±2 points (TOST)


def comparisons(rows: list[dict], metric: str = "accuracy") -> list[dict]:
    """Paired differences (same seed) with 95% intervals, for the registry's pairs (:func:`lxsweep.subnetworks.comparisons`)
    at every level both sides have.

    ``dense`` is compared at level 0 against every level of the other side. Each row also has the paired
    t-test's ``p``, its Holm-adjusted ``p_holm`` over every row returned (the family the report states),
    and ``equivalent``: for a pair with dense, whether two one-sided tests place the difference inside
    ±:data:`EQUIVALENCE_MARGIN` (None for other pairs or without seed spread).
    """
    out = []
    levels = sorted({r["level"] for r in rows if r["level"] > 0})
    for a, b in subnetworks.comparisons():
        for level in levels:
            left = _by_seed(rows, a, level, metric)
            right = _by_seed(rows, b, 0 if b == DENSE else level, metric)
            test = paired_test(left, right) if left and right else None
            if test is not None:
                out.append({"a": a, "b": b, "level": level, "sparsity": statistics.fmean(
                    r["sparsity"] for r in rows if r["subnetwork"] == a and r["level"] == level), "diff": test.diff,
                    "p": test.p, "equivalent": test.equivalent(EQUIVALENCE_MARGIN)
                    if b == DENSE and test.low90 is not None else None})
    for c, adjusted in zip(out, holm([c["p"] for c in out])):
        c["p_holm"] = adjusted
    return out


def evaluated_on(rows: list[dict]) -> str:
    """The split the rows' final accuracies are measured on: "test" when every row has one, else "validation"."""
    return "test" if rows and all(r.get("evaluated_on") == "test" for r in rows) else "validation"


def split_baselines(baselines: Optional[dict], split: str) -> Optional[dict]:
    """The baselines measured on ``split`` ("test" or "validation"; baselines.json keeps test's under "test")."""
    if not baselines:
        return None
    return baselines.get("test") if split == "test" else {k: v for k, v in baselines.items() if k != "test"}


# Issue 24's thresholds for a study worth pruning (docs/results/demo/PREREGISTRATION.md), in points, validation:
# (name, comparison, bound, the value from the seed means).
CALIBRATION = (
    ("probe − blind", "≤", 15, lambda v: v[PROBE] - v["blind"]),
    (DENSE, "≥", 90, lambda v: v[DENSE]),
    ("dense − probe", "≥", 20, lambda v: v[DENSE] - v[PROBE]),
    ("dense − scratch", "≥", 15, lambda v: v[DENSE] - v[SCRATCH]),
)


def calibration_markdown(cal: dict) -> list[str]:
    """The rewind-point check of :func:`calibration` as two markdown tables."""
    v, t = cal["validation"], cal["test"]
    lines = ["Does the rewind point leave the task to learn? (issue 24's thresholds, checked on validation; "
             f"seed means, points; seeds: probe {cal['seeds'][PROBE]}, scratch {cal['seeds'][SCRATCH]}, "
             f"dense {cal['seeds'][DENSE]})", "", "| predictor | validation | test |", "|---|---|---|"]
    names = {"blind": "blind (best answer per question text)", PROBE: "probe (rewind point frozen, fresh head)",
             SCRATCH: "scratch (no pretraining)", DENSE: "dense fine-tune of the rewind point"}
    for key, label in names.items():
        lines.append(f"| {label} | {v[key]:.2f} | " + (f"{t[key]:.2f}" if t.get(key) is not None else "–") + " |")
    lines += ["", "| threshold | required | validation | met |", "|---|---|---|---|"]
    for name, threshold, value, ok in cal["checks"]:
        lines.append(f"| {name} | {threshold} | {value:.2f} | {'yes' if ok else '**no**'} |")
    return lines


def calibration_summary(cal: dict) -> str:
    """One line of :func:`calibration` for the terminal."""
    v = cal["validation"]
    checks = "; ".join(f"{name} {value:.2f} ({threshold}: {'met' if ok else 'NOT met'})"
                       for name, threshold, value, ok in cal["checks"])
    return (f"rewind point check (validation, seed means): blind {v['blind']:.2f}, probe {v[PROBE]:.2f}, "
            f"scratch {v[SCRATCH]:.2f}, dense {v[DENSE]:.2f}; {checks}")


def calibration(rows: list[dict], baselines: Optional[dict]) -> Optional[dict]:
    """Does the rewind point leave the task to learn? Seed means (points) of blind, probe, scratch and dense on
    validation (where the thresholds are checked) and test, and each threshold of :data:`CALIBRATION` met or
    not; None unless the store has all four."""
    level0 = {sub: [r for r in rows if r["subnetwork"] == sub and r["level"] == 0] for sub in (PROBE, SCRATCH, DENSE)}
    valid_blind = (split_baselines(baselines, "validation") or {}).get("blind", {}).get("accuracy")
    if not all(level0.values()) or valid_blind is None:
        return None
    test_blind = (split_baselines(baselines, "test") or {}).get("blind", {}).get("accuracy")
    out: dict = {"validation": {"blind": 100 * valid_blind}, "test": {"blind": None if test_blind is None else 100 * test_blind},
                 "seeds": {sub: len(rs) for sub, rs in level0.items()}}
    for sub, rs in level0.items():
        out["validation"][sub] = 100 * statistics.fmean(valid_accuracy(r) for r in rs)
        tests = [r["accuracy"] for r in rs if r.get("evaluated_on") == "test"]
        out["test"][sub] = 100 * statistics.fmean(tests) if len(tests) == len(rs) else None
    out["checks"] = []
    for name, op, bound, value_of in CALIBRATION:
        value = value_of(out["validation"])
        out["checks"].append((name, f"{op} {bound}", value, value <= bound if op == "≤" else value >= bound))
    return out


def tolerance_table(rows: list[dict], points: tuple[float, ...] = (1.0, 3.0)) -> dict[str, dict[float, float | None]]:
    """Per pruned subnetwork, the largest sparsity whose mean accuracy is within ``points`` of dense's mean."""
    agg = aggregate(rows)
    dense = next((a for a in agg if a["subnetwork"] == DENSE), None)
    if dense is None:
        return {}
    base = dense["accuracy_mean"] * 100
    out: dict[str, dict[float, float | None]] = {}
    for sub in sorted({a["subnetwork"] for a in agg if a["level"] > 0}, key=subnetworks.order):
        levels = [a for a in agg if a["subnetwork"] == sub]
        out[sub] = {}
        for p in points:
            ok = [a["sparsity"] for a in levels if a["accuracy_mean"] * 100 >= base - p]
            out[sub][p] = max(ok) if ok else None
    return out


def plateau_table(rows: list[dict], last: float = 0.25) -> list[dict]:
    """Per (subnetwork, level): was the fine-tune still learning when it ended?

    ``gain`` is the accuracy gained over the last ``last`` of the epochs (mean
    over seeds), ``noise`` the seed std of the final accuracy; ``rising`` when
    the gain exceeds both the noise and one point: more epochs would likely
    have moved that arm, so its number is not yet its plateau.
    """
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        if len(r.get("history") or []) >= 2:
            groups[(r["subnetwork"], r["level"])].append(r)
    out = []
    for (sub, level), rs in sorted(groups.items(), key=lambda x: (subnetworks.order(x[0][0]), x[0][1])):
        n = min(len(r["history"]) for r in rs)
        start = max(0, math.ceil(n * (1 - last)) - 1)  # 0-based epoch index the last stretch starts from
        gains = [r["history"][n - 1]["accuracy"] - r["history"][start]["accuracy"] for r in rs]
        gain, _ = _mean_std(gains)
        _, noise = _mean_std([r["history"][n - 1]["accuracy"] for r in rs])
        out.append({"subnetwork": sub, "level": level, "from_epoch": start + 1, "to_epoch": n, "gain": gain,
                    "noise": noise, "rising": gain > max(noise, 0.01)})
    return out


def _level_reference(sub: str) -> str:
    """The subnetwork whose mask's achieved sparsity places ``sub``'s levels: the criterion it follows, else itself."""
    try:
        crit = subnetworks.criterion(sub)
    except ValueError:  # a plugin's subnetwork, read back where the plugin is not importable
        return sub
    return crit.follows or crit.name if crit is not None else sub


def nominal_table(rows: list[dict], nominal: list[float]) -> list[dict]:
    """Per nominal sparsity and pruned subnetwork: the first level whose achieved sparsity is at or above it.

    The paper's tables name nominal sparsities (10, 20, ..., 90%); a schedule of
    ``rate`` steps reaches them only in jumps (with rate 0.1, nominal 20% is the
    27.1% of level 3, as in the paper's code, docs/PAPER_CODE.md row a). A
    level's achieved sparsity is the mean over seeds of the mask sparsity of the
    criterion that defines it (``low`` for the criteria that follow it, such as
    ``code_high``, whose own sparsity is 1 − low's), else the level's target.
    ``level`` is None when no level reaches the point.
    """
    agg = {(a["subnetwork"], a["level"]): a for a in aggregate(rows)}
    target = {(r["subnetwork"], r["level"]): r.get("target_sparsity", r["sparsity"]) for r in rows}
    subs = sorted({sub for sub, level in agg if level > 0}, key=lambda s: (subnetworks.order(s), s))
    out = []
    for point in nominal:
        for sub in subs:
            ref = _level_reference(sub)
            levels = sorted(level for s, level in agg if s == sub and level > 0)
            achieved = {level: agg[(ref, level)]["sparsity"] if (ref, level) in agg else target[(sub, level)]
                        for level in levels}
            level = next((lv for lv in levels if achieved[lv] >= point - 1e-9), None)
            row = {"nominal": point, "subnetwork": sub, "level": level}
            if level is not None:
                a = agg[(sub, level)]
                row.update(achieved=achieved[level], sparsity=a["sparsity"], seeds=a["seeds"],
                           accuracy_mean=a["accuracy_mean"], accuracy_std=a["accuracy_std"])
                if "trained_sparsity" in a:
                    row["trained_sparsity"] = a["trained_sparsity"]
            out.append(row)
    return out


def group_sparsity_table(rows: list[dict], sparsity: dict[str, dict]) -> list[dict]:
    """Per (subnetwork, level): mean sparsity of each group of layers over seeds."""
    cells: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        report = sparsity.get(r["trial"])
        if report and "groups" in report:
            cells[(r["subnetwork"], r["level"])].append(report)
    out = []
    for (sub, level), reports in sorted(cells.items(), key=lambda x: (subnetworks.order(x[0][0]), x[0][1])):
        row = {"subnetwork": sub, "level": level, "sparsity": statistics.fmean(rep["sparsity"] for rep in reports)}
        for g in GROUPS:
            vals = [rep["groups"][g]["sparsity"] for rep in reports if g in rep["groups"]]
            if vals:
                row[g] = statistics.fmean(vals)
        out.append(row)
    return out


# -- text --------------------------------------------------------------------------


def to_csv(rows: list[dict]) -> str:
    cols = ["trial", "subnetwork", "level", "seed", "target_sparsity", "sparsity", "sparsity_all", "trained_sparsity",
            *ACCURACY_COLUMNS, *kind_columns(rows), "best_accuracy", "train_loss", "epochs", "duration_s"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _p(p: Optional[float]) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _label(metric: str) -> str:
    return PANELS.get(metric, metric[len("accuracy_"):])


def frontier_markdown(exp, rows: list[dict], recorded: Optional[dict] = None) -> list[str]:
    """Where each subnetwork asked about stops matching dense, and where the ticket collapses (lxsweep/frontier.py's
    :func:`~lxsweep.frontier.answers`, the same for a full grid and a frontier search), on the reported split."""
    from lxsweep.frontier import answers, describe

    found = answers(exp, rows)
    if not found:
        return []
    s = exp.search
    lines = [f"Where each subnetwork stops matching dense ({evaluated_on(rows)} split, every seed a level has; "
             f"\"matches\": the {100 * (2 * s.confidence - 1):g}% interval of the paired difference inside "
             f"±{100 * s.margin:g} points; \"collapses\": its upper end more than {100 * s.collapse:g} points below "
             f"dense; `search.*` sets these):", ""]
    lines += [f"- {describe(exp, a, exp.sparsity)}" for a in found]
    if recorded and recorded.get("mode") == "frontier":
        lines += ["", f"Chosen by frontier search: {len(recorded.get('chosen', []))} of the grid's "
                  f"{recorded.get('grid_trials', '?')} trials (`search.json` lists each with why). Its choices read "
                  f"validation accuracy; a trial was chosen before its own result existed and never dropped."]
    return lines


def to_markdown(rows: list[dict], title: str, baselines: Optional[dict] = None,
                sparsity: Optional[dict[str, dict]] = None, nominal: Optional[list[float]] = None,
                frontier: Optional[list[str]] = None) -> str:
    agg = aggregate(rows)
    kinds = kind_columns(rows)
    metrics = [m for m in (*ACCURACY_COLUMNS, *kinds) if any(m in r for r in rows)]
    split = evaluated_on(rows)
    questions = [r["evaluated_questions"] for r in rows if "evaluated_questions" in r]
    noise = ""
    if questions:
        n = min(questions)
        noise = (f" The {split} split's own sampling error (binomial SE on its {n:,} questions): "
                 f"{100 * proportion_se(0.5, n):.2f} points at 50% accuracy, {100 * proportion_se(0.9, n):.2f} at 90%.")
    lines = [f"# {title}", "", f"{len(rows)} trials. Accuracy is the official VQA metric (%) of the final weights on "
             f"the **{split}** split, mean ± std over seeds.{noise}", ""]
    all_baselines, baselines = baselines, split_baselines(baselines, split)
    cal = calibration(rows, all_baselines)
    if cal:
        lines += [*calibration_markdown(cal), ""]
    head = ["subnetwork", "level", "sparsity %", "seeds", *[_label(m) for m in metrics]]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if baselines:
        lines += ["Baselines that never look at the image (learned on the training split):", ""]
        lines += table[:2]
        for name in ("majority", "blind"):
            b = baselines.get(name, {})
            lines.append("| " + " | ".join([f"*{name}*", "", "", "", *[f"{100 * b[m]:.2f}" if m in b else "–" for m in metrics]]) + " |")
        lines.append("")
    lines += table
    for a in agg:
        cells = [a["subnetwork"], str(a["level"]), f"{100 * a['sparsity']:.1f}", str(a["seeds"])]
        cells += [f"{100 * a[m + '_mean']:.2f} ± {100 * a[m + '_std']:.2f}" if f"{m}_mean" in a else "–" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    dense = next((a for a in agg if a["subnetwork"] == DENSE), None)
    if baselines and dense:
        blind = baselines.get("blind", {})
        gaps = [f"{_label(m)} {100 * (dense[m + '_mean'] - blind[m]):+.1f}" for m in metrics if m in blind and f"{m}_mean" in dense]
        lines += ["", "Dense minus the blind baseline (points): " + ", ".join(gaps) + "."]
    comps = comparisons(rows)
    if comps:
        margin = 100 * EQUIVALENCE_MARGIN
        lines += ["", f"Paired differences in overall accuracy (points; same seed, mean and 95% interval over seeds), "
                  f"{len(comps)} comparisons. **Bold**: the interval excludes zero. p: paired t-test; Holm p: adjusted "
                  f"over these {len(comps)} (a claimed difference needs Holm p < 0.05). Matches dense: two one-sided "
                  f"tests, the 90% interval inside ±{margin:g} points (an interval that merely includes 0 is not a match).",
                  "", "| comparison | level | sparsity % | difference [95% CI] | p | Holm p | matches dense (±"
                  f"{margin:g}) |", "|---|---|---|---|---|---|---|"]
        for c in comps:
            text = c["diff"].format()
            eq = "" if c["equivalent"] is None else ("yes" if c["equivalent"] else "no")
            lines.append(f"| {c['a']} − {c['b']} | {c['level']} | {100 * c['sparsity']:.1f} | "
                         + (f"**{text}**" if c["diff"].excludes_zero else text)
                         + f" | {_p(c['p'])} | {_p(c['p_holm'])} | {eq} |")
    if frontier:
        lines += ["", *frontier]
    tol = tolerance_table(rows)
    if tol:
        lines += ["", "Largest sparsity whose mean accuracy stays within 1 / 3 points of dense's mean:", "",
                  "| subnetwork | within 1 point | within 3 points |", "|---|---|---|"]
        for sub, t in tol.items():
            cells = [f"{100 * t[p]:.1f}%" if t[p] is not None else "none" for p in (1.0, 3.0)]
            lines.append(f"| {sub} | {cells[0]} | {cells[1]} |")
    plateau = plateau_table(rows)
    if plateau:
        rising = [p for p in plateau if p["rising"]]
        top = sorted(plateau, key=lambda p: -p["gain"])[:5]
        lines += ["", f"Still learning at the end? Accuracy gained over the last quarter of the epochs, mean over "
                  f"seeds: {len(rising)} of {len(plateau)} (subnetwork, level) arms gained more than one point and "
                  f"more than their seed std" + (":" if rising else " (every arm had plateaued). Largest gains:"), "",
                  "| subnetwork | level | epochs | gain (points) | seed std (points) |", "|---|---|---|---|---|"]
        for p in rising or top:
            lines.append(f"| {p['subnetwork']} | {p['level']} | {p['from_epoch']}→{p['to_epoch']} | "
                         f"{100 * p['gain']:+.2f} | {100 * p['noise']:.2f} |")
    agg_regrown = [a for a in agg if "trained_sparsity" in a and a["trained_sparsity"] < a["sparsity"] - 1e-6]
    if agg_regrown:
        lines += ["", "Sparsity left after retraining (%): these masks were applied once and not enforced "
                  "(`training.enforce_mask: false`), so pruned weights moved off zero; measured on the trained "
                  "weights, mean over seeds.", "",
                  "| subnetwork | level | mask sparsity % | after retraining % |", "|---|---|---|---|"]
        for a in agg_regrown:
            lines.append(f"| {a['subnetwork']} | {a['level']} | {100 * a['sparsity']:.1f} | "
                         f"{100 * a['trained_sparsity']:.1f} |")
    points = nominal_table(rows, nominal or [])
    if points:
        lines += ["", "Read off at the nominal sparsities (`pruning.nominal`): the first level whose achieved sparsity "
                  "(of the mask that defines the level: low's for the criteria that follow it) is at or above "
                  "each. Accuracy %, mean ± std over seeds.", "",
                  "| nominal % | subnetwork | level | achieved % | own sparsity % | after retraining % | accuracy |",
                  "|---|---|---|---|---|---|---|"]
        for p in points:
            if p["level"] is None:
                lines.append(f"| {100 * p['nominal']:.0f} | {p['subnetwork']} | not reached | | | | |")
                continue
            after = f"{100 * p['trained_sparsity']:.1f}" if "trained_sparsity" in p else "–"
            lines.append(f"| {100 * p['nominal']:.0f} | {p['subnetwork']} | {p['level']} | {100 * p['achieved']:.1f} | "
                         f"{100 * p['sparsity']:.1f} | {after} | {100 * p['accuracy_mean']:.2f} ± "
                         f"{100 * p['accuracy_std']:.2f} |")
    groups = group_sparsity_table(rows, sparsity or {})
    if groups:
        lines += ["", "Where pruning removes weights: sparsity (%) of each group of layers, mean over seeds "
                  "(each trial's `sparsity.json` has every layer).", "",
                  "| subnetwork | level | overall | " + " | ".join(GROUPS) + " |", "|---|---|---|" + "---|" * len(GROUPS)]
        for g in groups:
            lines.append(f"| {g['subnetwork']} | {g['level']} | {100 * g['sparsity']:.1f} | "
                         + " | ".join(f"{100 * g[k]:.1f}" if k in g else "–" for k in GROUPS) + " |")
    return "\n".join(lines) + "\n"


# -- figures -----------------------------------------------------------------------


def _remaining_axis(ax, max_sparsity: float) -> None:
    """x = weights remaining on a log scale (LTH convention), labelled as sparsity %."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [t for t in (0, 20, 50, 70, 80, 90, 95, 98, 99) if t <= 100 * max_sparsity + 1]
    ax.set_xticks([100 - t for t in ticks])
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sparsity (% of prunable weights removed)")


def _y_range(values: list[float], floor_span: float = 30.0) -> tuple[float, float]:
    """A y range holding every value, never narrower than ``floor_span`` points (noise must look like noise)."""
    lo, hi = min(values), max(values)
    if hi - lo < floor_span:
        mid = (lo + hi) / 2
        lo, hi = mid - floor_span / 2, mid + floor_span / 2
    lo, hi = max(0.0, lo), min(100.0, hi)
    if hi - lo < floor_span:  # pinned at 0 or 100
        lo, hi = (0.0, floor_span) if lo == 0.0 else (100.0 - floor_span, 100.0)
    pad = 0.05 * (hi - lo)  # markers at 0 or 100 stay whole
    return lo - pad, hi + pad


def _is_control(name: str) -> bool:
    """A registered control (drawn as points); names this process's registry lacks count as criteria (curves)."""
    try:
        return subnetworks.control(name) is not None
    except ValueError:  # a plugin's subnetwork, read back where the plugin is not importable
        return False


def _informative(rows: list[dict], metric: str) -> bool:
    """Whether ``metric``'s panel shows something the overall panel does not: some trial has it, and it differs
    from overall somewhere (one answer type or question kind that covers every question repeats overall)."""
    have = [r for r in rows if metric in r]
    return bool(have) and (len(have) < len(rows) or any(abs(r[metric] - r["accuracy"]) > 1e-12 for r in have))


def plot(rows: list[dict], path: str | Path, title: str, baselines: Optional[dict] = None) -> None:
    """Accuracy vs sparsity per subnetwork (mean, band = ±1 std over seeds), dense and the baselines as lines.

    One panel per answer type (overall, yes/no, number, other); a second row
    per question kind when the data has a few (the synthetic task's count /
    attribute / exist / spatial). A panel that would repeat overall (no trial
    has it, or it covers every question) is left out. Controls without a chain
    (scratch) are drawn as single points at 0%.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    kinds = [k for k in kind_columns(rows) if _informative(rows, k)]
    panels = [[(m, label) for m, label in PANELS.items() if m == "accuracy" or _informative(rows, m)]]
    if 0 < len(kinds) <= MAX_KIND_PANELS:
        panels.append([(k, k[len("accuracy_"):]) for k in kinds])
    ncols = max(len(r) for r in panels)
    alone = ncols == 1 and len(panels) == 1  # one panel: wider, with the legend beside it
    size = (10.0, 5.6) if alone else (4.4 * ncols, 4.3 * len(panels))
    fig, axes = plt.subplots(len(panels), ncols, figsize=size, dpi=100, squeeze=False)
    dense = next((a for a in agg if a["subnetwork"] == DENSE), None)
    subs = sorted({a["subnetwork"] for a in agg} - {DENSE}, key=lambda s: (subnetworks.order(s), s))
    max_sparsity = max((a["sparsity"] for a in agg), default=0.0)
    for row, items in zip(axes, panels):
        for ax in row[len(items):]:
            ax.axis("off")
        for ax, (metric, label) in zip(row, items):
            values = []
            for sub in subs:
                pts = sorted((a for a in agg if a["subnetwork"] == sub and f"{metric}_mean" in a), key=lambda a: a["level"])
                if not pts:
                    continue
                color, marker = subnetworks.style(sub)
                control = _is_control(sub)
                if pts[0]["level"] > 0 and dense and f"{metric}_mean" in dense and not control:
                    pts = [dense] + pts  # a criterion's curve starts at the dense model
                xs = [100 * (1 - a["sparsity"]) for a in pts]
                ys = [100 * a[f"{metric}_mean"] for a in pts]
                es = [100 * a[f"{metric}_std"] for a in pts]
                values += ys
                style = "-" if len(pts) > 1 and not control else "none"
                # Curves above the reference lines: a subnetwork that sits exactly on dense stays visible.
                ax.plot(xs, ys, ls=style, marker=marker, ms=5.5 if style == "none" else 4.5, lw=1.6, color=color,
                        label=sub, zorder=3)
                if len(pts) > 1 and style != "none":
                    ax.fill_between(xs, [y - e for y, e in zip(ys, es)], [y + e for y, e in zip(ys, es)], color=color,
                                    alpha=0.18, lw=0, zorder=2)
                else:
                    ax.errorbar(xs, ys, yerr=es, ls="none", color=color, capsize=3, zorder=3)
            if dense and f"{metric}_mean" in dense:
                ax.axhline(100 * dense[f"{metric}_mean"], color="black", ls="--", lw=1, label=DENSE, zorder=1)
                values.append(100 * dense[f"{metric}_mean"])
            for name, (ls, text) in BASELINE_STYLE.items():
                value = (baselines or {}).get(name, {}).get(metric)
                if value is not None:
                    ax.axhline(100 * value, color="gray", ls=ls, lw=1.2, label=text, zorder=1)
                    values.append(100 * value)
            if values:
                ax.set_ylim(*_y_range(values))
            _remaining_axis(ax, max_sparsity)
            ax.set_title(label)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("VQA accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if alone:
        fig.legend(handles, labels, loc="center right", fontsize=9, frameon=False)
        fig.suptitle(title, fontsize=11)
        fig.tight_layout(rect=(0, 0, 0.78, 1))
    else:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 9), fontsize=9, frameon=False)
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def plot_latency(rows: list[dict], latency: dict, path: str | Path, title: str) -> bool:
    """Accuracy against inference time relative to dense, one panel per device and batch size of
    ``latency.json`` (``lxsweep latency``): each subnetwork's levels (mean, bars ±1 std over seeds), dense at 1.0. False
    (nothing drawn) when no measured trial has a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_trial = {r["trial"]: r for r in rows}
    entries = [e for e in latency.values() if isinstance(e, dict) and set(e.get("trials", {})) & set(by_trial)]
    if not entries:
        return False
    fig, axes = plt.subplots(1, len(entries), figsize=(6.4 * len(entries), 4.8), dpi=100, squeeze=False)
    for ax, entry in zip(axes[0], entries):
        points: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
        for name, t in entry["trials"].items():
            if name in by_trial:
                r = by_trial[name]
                points[(r["subnetwork"], r["level"])].append((t["vs_dense"], 100 * r["accuracy"]))
        subs = sorted({s for s, _ in points}, key=lambda s: (subnetworks.order(s), s))
        for sub in subs:
            color, marker = ("black", "*") if sub == DENSE else subnetworks.style(sub)
            levels = sorted(lv for s, lv in points if s == sub)
            # mean, and bars of ±1 std over seeds, of the time ratio and of the accuracy (seed noise against signal)
            x_stats = [_mean_std([x for x, _ in points[(sub, lv)]]) for lv in levels]
            y_stats = [_mean_std([y for _, y in points[(sub, lv)]]) for lv in levels]
            xs, xe = [m for m, _ in x_stats], [sd for _, sd in x_stats]
            ys, ye = [m for m, _ in y_stats], [sd for _, sd in y_stats]
            ax.errorbar(xs, ys, xerr=xe, yerr=ye, ls="-" if len(xs) > 1 and sub != DENSE else "none", marker=marker,
                        color=color, label=sub, lw=1.4, ms=11 if sub == DENSE else 5, capsize=2, elinewidth=0.8,
                        zorder=4 if sub == DENSE else 3)
            if sub != DENSE:
                for x, y, lv in zip(xs, ys, levels):
                    ax.annotate(str(lv), (x, y), fontsize=7, color=color, xytext=(3, 3), textcoords="offset points")
        ax.axvline(1.0, color="black", ls="--", lw=1)
        ax.set_xlabel("inference time relative to dense (median ratio; < 1 is faster)")
        ax.set_ylabel(f"{evaluated_on(rows)} accuracy (%)")
        ax.set_title(f"{entry['device']}, batch {entry['batch']}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_curves(rows: list[dict], path: str | Path, title: str) -> None:
    """Validation accuracy after each epoch, mean over seeds: one panel per subnetwork, one line per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    sparsity: dict[tuple[str, int], float] = {}
    for r in rows:
        hist = [h["accuracy"] for h in r.get("history", []) if "accuracy" in h]
        if hist:
            curves[r["subnetwork"]][r["level"]].append(hist)
            sparsity[(r["subnetwork"], r["level"])] = r["sparsity"]
    subs = sorted(curves, key=lambda s: (subnetworks.order(s), s))
    if not subs:
        return
    cols = min(len(subs), 3)
    nrows = math.ceil(len(subs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), dpi=100, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax in axes.flat[len(subs):]:
        ax.axis("off")
    for ax, sub in zip(axes.flat, subs):
        levels = sorted(curves[sub])
        for level in levels:
            runs = curves[sub][level]
            length = min(len(h) for h in runs)
            mean = [100 * statistics.fmean(h[i] for h in runs) for i in range(length)]
            shade = cmap(sparsity[(sub, level)] / 1.0)
            ax.plot(range(1, length + 1), mean, color=shade, marker="o", ms=2.5, lw=1.2,
                    label=f"{100 * sparsity[(sub, level)]:.0f}%")
        ax.set_title(sub)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2, title="sparsity", title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_where_pruned(rows: list[dict], sparsity: dict[str, dict], path: str | Path, title: str) -> bool:
    """Sparsity of each group of layers against overall sparsity, one panel per subnetwork with a mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = group_sparsity_table(rows, sparsity)
    subs = sorted({g["subnetwork"] for g in table}, key=subnetworks.order)
    if not subs:
        return False
    fig, axes = plt.subplots(1, len(subs), figsize=(4.2 * len(subs), 3.8), dpi=100, squeeze=False)
    colors = {"language": "#1f77b4", "vision": "#2ca02c", "cross": "#d62728", "pooler": "#7f7f7f"}
    for ax, sub in zip(axes[0], subs):
        pts = [g for g in table if g["subnetwork"] == sub]
        xs = [100 * g["sparsity"] for g in pts]
        for group in GROUPS:
            ys = [100 * g[group] for g in pts if group in g]
            if len(ys) == len(xs):
                ax.plot(xs, ys, marker="o", ms=3, color=colors[group], label=group)
        ax.plot([0, 100], [0, 100], color="black", lw=0.8, ls=":", label="uniform")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_title(sub)
        ax.set_xlabel("overall sparsity (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("group sparsity (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def report_title(store: Store) -> str:
    """The experiment's name and hash from the store's ``experiment.yaml``; else the store directory's name."""
    import yaml

    try:
        record = yaml.safe_load(store.read_bytes(EXPERIMENT_FILE))
        return f"{record['name']} ({record['hash']})"
    except (OSError, yaml.YAMLError, KeyError, TypeError):  # none, or unreadable: the directory names the store
        return Path(store.root).name


def report_nominal(store: Store) -> list[float]:
    """The experiment's ``pruning.nominal`` read-off points from the store's ``experiment.yaml`` (none if unreadable)."""
    import yaml

    try:
        record = yaml.safe_load(store.read_bytes(EXPERIMENT_FILE))
        return [float(x) for x in (record.get("pruning") or {}).get("nominal") or []]
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return []


def _frontier_section(store: Store, rows: list[dict]) -> list[str]:
    """:func:`frontier_markdown` for the store's experiment (nothing when it cannot be read: a warning was given)."""
    from lxsweep.config import read_experiment
    from lxsweep.errors import ConfigError

    try:
        exp = read_experiment(store)
        recorded = store.read_json(SEARCH_FILE) if store.exists(SEARCH_FILE) else None
    except (ConfigError, CorruptStoreFile):
        return []
    return frontier_markdown(exp, rows, recorded if isinstance(recorded, dict) else None)


def _read_latency(store: Store, warn: Callable[[str], None] = _stderr) -> Optional[dict]:
    """``latency.json`` (``lxsweep latency``), or None; a damaged one costs only its figure, with a warning."""
    if not store.exists(LATENCY_FILE):
        return None
    try:
        latency = store.read_json(LATENCY_FILE)
    except CorruptStoreFile as exc:
        warn(f"lxsweep: warning: skipped {exc.path}: {exc.why}; re-run `lxsweep latency {store.root}` to measure again")
        return None
    return latency if isinstance(latency, dict) else None


def _import_plugins(store: Store, warn: Callable[[str], None] = _stderr) -> None:
    """Import the plugins the store's experiment names, so their subnetworks' comparisons and styles are known.

    A plugin that is gone (or an unreadable ``experiment.yaml``) costs only its rows' comparisons: one warning.
    """
    from lxsweep.config import read_experiment
    from lxsweep.errors import ConfigError

    if store.exists(EXPERIMENT_FILE):
        try:
            read_experiment(store)
        except ConfigError as exc:
            warn(f"lxsweep: warning: {exc}; reporting without the plugins it names (no comparisons for their rows)")


def write_report(store: Store, nominal: Optional[list[float]] = None, trials: Optional[Iterable[str]] = None,
                 out: Optional[str | Path] = None, say: Callable[[str], None] = lambda line: None) -> list[str]:
    """Write the report files (:data:`REPORT_FILES`) into ``<store>/report`` (or the local directory ``out``).

    ``say`` gets the rewind-point check (:func:`calibration_summary`) when the store has one.
    ``nominal``: the sparsities to read off (default: the store's recorded ``pruning.nominal``).
    ``trials``: report only these finished trials (an experiment's grid; default: every trial in the store).
    Returns the written files' paths.
    """
    import tempfile

    _import_plugins(store)
    rows = load_rows(store, with_history=True)
    if trials is not None:
        wanted = set(trials)
        rows = [r for r in rows if r["trial"] in wanted]
    if not rows:
        return []
    title = report_title(store)
    baselines = load_baselines(store)
    cal = calibration(rows, baselines)
    if cal:
        say(calibration_summary(cal))
    sparsity = load_group_sparsity(store, rows)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes) -> str:
        if out is None:
            store.write_bytes(report_path(name), data)
            return store.path(report_path(name))
        (Path(out) / name).write_bytes(data)
        return str(Path(out) / name)

    csv_name, md_name, png_name, curves_name, where_name = REPORT_FILES
    written = [put(csv_name, to_csv(rows).encode()),
               put(md_name, to_markdown(rows, title, baselines, sparsity,
                                        report_nominal(store) if nominal is None else nominal,
                                        _frontier_section(store, rows) if store.exists(EXPERIMENT_FILE) else None).encode())]
    with tempfile.TemporaryDirectory() as tmp:
        split = evaluated_on(rows)
        figures = [(png_name, lambda p: plot(rows, p, f"{title}: {split} accuracy vs sparsity (mean, band ±1 std over "
                                                      "seeds)", split_baselines(baselines, split))),
                   (curves_name, lambda p: plot_curves(rows, p, f"{title}: validation accuracy per epoch (mean over seeds)")),
                   (where_name, lambda p: plot_where_pruned(rows, sparsity, p, f"{title}: where pruning removes weights"))]
        latency = _read_latency(store)
        if latency:
            figures.append((LATENCY_FIGURE, lambda p: plot_latency(
                rows, latency, p, f"{title}: accuracy against inference time (mean, bars ±1 std over seeds; label: level)")))
        for name, draw in figures:
            path = Path(tmp) / name
            draw(path)
            if path.exists():
                written.append(put(name, path.read_bytes()))
    return written
