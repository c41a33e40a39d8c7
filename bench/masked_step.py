"""Cost of keeping pruned weights at zero: masked training step vs dense step.

The trainer's own step, ``lxsweep.train.train_step`` (forward under the
runtime's autocast, LXMERT's BCE loss, backward, grad clip 5.0, AdamW with
weight decay 0.01 on matrices from ``lxsweep.train.adamw``) on a fixed batch;
the data loader and the LR scheduler are left out. Variants,
on the same weights and the same 50% low-magnitude mask:

- ``dense``:   no masking at all (the baseline);
- ``lxsweep``: ``MaskEnforcer.zero_grads()`` before clipping, ``apply()`` after the step
               (one fused ``torch._foreach_mul_`` each);
- ``naive``:   the same two multiplications as a Python loop, ``p.grad.mul_(m)`` and
               ``p.data.mul_(m)`` per tensor;
- ``prune``:   ``torch.nn.utils.prune`` reparametrisation (``weight_orig * weight_mask``
               recomputed in a forward pre-hook; ``global_unstructured`` installs it with
               ``custom_from_mask``, which is called here directly with the same mask).

Variants are interleaved (see ``_common.interleaved``); overhead is the median
over repetitions of (variant time / dense time) - 1.

    python bench/masked_step.py                 # smoke, h384 and base on CPU
    python bench/masked_step.py --quick         # smoke and h384, fewer repetitions (< 60 s)
    python bench/masked_step.py --device cuda --model base   # the GPU recipe, samples/s and MFU
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, median_ratio, print_machine, table  # noqa: E402

from lxsweep import model as lxmodel  # noqa: E402
from lxsweep import pruning  # noqa: E402
from lxsweep.config import from_dict  # noqa: E402
from lxsweep.train import Runtime, adamw, forward, runtime, train_step, vqa_loss  # noqa: E402

GRAD_CLIP = 5.0  # lxsweep's default training.grad_clip
WEIGHT_DECAY = 0.01
SPARSITY = 0.5
SMOKE = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "l_layers": 2, "x_layers": 2, "r_layers": 1}
# Dense bf16 tensor-core peaks (no sparsity), for the MFU estimate; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


@dataclass(frozen=True)
class Shape:
    """A model and its inputs: LxmertConfig keywords, vocabulary, answers, regions, tokens, CPU batch."""

    config: dict
    vocab: int
    answers: int
    feat_dim: int
    boxes: int
    tokens: int
    batch: int
    steps: int  # steps per timed call
    reps: int  # interleaved repetitions (full run)


MODELS = {
    # experiments/smoke.yaml on the synthetic task (43-word vocabulary, 19 answers).
    "smoke": Shape(SMOKE, 43, 19, 64, 10, 16, 32, steps=4, reps=25),
    # The anchor: the smoke model widened to hidden 384 (6 heads, 4x intermediate), same inputs.
    "h384": Shape({**SMOKE, "hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536},
                  43, 19, 64, 10, 16, 32, steps=2, reps=15),
    # LXMERT-base: LxmertConfig() defaults (768/12/3072, 9/5/5 layers), VQA's 3,129 answers, 36x2048 regions.
    "base": Shape({}, 30522, 3129, 2048, 36, 20, 4, steps=1, reps=5),
}


def make_batch(shape: Shape, batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed random batch in the loader's layout (10 answer labels with soft scores per question)."""
    g = torch.Generator().manual_seed(seed)
    x1y1 = torch.rand(batch, shape.boxes, 2, generator=g) * 0.5
    out = {
        "input_ids": torch.randint(1, shape.vocab, (batch, shape.tokens), generator=g),
        "attention_mask": torch.ones(batch, shape.tokens, dtype=torch.int64),
        "token_type_ids": torch.zeros(batch, shape.tokens, dtype=torch.int64),
        "features": torch.randn(batch, shape.boxes, shape.feat_dim, generator=g).abs(),
        "boxes": torch.cat([x1y1, x1y1 + torch.rand(batch, shape.boxes, 2, generator=g) * 0.5], dim=2),
        "target_labels": torch.randint(0, shape.answers, (batch, 10), generator=g),
        "target_scores": torch.rand(batch, 10, generator=g),
    }
    return {k: v.to(device) for k, v in out.items()}


def make_optimizer(model: torch.nn.Module, rt: Runtime) -> torch.optim.AdamW:
    return adamw(model, lr=1e-5, weight_decay=WEIGHT_DECAY, rt=rt)


class NaiveMasks:
    """The straightforward enforcement: one in-place multiply per tensor, in a Python loop."""

    def __init__(self, model: torch.nn.Module, mask: pruning.Mask):
        params = dict(model.named_parameters())
        self.pairs = [(params[n], m.to(device=params[n].device, dtype=params[n].dtype)) for n, m in mask.items()]

    @torch.no_grad()
    def zero_grads(self) -> None:
        for p, m in self.pairs:
            if p.grad is not None:  # the last cross layer's vision branch never reaches the answer head
                p.grad.mul_(m)

    @torch.no_grad()
    def apply(self) -> None:
        for p, m in self.pairs:
            p.data.mul_(m)


def reparametrise(model: torch.nn.Module, mask: pruning.Mask) -> None:
    """torch.nn.utils.prune's reparametrisation of every masked weight (what global_unstructured installs)."""
    for name, m in mask.items():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        prune.custom_from_mask(module, "weight", m.to(module.weight.device))


def flops_per_sample(model: torch.nn.Module, batch: dict, rt: Runtime) -> tuple[float, float]:
    """(6 x parameters x tokens-per-sample, 3 x forward FLOPs of every nn.Linear as counted by hooks).

    The first is the usual transformer approximation with tokens = text tokens
    + regions; it overcounts LXMERT, whose language layers see only the text
    and whose vision layers only the regions. The second counts each Linear's
    real rows (2 x rows x in x out forward, backward = 2 x forward); attention
    score matmuls are left out (small at 20 tokens and 36 regions).
    """
    params = sum(p.numel() for p in model.parameters())
    tokens = batch["input_ids"].shape[1] + batch["features"].shape[1]
    counted = [0]

    def hook(module, inputs, output):
        counted[0] += 2 * inputs[0].numel() // module.in_features * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            forward(model, batch, rt)
    finally:
        for h in handles:
            h.remove()
    return 6.0 * params * tokens, 3.0 * counted[0] / batch["input_ids"].shape[0]


def peak_flops(override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    name = torch.cuda.get_device_name()
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name:
            return PEAK_BF16_TFLOPS[key] * 1e12
    return None


def bench_model(name: str, shape: Shape, rt: Runtime, batch_size: int, steps: int, reps: int, args) -> list[list]:
    """Build the chosen variants of one model, time them interleaved, return table rows."""
    device = rt.device

    def run(model, optimizer, masks=None):
        def go():
            for _ in range(steps):
                train_step(model, batch, optimizer, rt, masks=masks, grad_clip=GRAD_CLIP)
        return go

    model = lxmodel.build_tiny(shape.config, shape.answers, shape.vocab, shape.feat_dim, seed=0).to(device)
    batch = make_batch(shape, batch_size, device)
    params = pruning.prunable_parameters(model)
    weights = {n: p.detach() for n, p in params.items()}
    mask = pruning.magnitude_mask(weights, pruning.full_mask(weights), SPARSITY)
    variants = {}
    if "prune" in args.variants:  # a second model: at LXMERT-base that is ~3.5 GB more with its optimizer
        reparam_model = copy.deepcopy(model)
        reparametrise(reparam_model, mask)
        variants["prune"] = run(reparam_model, make_optimizer(reparam_model, rt))
    enforcer = pruning.MaskEnforcer(model, mask)  # zeroes the pruned weights of `model`
    naive = NaiveMasks(model, mask)
    optimizer = make_optimizer(model, rt)
    del weights, params

    variants.update({
        "dense": run(model, optimizer),
        "lxsweep": run(model, optimizer, enforcer),
        "naive": run(model, optimizer, naive),
    })
    variants = {k: variants[k] for k in ("dense", "lxsweep", "naive", "prune") if k in args.variants}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    interleaved(variants, reps=1, sync=sync)  # warm-up: optimizer state, allocator, autocast caches
    times = interleaved(variants, reps=reps, sync=sync)

    # The enforcement calls alone (gradients present, as after backward): a low-noise view of the overhead.
    vqa_loss(forward(model, batch, rt), batch).backward()
    mask_ops = interleaved({"lxsweep": lambda: (enforcer.zero_grads(), enforcer.apply()),
                            "naive": lambda: (naive.zero_grads(), naive.apply())}, reps=max(10, 4 * reps), sync=sync)
    optimizer.zero_grad(set_to_none=True)

    total = sum(p.numel() for p in model.parameters())
    masked = sum(m.numel() for m in mask.values())
    print(f"\n{name}: {total / 1e6:.2f}M parameters, {masked / 1e6:.2f}M prunable at sparsity {SPARSITY}, "
          f"batch {batch_size}, {steps} step(s) x {reps} interleaved repetitions")
    per_step = {k: statistics.median(v) / steps for k, v in times.items()}
    flops = flops_per_sample(model, batch, rt) if device.type == "cuda" else None
    peak = peak_flops(args.peak_tflops) if device.type == "cuda" else None
    rows = []
    for variant in variants:
        overhead = "" if variant == "dense" else f"{(median_ratio(times, variant, 'dense') - 1) * 100:+.1f}%"
        ops = statistics.median(mask_ops[variant]) if variant in mask_ops else None
        ops_text = "" if ops is None else f"{ops * 1e3:.2f} ({ops / per_step['dense'] * 100:.1f}%)"
        samples_s = batch_size / per_step[variant]
        row = [name, variant, f"{per_step[variant] * 1e3:.1f}", overhead, ops_text, f"{samples_s:.0f}"]
        if flops:
            row += [f"{f * samples_s / peak * 100:.1f}%" if peak else "n/a (--peak-tflops)" for f in flops]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke and h384 only, few repetitions (< 60 s on 2 cores)")
    parser.add_argument("--model", choices=[*MODELS, "all"], action="append",
                        help="model(s) to run (default: all; with --quick: smoke and h384)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: what a trial uses with resources.cpus_per_worker=1)")
    parser.add_argument("--batch", type=int, help="batch size (default: 32; LXMERT-base on CPU: 4)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default per model)")
    parser.add_argument("--variants", nargs="+", default=["dense", "lxsweep", "naive", "prune"],
                        choices=["dense", "lxsweep", "naive", "prune"])
    parser.add_argument("--peak-tflops", type=float, help="accelerator peak (dense bf16) for the MFU estimate")
    args = parser.parse_args(argv)
    if "dense" not in args.variants:
        parser.error("--variants must include dense (the baseline)")

    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device visible to torch")
        rt = runtime(from_dict({}))  # the trainer's GPU recipe: bf16 autocast, fused AdamW, TF32
    else:
        torch.set_num_threads(args.threads)
        rt = Runtime(torch.device("cpu"))
    names = [m for m in MODELS if args.model is None or m in args.model or "all" in args.model]
    if args.quick and args.model is None:
        names = ["smoke", "h384"]
    print_machine()
    print(f"device {rt.device}, autocast {rt.autocast_dtype}, fused AdamW {rt.fused_adamw}, "
          f"threads {torch.get_num_threads()}")

    headers = ["model", "variant", "ms/step", "overhead vs dense", "mask ops ms (% of dense step)", "samples/s"]
    if rt.device.type == "cuda":
        headers += ["MFU (6·N·T)", "MFU (Linear FLOPs)"]
    rows = []
    for name in names:
        shape = MODELS[name]
        batch = args.batch or (shape.batch if rt.device.type == "cpu" else 32)
        reps = args.reps or (max(3, shape.reps // 3) if args.quick else shape.reps)
        rows += bench_model(name, shape, rt, batch, shape.steps, reps, args)
    print()
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
