"""The optimizer recipe shared by fine-tuning and pretraining: LXMERT's AdamW, its schedule and gradient clipping.

Both take torch's multi-tensor paths (``foreach``; ``fused`` AdamW on GPU):
one kernel per step over all parameters instead of a Python loop per tensor,
which on the tiny CPU model saves ~3% of a step (bench/step_recipe.py).
"""
from __future__ import annotations

from typing import Iterable

import torch


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups with weight decay on the matrices only (not on biases and LayerNorm)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over :func:`decay_groups`; fused when ``fused``, else multi-tensor."""
    groups = decay_groups(model, weight_decay)
    if fused:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so their global L2 norm is at most ``max_norm``; returns the norm before."""
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)


def warmup_then_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LXMERT's BertAdam schedule: linear warmup over ``warmup_steps`` (none if 0), then linear decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
