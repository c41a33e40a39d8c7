"""How long one fine-tune of an experiment takes, for ``resources.fine_tune_hours`` (what ``lxsweep plan`` prices).

Two ways, each printing the two lines to paste under ``resources:``
(``fine_tune_hours`` and ``fine_tune_basis``, which says how the hours came about):

- ``--count`` (an estimate, any machine): FLOPs per question of the experiment's model, forward and backward,
  counted by torch's ``FlopCounterMode`` on one small batch (attention included), times the fine-tune's
  questions (epochs x training questions, plus one forward pass over the validation questions per epoch),
  at an *assumed* utilisation (``--mfu``) of an accelerator's peak (``--peak-tflops``);
- ``--steps N`` (a measurement, on the machine that will run the trials): times N optimizer steps of the
  trainer's own step (``lxsweep.train.train_step`` with the recipe ``runtime()`` picks: bf16 autocast, fused
  AdamW and TF32 on a GPU; a 50% mask enforced, as in a pruned trial) and evaluation batches on this device,
  then extrapolates steps per second to the whole fine-tune. It prints the device name.

The inputs are random tensors of the experiment's shapes (``training.batch_size`` questions of
``data.max_tokens`` tokens, 36 regions of 2048 features for VQA); the data loader, start-up and
checkpointing are left out (see docs/PERFORMANCE.md for those).

    python bench/fine_tune_time.py experiments/paper.yaml --count --questions 632117 --valid-questions 25994
    python bench/fine_tune_time.py experiments/paper.yaml --steps 50          # on one GPU of the cluster

The model's shape comes from ``model.pretrained``'s config; ``--base-config`` uses ``LxmertConfig()``'s
defaults instead (LXMERT-base's shape: 768 hidden, 9/5/5 layers) where the hub cannot be reached.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_machine  # noqa: E402
from masked_step import GRAD_CLIP, Shape, make_batch  # noqa: E402

from lxsweep import pruning  # noqa: E402
from lxsweep.config import load_experiment  # noqa: E402
from lxsweep.train import Runtime, adamw, forward, runtime, train_step, vqa_loss  # noqa: E402

VQA_BOXES, VQA_FEAT_DIM = 36, 2048  # LXMERT's Faster R-CNN regions (prepare-vqa's store records its own)


def experiment_shape(exp, args) -> tuple:
    """(LxmertConfig, Shape) of one training batch of ``exp``."""
    from transformers import LxmertConfig

    s = exp.data.synthetic
    if exp.model.pretrained is None:  # the embedded task's tiny model, pretrained later from model.config
        cfg = LxmertConfig(**{"visual_pos_dim": 4, "visual_feat_dim": s.feat_dim, **exp.model.config})
    else:
        cfg = LxmertConfig() if args.base_config else LxmertConfig.from_pretrained(exp.model.pretrained)
    synthetic = exp.data.source == "synthetic"
    boxes, feat_dim = (s.num_boxes, s.feat_dim) if synthetic else (VQA_BOXES, cfg.visual_feat_dim)
    answers = args.answers or (cfg.num_qa_labels if synthetic else 3129)
    cfg.num_qa_labels = answers
    shape = Shape({}, cfg.vocab_size, answers, feat_dim, boxes, exp.data.max_tokens, exp.training.batch_size,
                  steps=1, reps=1)
    return cfg, shape


def question_counts(exp, args) -> tuple[int, int]:
    """(training questions per epoch, validation questions): the flags, else the prepared store or the task."""
    if args.questions is not None:
        return args.questions, args.valid_questions or 0
    if exp.data.source == "synthetic":
        s, d = exp.data.synthetic, exp.data
        return min(s.train_questions, d.limit_train or s.train_questions), min(s.valid_questions, d.limit_valid or s.valid_questions)
    from lxsweep.data.prepared import read_manifest

    splits = read_manifest(exp.data.path)["splits"]  # VQAStoreError when the store is not here: pass the flags
    return splits[exp.data.train_split]["questions"], splits[exp.data.valid_split]["questions"]


def count_flops(cfg, shape: Shape, rt: Runtime) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per question, counted by FlopCounterMode on a batch of 2."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LxmertForQuestionAnswering

    model = LxmertForQuestionAnswering(cfg)
    batch = make_batch(shape, 2, rt.device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        forward(model, batch, rt)
    fwd = fc.get_total_flops() / 2
    with FlopCounterMode(display=False) as fc:
        vqa_loss(forward(model, batch, rt), batch).backward()
    return fwd, fc.get_total_flops() / 2


def time_steps(cfg, shape: Shape, rt: Runtime, steps: int, eval_batch: int) -> tuple[float, float]:
    """(seconds per training step, seconds per evaluation batch), medians after a warm-up, on ``rt.device``."""
    from transformers import LxmertForQuestionAnswering

    model = LxmertForQuestionAnswering(cfg).to(rt.device)
    params = pruning.prunable_parameters(model)
    mask = pruning.random_mask({n: p.shape for n, p in params.items()}, 0.5, seed=0, level=1)
    enforcer = pruning.MaskEnforcer(model, mask)
    optimizer = adamw(model, lr=5e-5, weight_decay=0.01, rt=rt)
    batch = make_batch(shape, shape.batch, rt.device)
    sync = torch.cuda.synchronize if rt.device.type == "cuda" else (lambda: None)

    def timed(fn, n: int) -> float:
        fn()  # warm-up: optimizer state, allocator, autocast caches, kernels
        times = []
        for _ in range(n):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    step = timed(lambda: train_step(model, batch, optimizer, rt, masks=enforcer, grad_clip=GRAD_CLIP), steps)
    model.eval()
    big = make_batch(shape, eval_batch, rt.device)
    with torch.no_grad():
        evaluate = timed(lambda: forward(model, big, rt), max(3, steps // 10))
    return step, evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiment file, e.g. experiments/paper.yaml")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--count", action="store_true", help="count FLOPs and estimate at an assumed MFU")
    how.add_argument("--steps", type=int, help="time this many training steps on this device and extrapolate")
    parser.add_argument("--questions", type=int, help="training questions per epoch (default: the prepared store's)")
    parser.add_argument("--valid-questions", type=int, help="validation questions (default: the prepared store's)")
    parser.add_argument("--answers", type=int, help="answer vocabulary size (default 3129 for VQA)")
    parser.add_argument("--mfu", type=float, default=0.10, help="--count: assumed model FLOPs utilisation (0.10)")
    parser.add_argument("--peak-tflops", type=float, default=312.0,
                        help="--count: the accelerator's dense bf16 peak (312 = A100)")
    parser.add_argument("--base-config", action="store_true",
                        help="LxmertConfig() defaults (LXMERT-base's shape) instead of model.pretrained's config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="experiment override")
    args = parser.parse_args(argv)

    exp = load_experiment(args.experiment, args.set, check=False)
    cfg, shape = experiment_shape(exp, args)
    train_q, valid_q = question_counts(exp, args)
    epochs, batch = exp.training.epochs, exp.training.batch_size
    steps = epochs * -(-train_q // batch)
    eval_batches = epochs * -(-valid_q // exp.training.eval_batch_size)
    work = (f"{epochs} epochs x {train_q:,} questions (batch {batch}: {steps:,} steps) + {epochs} evaluations of "
            f"{valid_q:,} questions, {shape.tokens} tokens and {shape.boxes} regions each")
    print_machine()

    if args.count:
        rt = Runtime(torch.device("cpu"))
        fwd, both = count_flops(cfg, shape, rt)
        total = epochs * train_q * both + epochs * valid_q * fwd
        seconds = total / (args.mfu * args.peak_tflops * 1e12)
        print(f"per question: forward {fwd / 1e9:.4g} GFLOP, forward+backward {both / 1e9:.4g} GFLOP (FlopCounterMode)")
        print(f"fine-tune: {work} = {total:.3g} FLOP")
        print(f"at {args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s: {seconds / 3600:.2f} h")
        basis = (f"estimate: {total:.2g} FLOP ({epochs} x {train_q:,} training questions x {both / 1e9:.3g} GFLOP "
                 f"forward+backward + {epochs} x {valid_q:,} validation questions x {fwd / 1e9:.3g} GFLOP forward, "
                 f"counted by bench/fine_tune_time.py --count) at an assumed {args.mfu:.0%} MFU of "
                 f"{args.peak_tflops:g} TFLOP/s; loader and start-up not included")
    else:
        rt = runtime(exp)  # the trainer's own choice: the GPU and its recipe where there is one
        name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        step, evaluate = time_steps(cfg, shape, rt, args.steps, exp.training.eval_batch_size)
        seconds = steps * step + eval_batches * evaluate
        print(f"device {name}: {step * 1e3:.1f} ms per training step ({batch / step:.0f} questions/s), "
              f"{evaluate * 1e3:.1f} ms per evaluation batch of {exp.training.eval_batch_size}")
        print(f"fine-tune: {work}: {seconds / 3600:.2f} h")
        basis = (f"measured: bench/fine_tune_time.py --steps {args.steps} on {name}, {step * 1e3:.1f} ms per step "
                 f"(autocast {rt.autocast_dtype}, mask enforced), extrapolated to {work}; loader and start-up not included")
    print("\nresources:")
    print(f"  fine_tune_hours: {seconds / 3600:.3g}")
    print(f"  fine_tune_basis: \"{basis}\"")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
