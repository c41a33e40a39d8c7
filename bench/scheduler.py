"""Scheduler efficiency on a simulated paper grid: makespan vs the lower bound.

The searcher's rule (release a trial when its parent is done, longest
remaining path first) is simulated with lxsweep.plan.Plan.makespan, the same
ordering code the Tune searcher uses. Trials take one unit of time each.

    python bench/scheduler.py [--levels 10] [--seeds 3] [--slots 8]
"""
from __future__ import annotations

import argparse

from lxsweep.config import from_dict
from lxsweep.plan import Plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--slots", type=int, nargs="+", default=[4, 8, 16, 32])
    args = ap.parse_args()
    plan = Plan(from_dict({"pruning": {"levels": args.levels, "subnetworks": ["low", "high", "random"]},
                           "seeds": list(range(args.seeds))}))
    print(f"grid: {args.levels} levels x low/high/random x {args.seeds} seeds = {plan.fine_tunes} fine-tunes "
          f"(critical path {plan.critical_path}; a flat grid redoing chain prefixes: {plan.naive_fine_tunes})")
    print(f"{'slots':>5} {'bound':>7} {'dag+priority':>13} {'eff':>6} {'dag, level order':>17} {'eff':>6} {'naive grid':>11} {'eff':>6}")
    for slots in args.slots:
        bound = max(plan.critical_path, plan.fine_tunes / slots)
        best = plan.makespan(slots)
        flat = plan.makespan(slots, order="level")
        naive = max(plan.critical_path, plan.naive_fine_tunes / slots)  # even its lower bound is this long
        print(f"{slots:>5} {bound:>7.2f} {best:>13.2f} {bound / best:>6.3f} {flat:>17.2f} {bound / flat:>6.3f} "
              f"{naive:>11.2f} {bound / naive:>6.3f}")


if __name__ == "__main__":
    main()
