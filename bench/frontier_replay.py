"""What frontier search would have cost on a finished grid, and whether it finds the grid's answers.

Replays ``search.mode: frontier`` (lxsweep/frontier.py) over a store that ran
the full grid: each trial the search chooses "finishes" with the result the
grid recorded for it (trials are deterministic in their key, so a real
frontier launch trains the same trials to the same results), until it wants
nothing more. Prints the trials it took against the grid's, and the answers
(where each subnetwork stops matching dense, where the ticket collapses) of
the search and of the full grid side by side: on validation (what the search
reads) and on the reported split.

    python bench/frontier_replay.py                                  # the committed demo stores (both designs)
    python bench/frontier_replay.py runs/demo-<hash> --set search.min_seeds=3 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxsweep import frontier  # noqa: E402
from lxsweep.config import apply_override, from_record  # noqa: E402
from lxsweep.plan import Plan  # noqa: E402
from lxsweep.report import load_rows  # noqa: E402
from lxsweep.store import EXPERIMENT_FILE, Store  # noqa: E402

COMMITTED = sorted(str(p.parent) for p in (ROOT / "docs" / "results").glob("**/demo-*/experiment.yaml"))


def _key(a: frontier.Answer) -> tuple:
    return a.subnetwork, a.matches_up_to, a.first_miss, a.collapse


def replay_store(path: str, overrides: list[str]) -> dict:
    import yaml

    store = Store(path)
    raw = dict(yaml.safe_load(Path(path, EXPERIMENT_FILE).read_text()))
    for item in ["search.mode=frontier", *overrides]:
        apply_override(raw, item)
    exp = from_record(raw, str(Path(path, EXPERIMENT_FILE)))
    grid = {k.name for k in Plan(exp).trials}
    rows = [r for r in load_rows(store) if r["trial"] in grid]
    if len(rows) < len(grid):
        raise SystemExit(f"{path}: {len(grid) - len(rows)} of the grid's {len(grid)} trials are not finished — "
                         f"replay needs the full grid")
    order, found = frontier.replay(exp, rows)
    chosen = {r["trial"]: r for r in rows if r["trial"] in set(order)}
    shown = Path(path).resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    out = {"store": str(shown), "grid_trials": len(grid), "frontier_trials": len(order),
           "ratio": round(len(order) / len(grid), 3), "settings": raw["search"], "order": order, "splits": {}}
    for split, metric in (("validation", frontier.valid_accuracy), ("reported", frontier.reported_accuracy)):
        search = frontier.answers(exp, chosen.values(), metric)
        full = frontier.answers(exp, rows, metric)
        out["splits"][split] = {"frontier": [frontier.describe(exp, a, exp.sparsity) for a in search],
                                "grid": [frontier.describe(exp, a, exp.sparsity) for a in full],
                                "same": [_key(a) for a in search] == [_key(a) for a in full]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="*", default=COMMITTED, help="finished grid stores (default: the committed demo stores)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="search.KEY=VALUE")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    results = []
    for path in args.stores:
        r = replay_store(path, args.overrides)
        results.append(r)
        print(f"{r['store']}: frontier search took {r['frontier_trials']} of the grid's {r['grid_trials']} trials "
              f"({100 * r['ratio']:.0f}%)")
        for split, s in r["splits"].items():
            print(f"  {split}: answers {'the same as' if s['same'] else 'DIFFERENT from'} the full grid's")
            for f, g in zip(s["frontier"], s["grid"]):
                print(f"    search: {f}\n    grid:   {g}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
