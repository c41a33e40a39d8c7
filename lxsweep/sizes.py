"""What an experiment needs in bytes: its store, and each node's memory and local disk (``lxsweep plan``).

Counted from the model's config on PyTorch's ``meta`` device (no weights are
made), with the sizes measured at LXMERT-base scale (bench/realsize.py,
docs/PERFORMANCE.md "Real size"):

- a finished trial keeps its weights in ``training.weights_dtype`` (if
  ``training.keep_weights`` selects it), its mask (1 bit per prunable weight)
  and ``metrics.json``; its Ray checkpoints (fp32 weights + AdamW's two
  moments) are deleted when it finishes (``training.keep_checkpoints``), so
  only running trials hold one;
- a Train worker holds fp32 weights, gradients and two AdamW moments, plus
  a checkpoint being written (one more copy of weights and moments);
- a node stages the prepared VQA store (fp16 features, 36 x 2048 per image)
  once on local disk; the pages trials read come from the page cache.
"""
from __future__ import annotations

import json
from pathlib import Path

from lxsweep.config import Experiment
from lxsweep.plan import Plan, keeps_weights

COCO_IMAGES = 123_287  # VQA v2's train2014 + val2014 images: a full prepared store
METRICS_BYTES = 60_000  # a metrics.json with its per-epoch history (measured: 20-60 kB)
ACTIVATIONS_GB_PER_32 = 2.0  # LXMERT-base forward+backward at batch 32, fp32 on CPU (bench/realsize.py); bf16 GPU: less
BASE_PARAMETERS = 218_000_000  # LXMERT-base with a 3,129-answer head: activations scale with the model from there


def parameter_counts(exp: Experiment, num_answers: int = 3129) -> tuple[int, int]:
    """(all parameters, prunable weights) of the experiment's model, built on the meta device."""
    import torch
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    from lxsweep import pruning

    source = exp.model.pretrained
    if source is not None and (Path(source) / "config.json").is_file():
        config = LxmertConfig(**{**json.loads((Path(source) / "config.json").read_text()), "num_qa_labels": num_answers})
    elif source is not None:  # a hub name: LxmertConfig's defaults are unc-nlp/lxmert-base-uncased's
        config = LxmertConfig(num_qa_labels=num_answers)
    else:
        config = LxmertConfig(**{**exp.model.config, "num_qa_labels": num_answers})
    with torch.device("meta"):
        model = LxmertForQuestionAnswering(config)
    total = sum(p.numel() for p in model.parameters())
    prunable = sum(p.numel() for p in pruning.prunable_parameters(model, exp.pruning.scope).values())
    return total, prunable


def needs(exp: Experiment, images: int = COCO_IMAGES) -> dict:
    """Projected store size and per-node memory and disk of ``exp`` (bytes as GB, 1e9)."""
    import torch

    plan = Plan(exp)
    total, prunable = parameter_counts(exp)
    weight_bytes = total * getattr(torch, exp.training.weights_dtype).itemsize
    kept = sum(keeps_weights(exp, k) for k in plan.trials)
    masked = sum(k.level > 0 for k in plan.trials)
    checkpoint = total * 4 * 3  # fp32 weights + AdamW's two moments
    running = exp.resources.max_concurrent_trials or 1
    store = kept * weight_bytes + masked * -(-prunable // 8) + plan.fine_tunes * METRICS_BYTES + running * checkpoint
    activations = ACTIVATIONS_GB_PER_32 * 1e9 * exp.training.batch_size / 32 * min(1.0, total / BASE_PARAMETERS)
    worker_ram = total * 4 * 4 + checkpoint + activations
    features = images * 36 * 2048 * 2 + images * 36 * 4 * 4  # fp16 features + float32 boxes
    gb = lambda n: round(n / 1e9, 3)  # noqa: E731
    return {"parameters": total, "prunable": prunable,
            "store_gb": gb(store), "finished_trial_gb": gb(weight_bytes + prunable / 8 + METRICS_BYTES),
            "checkpoint_gb": gb(checkpoint), "worker_ram_gb": gb(worker_ram),
            # the staged data, plus the checkpoint a trial writes locally before it reaches the store
            "node_disk_gb": gb((features if exp.data.source == "vqa" else 0) + checkpoint),
            "staged_data_gb": gb(features) if exp.data.source == "vqa" else 0.0}
