"""Per-trial Ray overhead: trial start -> first training step, last step -> trial end, gaps.

Runs a small real sweep (tiny synthetic trials, one at a time) through
`lxsweep launch` and reads the timestamps every trial leaves in the store:
driver.json (the Tune function trial's start/end) and metrics.json
(first/last optimizer step). Also times the whole smoke sweep with --smoke.

    python bench/ray_overhead.py [--trials-levels 2] [--smoke]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxsweep.config import load_experiment  # noqa: E402
from lxsweep.store import Store, driver_path, finished_trials, metrics_path  # noqa: E402

TINY = ["data.synthetic.train_questions=600", "data.synthetic.valid_questions=300",
        "data.synthetic.pretrain_questions=600", "model.pretraining.steps=20", "training.epochs=1",
        "model.pretrained=null", "model.config={hidden_size: 64, num_attention_heads: 4, intermediate_size: 128, l_layers: 2, x_layers: 1, r_layers: 1}",
        "pruning.sparsities=null", "pruning.rate=0.3", "pruning.levels=3",
        "tracking.backend=none", "resources.max_concurrent_trials=1"]


def run(sets: list[str]) -> tuple[float, Store]:
    exp = load_experiment(ROOT / "experiments" / "smoke.yaml", sets)
    args = [sys.executable, "-m", "lxsweep.cli", "launch", str(ROOT / "experiments" / "smoke.yaml"), "--quiet"]
    for s in sets:
        args += ["--set", s]
    t0 = time.time()
    subprocess.run(args, check=True, capture_output=True, text=True)
    return time.time() - t0, Store.for_experiment(exp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="also time the full smoke sweep (the main job)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wall, store = run([*TINY, f"pruning.levels={args.levels}", f"storage={tmp}"])
        rows = []
        for name in sorted(finished_trials(store)):
            m = store.read_json(metrics_path(name))
            d = store.read_json(driver_path(name))
            rows.append((d["started_at"], name, m["first_step_at"] - d["started_at"], d["finished_at"] - m["last_step_at"],
                         m["last_step_at"] - m["first_step_at"], d["finished_at"]))
        rows.sort()
        gaps = [b[0] - a[5] for a, b in zip(rows, rows[1:])]
        print(f"{'trial':<14} {'start->1st step':>16} {'last step->end':>15} {'training':>9}")
        for r in rows:
            print(f"{r[1]:<14} {r[2]:>15.2f}s {r[3]:>14.2f}s {r[4]:>8.2f}s")
        before = statistics.median(r[2] for r in rows)
        after = statistics.median(r[3] for r in rows)
        gap = statistics.median(gaps) if gaps else 0.0
        print(f"median: start->first step {before:.2f}s, last step->trial end {after:.2f}s, "
              f"trial end->next trial start {gap:.2f}s")
        print(f"per-trial Ray overhead (median): {before + after + gap:.2f}s  (goal <= 8 s); "
              f"sweep of {len(rows)} trials in {wall:.1f}s")
        print("note: start->first step includes loading the data and the model inside the worker, "
              "work any trial does with or without Ray.")
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "lxsweep.cli", "launch", str(ROOT / "experiments" / "smoke.yaml"),
                            "--quiet", "--set", f"storage={tmp}"], check=True, capture_output=True)
            print(f"smoke sweep (the main job): {time.time() - t0:.1f}s wall")


if __name__ == "__main__":
    main()
