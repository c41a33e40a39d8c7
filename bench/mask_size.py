"""Bytes on disk of one LXMERT-base mask: lxsweep's bit-packed file vs a bool safetensors file.

The mask covers the real prunable tensors of ``LxmertForQuestionAnswering(LxmertConfig())``
(meta device, ``pruning.prunable_names``) at 50% sparsity: a global random mask
from ``pruning.random_mask``, so the bits are as incompressible as a real one.
The packed file is read back with ``pruning.load_mask`` and checked equal.

    python bench/mask_size.py [--quick]     # the same work either way (< 60 s)
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lxmert_base_prunable_shapes, print_machine, table  # noqa: E402

from lxsweep import pruning  # noqa: E402

TARGET_BYTES = 25 * 10**6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; the run is already short")
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print_machine()

    shapes = lxmert_base_prunable_shapes()
    mask = pruning.random_mask(shapes, args.sparsity, seed=0, level=1)
    weights = sum(math.prod(s) for s in shapes.values())
    with tempfile.TemporaryDirectory(prefix="lxsweep-mask-size-") as tmp:
        packed_path, bool_path = Path(tmp) / "packed.safetensors", Path(tmp) / "bool.safetensors"
        start = time.perf_counter()
        pruning.save_mask(mask, packed_path, {"trial": "low-L1-s0"})
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = pruning.load_mask(packed_path)
        load_s = time.perf_counter() - start
        if list(loaded) != list(mask) or not all(torch.equal(loaded[n], mask[n]) for n in mask):
            raise SystemExit("the bit-packed mask did not read back equal")
        save_file({n: m.contiguous() for n, m in mask.items()}, str(bool_path))
        packed, plain = packed_path.stat().st_size, bool_path.stat().st_size

    print(f"\n{len(shapes)} tensors, {weights / 1e6:.2f}M weights, sparsity {pruning.sparsity(mask):.4f}; "
          f"1 bit per weight is {weights / 8 / 1e6:.2f} MB")
    print(table(["format", "bytes", "MB", "vs bool", "target <= 25 MB"], [
        ["lxsweep save_mask (packbits)", packed, f"{packed / 1e6:.2f}", f"{packed / plain:.3f}",
         "met" if packed <= TARGET_BYTES else f"missed by {(packed - TARGET_BYTES) / 1e6:.2f} MB"],
        ["bool safetensors", plain, f"{plain / 1e6:.2f}", "1.000", ""],
    ]))
    print(f"save_mask {save_s:.2f}s, load_mask {load_s:.2f}s (round trip checked equal)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
