"""Reports from the store alone: results.csv, results.md and the paper's figure.

Everything is computed from the trials' ``metrics.json`` files, so a report
can be regenerated at any time (during a sweep, after it, on another machine).
"""
from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from lxsweep import subnetworks
from lxsweep.store import TRIALS_DIR, Store, metrics_path, report_path
from lxsweep.subnetworks import DENSE

ACCURACY_COLUMNS = ("accuracy", "accuracy_yesno", "accuracy_number", "accuracy_other")
PANELS = {"accuracy": "overall", "accuracy_yesno": "yes/no", "accuracy_number": "number", "accuracy_other": "other"}
REPORT_FILES = ("results.csv", "results.md", "accuracy_vs_sparsity.png")


def load_rows(store: Store) -> list[dict]:
    """One row per finished trial, from ``trials/*/metrics.json``, in (subnetwork, level, seed) order."""
    rows = []
    for name in store.listdir(TRIALS_DIR):
        if store.exists(metrics_path(name)):
            m = store.read_json(metrics_path(name))
            rows.append({k: v for k, v in m.items() if k not in ("history", "child_masks")})
    return sorted(rows, key=lambda r: (subnetworks.order(r["subnetwork"]), r["subnetwork"], r["level"], r["seed"]))


def kind_columns(rows: list[dict]) -> list[str]:
    """Per-question-kind accuracy columns (synthetic task), beyond the answer types."""
    return sorted({k for r in rows for k in r if k.startswith("accuracy_") and k not in ACCURACY_COLUMNS})


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (subnetwork, level); dense rows count as level 0 of every subnetwork."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["subnetwork"], r["level"])].append(r)
    metrics = [*ACCURACY_COLUMNS, *kind_columns(rows)]
    out = []
    for (sub, level), rs in sorted(groups.items(), key=lambda x: (x[0][1], x[0][0])):
        a = {"subnetwork": sub, "level": level, "seeds": len(rs),
             "sparsity": statistics.fmean(r["sparsity"] for r in rs) if level else 0.0}
        for m in metrics:
            vals = [r[m] for r in rs if m in r]
            if vals:
                a[f"{m}_mean"], a[f"{m}_std"] = _mean_std(vals)
        out.append(a)
    return out


def tolerance_table(agg: list[dict], points: tuple[float, ...] = (1.0, 3.0)) -> dict[str, dict[float, float | None]]:
    """For each subnetwork, the largest sparsity whose mean accuracy is within ``points`` of dense."""
    dense = next((a for a in agg if a["subnetwork"] == DENSE), None)
    if dense is None:
        return {}
    base = dense["accuracy_mean"] * 100
    out: dict[str, dict[float, float | None]] = {}
    for sub in sorted({a["subnetwork"] for a in agg} - {DENSE}):
        levels = sorted((a for a in agg if a["subnetwork"] == sub), key=lambda a: a["level"])
        out[sub] = {}
        for p in points:
            ok = [a["sparsity"] for a in levels if a["accuracy_mean"] * 100 >= base - p]
            out[sub][p] = max(ok) if ok else None
    return out


def to_csv(rows: list[dict]) -> str:
    cols = ["trial", "subnetwork", "level", "seed", "target_sparsity", "sparsity", "sparsity_all",
            *ACCURACY_COLUMNS, *kind_columns(rows), "best_accuracy", "train_loss", "epochs", "duration_s"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def to_markdown(rows: list[dict], title: str) -> str:
    agg = aggregate(rows)
    kinds = kind_columns(rows)
    lines = [f"# {title}", "", f"{len(rows)} trials. Accuracy is the official VQA metric (%), mean ± std over seeds.", ""]
    head = ["subnetwork", "level", "sparsity %", "seeds", "overall", "yes/no", "number", "other", *[k[len('accuracy_'):] for k in kinds]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in agg:
        cells = [a["subnetwork"], str(a["level"]), f"{100 * a['sparsity']:.1f}", str(a["seeds"])]
        for m in [*ACCURACY_COLUMNS, *kinds]:
            cells.append(f"{100 * a[m + '_mean']:.2f} ± {100 * a[m + '_std']:.2f}" if f"{m}_mean" in a else "–")
        lines.append("| " + " | ".join(cells) + " |")
    tol = tolerance_table(agg)
    if tol:
        lines += ["", "Largest sparsity whose mean accuracy stays within 1 / 3 points of dense:", "",
                  "| subnetwork | within 1 point | within 3 points |", "|---|---|---|"]
        for sub, t in tol.items():
            cells = [f"{100 * t[p]:.1f}%" if t[p] is not None else "none" for p in (1.0, 3.0)]
            lines.append(f"| {sub} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | Path, title: str) -> None:
    """The paper's figure: accuracy vs sparsity per subnetwork, error bars over seeds, dense reference.

    One panel per answer type (overall, yes/no, number, other); a second row
    per question kind when the data has kinds beyond the answer types (the
    synthetic task's count / attribute / exist / spatial).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    kinds = kind_columns(rows)
    panels = [list(PANELS.items())] + ([[(k, k[len("accuracy_"):]) for k in kinds]] if kinds else [])
    ncols = max(len(r) for r in panels)
    fig, axes = plt.subplots(len(panels), ncols, figsize=(16, 4.2 * len(panels)), dpi=100, squeeze=False)
    dense = next((a for a in agg if a["subnetwork"] == DENSE), None)
    # Every subnetwork in the results, known to the registry or not (a plugin's, read back elsewhere).
    subs = sorted({a["subnetwork"] for a in agg} - {DENSE}, key=lambda s: (subnetworks.order(s), s))
    for row, items in zip(axes, panels):
        for ax in row[len(items):]:
            ax.axis("off")
        for ax, (metric, label) in zip(row, items):
            for sub in subs:
                pts = sorted((a for a in agg if a["subnetwork"] == sub and f"{metric}_mean" in a), key=lambda a: a["level"])
                if dense and f"{metric}_mean" in dense and pts and pts[0]["level"] > 0:
                    pts = [dense] + pts  # a pruned subnetwork starts at the dense model (scratch is its own point)
                color, marker = subnetworks.style(sub)
                xs = [100 * a["sparsity"] for a in pts]
                ys = [100 * a[f"{metric}_mean"] for a in pts]
                es = [100 * a[f"{metric}_std"] for a in pts]
                ax.errorbar(xs, ys, yerr=es, marker=marker, ms=4, capsize=3, color=color, label=sub, alpha=0.9)
            if dense and f"{metric}_mean" in dense:
                ax.axhline(100 * dense[f"{metric}_mean"], color="gray", ls="--", lw=1, label="dense")
            ax.set_title(label)
            ax.set_xlabel("sparsity (% of prunable weights removed)")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("VQA accuracy (%)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(store: Store) -> list[str]:
    """Write results.csv, results.md and accuracy_vs_sparsity.png into ``<store>/report``."""
    import tempfile

    rows = load_rows(store)
    title = Path(store.root).name
    if not rows:
        return []
    csv_name, md_name, png_name = REPORT_FILES
    store.write_bytes(report_path(csv_name), to_csv(rows).encode())
    store.write_bytes(report_path(md_name), to_markdown(rows, title).encode())
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / png_name
        plot(rows, png, f"{title}: accuracy vs sparsity (mean ± std over seeds)")
        store.write_bytes(report_path(png_name), png.read_bytes())
    return [store.path(report_path(name)) for name in REPORT_FILES]
