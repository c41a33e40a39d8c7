"""GPU acceptance for the real-size path: what one GPU does with LXMERT-base under the trainer's own recipe.

Measured on the device ``lxsweep.train.runtime`` picks (bf16 autocast, fused
AdamW and TF32 on a GPU), with the trainer's ``train_step`` and a 50% mask
enforced as in a pruned trial:

1. step throughput (questions/s) and MFU at batch 32 and 64, and the peak GPU
   memory of each (``torch.cuda.max_memory_allocated``);
2. the masked step's overhead over the dense step (interleaved, medians);
3. whether the loader keeps the GPU busy: the real path (``prepare-vqa`` on
   files in the official formats at 36 x 2048 regions, the node's token cache,
   ``make_loader`` with ``--loader-workers``) feeding ``train_step``; the share
   of wall time the GPU waits for a batch;
4. whether two runs from the same seed on the same batches give the same
   losses (bit for bit, or the largest difference).

It prints a table, the projected hours of one paper.yaml fine-tune from the
measured step (for ``resources.fine_tune_hours``) and writes ``--json``.
``--dry`` runs the same code on the CPU with a tiny model and a few images,
so the suite keeps it working where no GPU is.

    bash bench/gpu_acceptance.sh --json gpu.json     # one GPU, <= 8 minutes
    bash bench/gpu_acceptance.sh --dry --json dry.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from masked_step import GRAD_CLIP, MODELS, SMOKE, Shape, flops_per_sample, make_batch, peak_flops  # noqa: E402
from realsize import TRAIN_QUESTIONS, VALID_QUESTIONS, answer_vocabulary, write_features, write_split, write_tokenizer  # noqa: E402

from lxsweep import pruning  # noqa: E402
from lxsweep.config import from_dict  # noqa: E402
from lxsweep.train import adamw, runtime, train_step  # noqa: E402

DRY = Shape({**SMOKE, "visual_feat_dim": 2048}, 30522, 3129, 2048, 36, 20, 8, steps=1, reps=1)


def _model(shape: Shape, rt, seed: int = 0):
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    from lxsweep.model import use_sdpa_attention

    torch.manual_seed(seed)
    cfg = LxmertConfig(**{**shape.config, "num_qa_labels": shape.answers})
    return use_sdpa_attention(LxmertForQuestionAnswering(cfg).to(rt.device))


def _masked(model, seed: int = 0):
    params = pruning.prunable_parameters(model)
    mask = pruning.random_mask({n: p.shape for n, p in params.items()}, 0.5, seed=seed, level=1)
    return pruning.MaskEnforcer(model, mask)


def _sync(rt) -> None:
    if rt.device.type == "cuda":
        torch.cuda.synchronize()


def throughput(shape: Shape, rt, batch: int, steps: int) -> dict:
    """Dense and masked steps interleaved at ``batch``: medians, questions/s, MFU, peak memory."""
    model = _model(shape, rt)
    enforcer = _masked(model)
    optimizer = adamw(model, lr=1e-5, weight_decay=0.01, rt=rt)
    data = make_batch(shape, batch, rt.device)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: dict[str, list[float]] = {"dense": [], "masked": []}
    for i in range(steps + 3):  # three warm-ups of each: optimizer state, allocator, kernels
        for name, masks in (("dense", None), ("masked", enforcer)):
            _sync(rt)
            t0 = time.perf_counter()
            train_step(model, data, optimizer, rt, masks=masks, grad_clip=GRAD_CLIP)
            _sync(rt)
            if i >= 3:
                times[name].append(time.perf_counter() - t0)
    dense, masked = statistics.median(times["dense"]), statistics.median(times["masked"])
    _, counted = flops_per_sample(model, data, rt)
    peak = peak_flops(None) if rt.device.type == "cuda" else None
    out = {"batch": batch, "dense_step_s": dense, "masked_step_s": masked,
           "questions_per_s": batch / masked, "masked_overhead": masked / dense - 1,
           "flops_per_question": counted, "mfu": (counted * batch / masked / peak) if peak else None,
           "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if rt.device.type == "cuda" else None}
    del model, optimizer, enforcer
    if rt.device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def prepared_store(root: Path, images: int, questions: int) -> Path:
    """A prepared store at real region shapes, through prepare-vqa from files in the official formats."""
    from lxsweep.data.prepare import prepare_vqa
    from lxsweep.data.vqa_json import write_ans2label

    raw = root / "raw"
    raw.mkdir(parents=True)
    answers = answer_vocabulary()
    ids = np.arange(1, images + 1) * 7
    train = write_split(raw, "train", questions, ids, answers, seed=1)
    valid = write_split(raw, "val", max(questions // 8, 1), ids, answers, seed=2)
    tsv = write_features(raw / "obj36.tsv", ids, seed=3)
    ans2label = write_ans2label(raw / "trainval_ans2label.json", answers)
    return prepare_vqa(root / "prepared", splits={"train": train, "minival": valid}, feature_tsvs=[tsv],
                       ans2label=ans2label)


def loader_feeds(shape: Shape, rt, store: Path, tokenizer_dir: Path, batch: int, steps: int, workers: int) -> dict:
    """``train_step`` fed by the real loader: the share of wall time spent waiting for the next batch."""
    from lxsweep.data.loader import make_loader
    from lxsweep.data.prepared import load_vqa_store
    from lxsweep.data.tokens import question_tokens
    from lxsweep.model import load_tokenizer

    data = load_vqa_store(store)
    tokens = question_tokens(load_tokenizer(str(tokenizer_dir)), data.train.questions, shape.tokens,
                             cache=store.parent / "cache")
    model = _model(shape, rt)
    enforcer = _masked(model)
    optimizer = adamw(model, lr=1e-5, weight_decay=0.01, rt=rt)
    waited = stepped = 0.0
    done = 0
    while done < steps + 3:
        it = iter(make_loader(data.train, tokens, batch, rt, shuffle_seed=done, num_workers=workers))
        while done < steps + 3:
            t0 = time.perf_counter()
            try:
                cpu = next(it)
            except StopIteration:
                break
            batch_on = {k: v.to(rt.device, non_blocking=True) for k, v in cpu.items()}
            t1 = time.perf_counter()
            train_step(model, batch_on, optimizer, rt, masks=enforcer, grad_clip=GRAD_CLIP)
            _sync(rt)
            t2 = time.perf_counter()
            if done >= 3:
                waited, stepped = waited + (t1 - t0), stepped + (t2 - t1)
            done += 1
    return {"loader_workers": workers, "loader_wait_share": waited / (waited + stepped),
            "fed_questions_per_s": batch * steps / (waited + stepped)}


def same_losses(shape: Shape, rt, batch: int, steps: int) -> dict:
    """Two runs from seed 0 on the same batches: identical losses, or the largest difference."""
    runs = []
    for _ in range(2):
        model = _model(shape, rt, seed=0)
        enforcer = _masked(model)
        optimizer = adamw(model, lr=5e-5, weight_decay=0.01, rt=rt)
        runs.append([float(train_step(model, make_batch(shape, batch, rt.device, seed=i), optimizer, rt,
                                      masks=enforcer, grad_clip=GRAD_CLIP)) for i in range(steps)])
        del model, optimizer
    diff = max(abs(a - b) for a, b in zip(*runs))
    return {"losses_identical": runs[0] == runs[1], "losses_max_abs_diff": diff, "losses": runs[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="CPU, a tiny model at real region shapes, a few images")
    ap.add_argument("--json")
    ap.add_argument("--steps", type=int, help="timed steps per measurement (default 30; --dry 2)")
    ap.add_argument("--images", type=int, help="images in the loader's store (default 1024; --dry 8)")
    ap.add_argument("--loader-workers", type=int, default=4)
    args = ap.parse_args(argv)
    exp = from_dict({"training": {"precision": "auto"}})
    rt = runtime(exp)
    if rt.device.type != "cuda" and not args.dry:
        raise SystemExit("gpu_acceptance: no GPU here (torch.cuda.is_available() is False) — run it on a GPU node, "
                         "or pass --dry to check the script on the CPU")
    shape = DRY if args.dry else MODELS["base"]
    steps = args.steps or (2 if args.dry else 30)
    images = args.images or (8 if args.dry else 1024)
    workers = 0 if args.dry else args.loader_workers
    device = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu"
    out: dict = {"device": device, "dry": args.dry, "torch": torch.__version__, "autocast": str(rt.autocast_dtype)}
    t0 = time.time()
    out["throughput"] = [throughput(shape, rt, b, steps) for b in ((4, 8) if args.dry else (32, 64))]
    with tempfile.TemporaryDirectory(prefix="lxsweep-gpu-") as tmp:
        root = Path(tmp)
        store = prepared_store(root, images, questions=max(images * 4, 32 * (steps + 4)))
        tokenizer = write_tokenizer(root / "tokenizer")
        out["loader"] = loader_feeds(shape, rt, store, tokenizer, out["throughput"][0]["batch"], steps, workers)
    out["determinism"] = same_losses(shape, rt, out["throughput"][0]["batch"], max(steps, 3))
    # One paper.yaml fine-tune (4 epochs of VQA v2 train at batch 32, minival scored each epoch) at the
    # measured masked step; evaluation priced at a third of a training step per question (forward only).
    step32 = out["throughput"][0]["masked_step_s"]
    per_q = step32 / out["throughput"][0]["batch"]
    hours = 4 * (TRAIN_QUESTIONS * per_q + VALID_QUESTIONS * per_q / 3) / 3600
    out["paper_fine_tune_hours"] = hours
    out["wall_s"] = time.time() - t0

    rows = [(f"batch {t['batch']}: questions/s (masked)", f"{t['questions_per_s']:.0f}") for t in out["throughput"]]
    rows += [(f"batch {t['batch']}: MFU / peak GPU memory",
              f"{t['mfu']:.1%} / {t['peak_gpu_memory_gb']:.1f} GB" if t["mfu"] is not None else "n/a on the CPU")
             for t in out["throughput"]]
    rows += [(f"batch {t['batch']}: masked step overhead", f"{t['masked_overhead']:+.1%}") for t in out["throughput"]]
    rows += [(f"loader ({out['loader']['loader_workers']} workers): GPU waits", f"{out['loader']['loader_wait_share']:.1%} "
              f"of wall time ({out['loader']['fed_questions_per_s']:.0f} questions/s fed)"),
             ("two runs, same losses", "identical" if out["determinism"]["losses_identical"] else
              f"max |difference| {out['determinism']['losses_max_abs_diff']:.3g}"),
             ("paper.yaml fine-tune, projected", f"{hours:.2f} h"),
             ("wall time", f"{out['wall_s']:.0f} s")]
    print(f"device: {device} (autocast {rt.autocast_dtype}, torch {torch.__version__})")
    for label, value in rows:
        print(f"{label:<42} {value}")
    if not args.dry:
        print("\nresources:")
        print(f"  fine_tune_hours: {hours:.3g}")
        print(f"  fine_tune_basis: \"measured: bench/gpu_acceptance.sh on {device}, {step32 * 1e3:.1f} ms per masked "
              f"step at batch 32 (bf16), 4 epochs of {TRAIN_QUESTIONS:,} questions + minival; start-up not included\"")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
