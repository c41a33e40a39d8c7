"""What the fine-tune's step recipe buys: transformers' eager attention and per-tensor AdamW vs lxsweep's.

The trainer's own step (``lxsweep.train.train_step``: forward, LXMERT's BCE
loss, backward, mask enforcement, clip 5.0, AdamW, on a fixed batch with a
50% low-magnitude mask) on the embedded study's model (experiments/demo.yaml:
hidden 64, 2/1/1 layers, 10 regions of 64 features, 12 tokens, batch 64),
in four variants built from the same weights:

- ``before``:  transformers' eager ``LxmertAttention``, AdamW and clipping per tensor (torch's CPU default);
- ``sdpa``:    :class:`lxsweep.model.SdpaAttention` only;
- ``foreach``: the multi-tensor AdamW and clipping of :mod:`lxsweep.optim` only;
- ``lxsweep``: both (what a trial runs).

Interleaved (``_common.interleaved``); the speedup is the median over
repetitions of (before / variant).

    python bench/step_recipe.py             # 15 repetitions of 40 steps, ~1.5 min
    python bench/step_recipe.py --quick     # 5 repetitions, ~30 s
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, median_ratio, print_machine, table  # noqa: E402
from masked_step import Shape, make_batch  # noqa: E402

from lxsweep import model as lxmodel  # noqa: E402
from lxsweep import optim  # noqa: E402
from lxsweep import pruning  # noqa: E402
from lxsweep.train import Runtime, train_step  # noqa: E402

DEMO = Shape({"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "l_layers": 2, "x_layers": 1,
              "r_layers": 1, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
             36, 21, 64, 10, 12, 64, steps=40, reps=15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions (~30 s)")
    parser.add_argument("--reps", type=int)
    args = parser.parse_args(argv)
    reps = args.reps or (5 if args.quick else DEMO.reps)
    torch.set_num_threads(1)  # a trial's thread count with resources.cpus_per_worker: 1
    rt = Runtime(torch.device("cpu"))
    base = lxmodel.build_tiny(DEMO.config, DEMO.answers, DEMO.vocab, DEMO.feat_dim, seed=0)
    weights = {n: p.detach() for n, p in pruning.prunable_parameters(base).items()}
    mask = pruning.magnitude_mask(weights, pruning.full_mask(weights), 0.5)
    batch = make_batch(DEMO, DEMO.batch, rt.device)

    def variant(sdpa: bool, multi_tensor: bool):
        model = copy.deepcopy(base)
        if sdpa:
            lxmodel.use_sdpa_attention(model)
        optimizer = torch.optim.AdamW(optim.decay_groups(model, 0.01), lr=5e-4, foreach=multi_tensor)
        enforcer = pruning.MaskEnforcer(model, mask)

        def clip(params, max_norm):
            return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=multi_tensor)

        def go():
            shipped, optim.clip_gradients = optim.clip_gradients, clip  # train_step looks it up at call time
            try:
                for _ in range(DEMO.steps):
                    train_step(model, batch, optimizer, rt, masks=enforcer, grad_clip=5.0)
            finally:
                optim.clip_gradients = shipped
        return go

    variants = {"before": variant(False, False), "sdpa": variant(True, False),
                "foreach": variant(False, True), "lxsweep": variant(True, True)}
    print_machine()
    interleaved(variants, reps=1)  # warm-up: optimizer state, allocator
    times = interleaved(variants, reps=reps)
    rows = []
    for name in variants:
        ms = statistics.median(times[name]) / DEMO.steps * 1e3
        speedup = "" if name == "before" else f"{median_ratio(times, 'before', name):.3f}x"
        rows.append([name, f"{ms:.1f}", speedup, f"{DEMO.batch / ms * 1e3:.0f}"])
    print(f"\nthe demo model, batch {DEMO.batch}, {DEMO.steps} steps x {reps} interleaved repetitions, 1 thread")
    print(table(["variant", "ms/step", "speedup vs before", "samples/s"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
