"""One global low-magnitude mask over LXMERT-base's ~182M prunable weights: time and peak memory.

The prunable tensors are the real ones (names and shapes of
``LxmertForQuestionAnswering(LxmertConfig())`` built on the meta device and
selected by ``pruning.prunable_names``), filled with seeded Gaussian weights
whose scale differs per tensor, so the global threshold prunes layers unevenly.
Methods, each in a fresh subprocess so peak memory is its own:

- ``lxsweep``:  ``pruning.magnitude_mask`` (three streaming radix-histogram passes, exact count);
- ``kthvalue``: ``torch.kthvalue`` over the concatenated ``|w|``, then ``|w| > threshold`` per tensor
                (the straightforward way; equal magnitudes at the threshold are all removed);
- ``prune``:    ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount=k)``
                (slow, run once, skipped with ``--quick``).

Peak extra memory is VmHWM minus VmRSS, with VmHWM reset (``/proc/self/clear_refs``)
after the weights and the current (all-kept) mask exist: the inputs are not
counted, the output mask is. Masks are compared bit for bit: the same number
kept, and equal wherever ``|w|`` differs from the threshold.

    python bench/global_mask.py            # lxsweep and kthvalue 3x interleaved, prune once
    python bench/global_mask.py --quick    # lxsweep and kthvalue once (< 60 s)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lxmert_base_prunable_shapes, mib, print_machine, proc_status, reset_peak_rss, table  # noqa: E402

from lxsweep import pruning  # noqa: E402

METHODS = ("lxsweep", "kthvalue", "prune")


def random_weights(seed: int) -> dict[str, torch.Tensor]:
    """Seeded float32 weights in the shapes of LXMERT-base's prunable tensors; std 0.01-0.05 per tensor."""
    shapes = lxmert_base_prunable_shapes()
    g = torch.Generator().manual_seed(seed)
    scales = 0.01 + 0.04 * torch.rand(len(shapes), generator=g)
    return {name: torch.randn(shape, generator=g) * float(s) for (name, shape), s in zip(shapes.items(), scales)}


def kthvalue_mask(weights: dict[str, torch.Tensor], sparsity: float) -> pruning.Mask:
    magnitudes = torch.cat([w.reshape(-1).abs() for w in weights.values()])
    k = pruning.removed_count(sparsity, magnitudes.numel())
    threshold = torch.kthvalue(magnitudes, k).values
    del magnitudes
    return {name: w.abs() > threshold for name, w in weights.items()}


def prune_mask(weights: dict[str, torch.Tensor], sparsity: float) -> pruning.Mask:
    from torch.nn.utils import prune

    modules = {}
    for name, w in weights.items():
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(w, requires_grad=False)  # shares the weights' storage
        modules[name] = module
    total = sum(w.numel() for w in weights.values())
    prune.global_unstructured([(m, "weight") for m in modules.values()], pruning_method=prune.L1Unstructured,
                              amount=pruning.removed_count(sparsity, total))
    return {name: m.weight_mask.bool() for name, m in modules.items()}


def worker(method: str, seed: int, sparsity: float, out: Path) -> dict:
    """Run one method on fresh weights in this process; write its mask, return time and memory."""
    weights = random_weights(seed)
    current = pruning.full_mask(weights)  # an input of magnitude_mask, as in write_child_masks
    reset_peak_rss()
    before = proc_status()["VmRSS"]
    start = time.perf_counter()
    if method == "lxsweep":
        mask = pruning.magnitude_mask(weights, current, sparsity)
    elif method == "kthvalue":
        mask = kthvalue_mask(weights, sparsity)
    else:
        mask = prune_mask(weights, sparsity)
    seconds = time.perf_counter() - start
    peak_extra = proc_status()["VmHWM"] - before

    # Outside the measurement: the mask and its ties, flattened in canonical (sorted name) order.
    names = sorted(weights)
    threshold = max(float(weights[n][~mask[n]].abs().max()) for n in names if not bool(mask[n].all()))
    np.packbits(torch.cat([mask[n].reshape(-1) for n in names]).numpy()).tofile(out / f"{method}.mask")
    np.packbits(torch.cat([(weights[n].abs() == threshold).reshape(-1) for n in names]).numpy()).tofile(out / f"{method}.ties")
    return {"method": method, "seconds": seconds, "peak_extra": peak_extra,
            "weights_bytes": sum(w.numel() * w.element_size() for w in weights.values()),
            "total": sum(w.numel() for w in weights.values()), "kept": sum(int(m.sum()) for m in mask.values()),
            "threshold": threshold}


def run_worker(method: str, args, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--seed", str(args.seed), "--sparsity", str(args.sparsity),
           "--threads", str(args.threads), "--out", str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(out: Path, a: str, b: str) -> tuple[int, int]:
    """(positions where the masks of a and b differ, how many of those are not ties at a's threshold)."""
    ma, mb = np.fromfile(out / f"{a}.mask", np.uint8), np.fromfile(out / f"{b}.mask", np.uint8)
    ties = np.fromfile(out / f"{a}.ties", np.uint8)
    diff = np.bitwise_xor(ma, mb)
    return _bits(diff), _bits(diff & ~ties)


def _bits(packed: np.ndarray) -> int:
    return int(np.unpackbits(packed).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="lxsweep and kthvalue once, no prune (< 60 s)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved runs of lxsweep and kthvalue (default 3)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per method (default 1, as a trial)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.seed, args.sparsity, args.out)))
        return 0

    print_machine()
    reps = 1 if args.quick else args.reps
    with tempfile.TemporaryDirectory(prefix="lxsweep-global-mask-") as tmp:
        out = Path(tmp)
        results: dict[str, list[dict]] = {"lxsweep": [], "kthvalue": []}
        for r in range(reps):  # alternate which goes first
            for method in (["lxsweep", "kthvalue"] if r % 2 == 0 else ["kthvalue", "lxsweep"]):
                results[method].append(run_worker(method, args, out))
        if not args.quick:
            results["prune"] = [run_worker("prune", args, out)]
        agreement = {m: compare(out, "lxsweep", m) for m in results if m != "lxsweep"}

    first = results["lxsweep"][0]
    weights_bytes, total = first["weights_bytes"], first["total"]
    target_kept = total - pruning.removed_count(args.sparsity, total)
    print(f"\n{total / 1e6:.2f}M prunable weights ({mib(weights_bytes)} float32), sparsity {args.sparsity}, "
          f"exact kept count {target_kept}, threshold |w| = {first['threshold']:.9g}")
    rows = []
    base_seconds = statistics.median(r["seconds"] for r in results["lxsweep"])
    for method, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak_extra"] for r in runs)
        kept = runs[0]["kept"]
        if method == "lxsweep":
            same = "reference"
        else:
            differ, off_ties = agreement[method]
            same = f"{differ} differ, {off_ties} off the threshold"
        rows.append([method, len(runs), f"{seconds:.2f}", f"{seconds / base_seconds:.1f}x", mib(peak), f"{peak / weights_bytes:.2f}x",
                     f"{kept - target_kept:+d}", same])
    print(table(["method", "runs", "seconds (median)", "time vs lxsweep", "peak extra RSS", "x weights' bytes", "kept - exact",
                 "vs lxsweep mask"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
