"""Inference latency of a ticket against dense: which sparsity pattern is actually faster, on this device.

Side by side in one run, interleaved (each repetition times every variant once, in a rotating order),
LXMERT forward passes (the VQA answer scores, eval mode, no grad) at batch 1 and batch 32:

- ``dense``:        the model;
- ``unstructured``: the low-magnitude ticket at ``--sparsity`` (exact zeros in dense tensors: what
                    `lxsweep export` writes without --shrink);
- ``shrunk``:       the ``structured`` ticket (heads and feed-forward neurons ranked together) at
                    ``--sparsity`` of the weights they cover, physically removed
                    (lxsweep/shrunk_lxmert.py: what `lxsweep export --shrink` writes);
- ``2:4``:          the 2:4 ticket through ``torch.sparse.to_sparse_semi_structured`` (CUDA with compute
                    capability >= 8.0 and fp16/bf16 only; elsewhere the row says why it did not run).

The weights are random (latency does not depend on their values) and the masks are made by lxsweep's own
criteria from them. Ratios are medians of per-repetition time ratios against dense; `--json` writes all.

    python bench/latency.py                         # LXMERT-base shapes, CPU (and the GPU if present)
    python bench/latency.py --model demo --reps 30  # the embedded study's tiny model
    python bench/latency.py --sparsity 0.3 0.5 0.7  # several sparsities in one run
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import interleaved, median_ratio, print_machine, table  # noqa: E402

from lxsweep import pruning  # noqa: E402
from lxsweep.model import use_sdpa_attention  # noqa: E402
from lxsweep.shrunk_lxmert import apply_shrink  # noqa: E402

DEMO = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "l_layers": 2, "x_layers": 1,
        "r_layers": 1, "visual_feat_dim": 64, "vocab_size": 64, "num_qa_labels": 21}
# name: (LxmertConfig keywords, tokens, regions)
MODELS = {"base": ({"num_qa_labels": 3129}, 20, 36), "demo": (DEMO, 12, 10)}


def build(config: dict, seed: int = 0) -> torch.nn.Module:
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    torch.manual_seed(seed)
    return use_sdpa_attention(LxmertForQuestionAnswering(LxmertConfig(**config))).eval()


def inputs(model: torch.nn.Module, batch: int, tokens: int, regions: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(batch)
    c = model.config
    out = {"input_ids": torch.randint(1, c.vocab_size, (batch, tokens), generator=g),
           "attention_mask": torch.ones(batch, tokens, dtype=torch.long),
           "token_type_ids": torch.zeros(batch, tokens, dtype=torch.long),
           "visual_feats": torch.randn(batch, regions, c.visual_feat_dim, generator=g),
           "visual_pos": torch.rand(batch, regions, 4, generator=g)}
    return {k: v.to(device) for k, v in out.items()}


def masked(model: torch.nn.Module, mask: pruning.Mask) -> torch.nn.Module:
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].mul_(m.to(params[name].device))
    return out


def semi_structured(model: torch.nn.Module, mask: pruning.Mask) -> torch.nn.Module:
    """The 2:4 ticket with every masked Linear weight as a ``SparseSemiStructuredTensor`` (raises where unsupported)."""
    from torch.sparse import to_sparse_semi_structured

    out = masked(model, mask)
    modules = dict(out.named_modules())
    for name in mask:
        linear = modules[name[: -len(".weight")]]
        linear.weight = torch.nn.Parameter(to_sparse_semi_structured(linear.weight.detach()), requires_grad=False)
    return out


def variants(model: torch.nn.Module, sparsity: float, device: torch.device) -> tuple[dict, dict]:
    """The models to time, and per variant its parameter count or why it cannot run here."""
    weights = pruning.prunable_parameters(model)
    full = pruning.full_mask(weights)
    heads = model.config.num_attention_heads
    low = pruning.magnitude_mask(weights, full, sparsity)
    structured = pruning.structured_mask(weights, full, sparsity, heads, ("head", "neuron"))
    shrunk = apply_shrink(masked(model, structured), pruning.shrink_spec(structured, heads))
    out = {"dense": model, "unstructured": masked(model, low), "shrunk": shrunk}
    notes = {k: f"{sum(p.numel() for p in m.parameters()):,} parameters" for k, m in out.items()}
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        try:
            out["2:4"] = semi_structured(model.half(), pruning.nm_mask(weights, full)).half()
            notes["2:4"] = "to_sparse_semi_structured, fp16"
        except (RuntimeError, ValueError) as exc:  # a shape or build the kernels refuse
            notes["2:4"] = f"not run: {str(exc).splitlines()[0][:120]}"
    else:
        notes["2:4"] = ("not run: semi-structured kernels need CUDA compute capability >= 8.0"
                        if device.type == "cuda" else "not run: no 2:4 kernels on CPU")
    return {k: m.to(device) for k, m in out.items()}, notes


def bench(name: str, sparsity: float, batches: list[int], reps: int, device: torch.device) -> list[dict]:
    config, tokens, regions = MODELS[name]
    base = build(config)
    models, notes = variants(base, sparsity, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for batch in batches:
        x = inputs(base, batch, tokens, regions, device)
        calls = {}
        for k, m in models.items():
            feed = {n: (v.half() if v.is_floating_point() and k == "2:4" else v) for n, v in x.items()}

            def call(m=m, feed=feed):
                with torch.no_grad():
                    m(**feed)
            call()  # warm up (allocations, kernel selection)
            calls[k] = call
        times = interleaved(calls, reps, sync)
        for k in models:
            rows.append({"model": name, "device": device.type, "sparsity": sparsity, "batch": batch, "variant": k,
                         "ms": 1000 * statistics.median(times[k]),
                         "speedup": 1.0 / median_ratio(times, k, "dense") if k != "dense" else 1.0, "note": notes[k]})
        for k in set(notes) - set(models):
            rows.append({"model": name, "device": device.type, "sparsity": sparsity, "batch": batch, "variant": k,
                         "ms": None, "speedup": None, "note": notes[k]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="base")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = [r for d in devices for s in args.sparsity for r in bench(args.model, s, args.batch, args.reps, d)]
    print(table(["model", "device", "sparsity", "batch", "variant", "ms (median)", "speedup vs dense", "note"],
                [[r["model"], r["device"], f"{100 * r['sparsity']:.0f}%", r["batch"], r["variant"],
                  "–" if r["ms"] is None else f"{r['ms']:.2f}", "–" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                  r["note"]] for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
