"""Shared fixtures: small experiments, quiet environments, one thread per torch process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)  # 2-core machines: tests that train must not fight over cores

# A synthetic experiment small enough that a trial takes a few seconds on one core.
TINY = [
    "data.synthetic.train_questions=600",
    "data.synthetic.valid_questions=300",
    "data.synthetic.pretrain_questions=600",
    "model.pretraining.steps=20",
    "model.pretrained=null",  # tests exercise the pretraining path (the shipped checkpoint is tested apart)
    "model.config={hidden_size: 64, num_attention_heads: 4, intermediate_size: 128, l_layers: 2, x_layers: 1, r_layers: 1}",
    "training.epochs=2",
    "tracking.backend=none",
    "pruning.sparsities=null",  # levels come from pruning.rate/levels in tests
    "pruning.rate=0.3",
    "pruning.levels=3",
]


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    return [*TINY, f"storage={tmp_path / 'runs'}"]


@pytest.fixture
def smoke_file() -> Path:
    return ROOT / "experiments" / "smoke.yaml"
