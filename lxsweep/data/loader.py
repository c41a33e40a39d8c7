"""Batches for training and evaluation, fetched a whole batch at a time.

Questions are tokenized once per node (:mod:`lxsweep.data.tokens`) and kept in
compact dtypes, widened per batch; region features stay in the (possibly
memory-mapped) feature array and are gathered per batch with one fancy-index
read, so a trial's resident memory does not grow with the number of images.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from lxsweep.data import VQASplit
from lxsweep.data.tokens import tokenize as compact_tokens


def tokenize(tokenizer, questions: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """Fixed-length int64 token tensors for every question (LXMERT's 20 tokens by default)."""
    return {name: t.to(torch.int64) for name, t in compact_tokens(tokenizer, questions, max_tokens).items()}


def per_image(images: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``take(array)``: the rows of a per-image array for each of ``images``, in order.

    One sorted read of the distinct images from the memmap, then a reorder:
    sequential pages, no per-row syscalls.
    """
    uniq, inverse = np.unique(images, return_inverse=True)
    return lambda array: np.asarray(array[uniq])[inverse]


def region_tensors(split: VQASplit, take: Callable[[np.ndarray], np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Region features (float32) and boxes of the images ``take`` reads (:func:`per_image`)."""
    # fp16 -> fp32 in torch: numpy's cast was ~10 of 13 ms per batch (bench/loader.py).
    feats = torch.from_numpy(np.ascontiguousarray(take(split.features))).float()
    return feats, torch.from_numpy(take(split.boxes).astype(np.float32, copy=False))


class BatchedSplit(torch.utils.data.Dataset):
    """A split whose ``__getitems__`` builds a whole batch (DataLoader calls it once per batch)."""

    def __init__(self, split: VQASplit, tokens: dict[str, torch.Tensor]):
        self.split, self.tokens = split, tokens

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        rows_np = np.asarray(rows, dtype=np.int64)
        take = per_image(self.split.image_index[rows_np])
        feats, boxes = region_tensors(self.split, take)
        rows_t = torch.from_numpy(rows_np)
        return {
            "rows": rows_t,
            **{k: v[rows_t].to(torch.int64) for k, v in self.tokens.items()},
            "features": feats,
            "boxes": boxes,
            "target_labels": torch.from_numpy(np.asarray(self.split.target_labels[rows_np], dtype=np.int64)),
            "target_scores": torch.from_numpy(np.asarray(self.split.target_scores[rows_np], dtype=np.float32)),
        }

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([row])


def _identity(batch):
    return batch


def shard_rows(n: int, rank: int, world: int, shuffle_seed: Optional[int]) -> np.ndarray:
    """This rank's rows: a seeded permutation (or the natural order), padded to equal shards."""
    order = np.random.default_rng(shuffle_seed).permutation(n) if shuffle_seed is not None else np.arange(n)
    per_rank = -(-n // world)
    padded = np.concatenate([order, order[: per_rank * world - n]])
    return padded[rank::world]


def make_loader(split: VQASplit, tokens: dict[str, torch.Tensor], batch_size: int, rt, shuffle_seed: Optional[int], num_workers: int = 0):
    """A DataLoader over this rank's shard; ``rt`` supplies rank, world size and pinning."""
    rows = shard_rows(len(split), rt.rank, rt.world, shuffle_seed)
    sampler = torch.utils.data.BatchSampler(rows.tolist(), batch_size=batch_size, drop_last=False)
    return torch.utils.data.DataLoader(
        BatchedSplit(split, tokens), batch_sampler=sampler, collate_fn=_identity,
        num_workers=num_workers, pin_memory=rt.pin_memory, persistent_workers=False,
    )
