"""Shared fixtures: small experiments, quiet environments, one thread per torch process."""
from __future__ import annotations

import os
import tempfile
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
# Node-local caches (question tokens) of the suite's runs go to a directory of their own, not ~/.cache.
os.environ.setdefault("LXSWEEP_CACHE", tempfile.mkdtemp(prefix="lxsweep-test-cache-"))
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
    "pruning.levels_of={}",  # every level of every subnetwork (the smoke experiment trains high at one)
]


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    return [*TINY, f"storage={tmp_path / 'runs'}"]


@pytest.fixture
def smoke_file() -> Path:
    return ROOT / "experiments" / "smoke.yaml"


@pytest.fixture(scope="module")
def s3():
    """A real S3-protocol server (moto) on a free localhost port, with the environment pointing at it.

    Yields the :class:`s3_server.S3Server`; tests create their buckets with
    ``s3.create_bucket``. The environment (AWS_ENDPOINT_URL, credentials,
    region) is set in this process for the module's tests and restored after.
    """
    from s3_server import S3Server

    server = S3Server().start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True, scope="module")
def _fresh_wandb_service():
    """Each test module gets its own wandb service: wandb publishes the service it starts in this process as
    ``WANDB_SERVICE``, which every ``lxsweep`` subprocess would inherit and share, so a run id left open by one
    module's in-process trials ("run ID ... is in use") would break the next module's sweep."""
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    os.environ.pop("WANDB_SERVICE", None)
