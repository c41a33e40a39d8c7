"""An experiment's data: one path for real and synthetic VQA.

``data.source: vqa`` opens the prepared store at ``data.path``.
``data.source: synthetic`` takes the same road: the task is written out as
official VQA v2 files (:mod:`lxsweep.data.synth`), converted by
:func:`~lxsweep.data.prepare.prepare_vqa`, and the prepared store opened like
any other. That happens once per task: the prepared store is cached in the
experiment's store under ``data/synthetic-<hash>``, the hash covering the task
settings and the code that writes the files (so a changed generator never
serves stale data).
"""
from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lxsweep.config import SyntheticConfig, canonical_hash
from lxsweep.data import VQADataset
from lxsweep.data import synth, synthetic
from lxsweep.data.prepared import MANIFEST_FILE, load_vqa_store

if TYPE_CHECKING:
    from lxsweep.config import Experiment
    from lxsweep.store import Store

PURPOSES = ("pretrain", "finetune")
# purpose -> (train split, valid split) of the synthetic task (the splits of lxsweep.data.synth.SPLITS)
SYNTHETIC_SPLITS = {"pretrain": ("pretrain", "pretrain_valid"), "finetune": ("train", "valid")}


def load_dataset(exp: "Experiment", store: "Store", purpose: str = "finetune") -> VQADataset:
    """The experiment's train and validation splits (and test split, if any), ``data.limit_train``/``limit_valid``
    applied (the test split is never limited).

    ``purpose="pretrain"`` gives the synthetic task's disjoint pretraining
    split and its held-out validation split (synthetic data only: real data
    has a published pretrained LXMERT). ``store`` is the experiment's store,
    where the synthetic task's prepared files are cached.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    if exp.data.source == "synthetic":
        train_split, valid_split = SYNTHETIC_SPLITS[purpose]
        test = "test" if purpose == "finetune" and exp.data.synthetic.test_questions else None
        ds = load_vqa_store(synthetic_store(exp.data.synthetic, store), train_split, valid_split, test_split=test)
    elif purpose == "pretrain":
        raise ValueError("a pretraining split exists only for data.source: synthetic")
    else:
        ds = load_vqa_store(prepared_path(exp), exp.data.train_split, exp.data.valid_split,
                            test_split=exp.data.test_split)
    if exp.data.limit_train and exp.data.limit_train < len(ds.train):
        ds.train = ds.train.subset(np.arange(exp.data.limit_train))
    if exp.data.limit_valid and exp.data.limit_valid < len(ds.valid):
        ds.valid = ds.valid.subset(np.arange(exp.data.limit_valid))
    return ds


def prepared_path(exp: "Experiment") -> Path:
    """Where this node reads ``data.path`` from: in place, or its node-local copy (a URI; ``data.stage``)."""
    from lxsweep import staging
    from lxsweep.store import retrying

    if staging.is_remote(exp.data.path) or exp.data.stage:
        return staging.stage(exp.data.path, retry=retrying).path
    return Path(exp.data.path).expanduser()


SYNTHETIC_CONTENT_VERSION = 2


def synthetic_store_name(cfg: SyntheticConfig) -> str:
    """Where in an experiment's store the prepared synthetic task lives: ``data/synthetic-<hash>``."""
    code = hashlib.sha256()
    for module in (synthetic, synth):  # the generator and the writer: what the files are a function of
        code.update(Path(module.__file__).read_bytes())
    # The content's version, not the layout's: layout 3 (coded question columns) holds the same data as 2, so
    # the name — and the rewind point hashed from it — stays, and a cached version-2 copy still opens.
    key = {"synthetic": dataclasses.asdict(cfg), "code": code.hexdigest(), "store_version": SYNTHETIC_CONTENT_VERSION}
    return f"data/synthetic-{canonical_hash(key)}"


def synthetic_store(cfg: SyntheticConfig, store: "Store") -> Path:
    """A local directory holding the prepared synthetic task; written into ``store`` the first time.

    Safe for concurrent trials and for object stores: the work is
    deterministic, the directory is uploaded whole (a local store renames it
    into place; the loser of a race discards its copy) and its manifest is
    written after everything else, so a reader that finds the manifest finds
    every file.
    """
    name = synthetic_store_name(cfg)
    if not store.exists(f"{name}/{MANIFEST_FILE}"):
        with tempfile.TemporaryDirectory(prefix="lxsweep-synth-") as tmp:
            files = synth.write_synthetic(cfg, Path(tmp) / "files")
            prepared = synth.prepare_synthetic(files, Path(tmp) / "prepared")
            manifest = (prepared / MANIFEST_FILE).read_bytes()
            (prepared / MANIFEST_FILE).unlink()
            store.upload_dir(prepared, name)
            store.write_bytes(f"{name}/{MANIFEST_FILE}", manifest)
    return store.local_dir(name)
