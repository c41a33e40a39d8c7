"""The fit loop: fine-tune a model under a mask, evaluate each epoch.

:func:`train_step` is the only optimizer step in lxsweep (the benchmarks and
tests call the same step) and :class:`Fit` the only fine-tuning loop; a
trial (lxsweep/trial.py) builds one from tensors, a mask, batches and seeds,
and :class:`~lxsweep.hooks.TrialHook` objects see every step and epoch. It
knows no trial keys, stores or subnetworks, and imports no Ray: distributed
training is plain ``torch.distributed`` (DDP), initialised by whoever
launched the workers.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist

from lxsweep import model as lxmodel
from lxsweep import optim, pruning
from lxsweep.config import Experiment
from lxsweep.data import VQADataset, VQASplit, rows_of
from lxsweep.data.loader import make_loader
from lxsweep.data.tokens import question_tokens
from lxsweep.hooks import TrialHook
from lxsweep.metric import accuracy_metrics


# -- environment --------------------------------------------------------------


@dataclass
class Runtime:
    """Where this process trains: device, rank, world size, and the GPU recipe."""

    device: torch.device
    rank: int = 0
    world: int = 1
    autocast_dtype: Optional[torch.dtype] = None  # bf16 on GPU (precision auto/bf16)
    fused_adamw: bool = False
    pin_memory: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def runtime(exp: Experiment) -> Runtime:
    """Device selection and the training recipe: bf16/fused AdamW/TF32/pinned memory on GPU, fp32 on CPU."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        bf16 = exp.training.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
        return Runtime(device, rank, world, torch.bfloat16 if bf16 else None, fused_adamw=True, pin_memory=True)
    # Same thread count in `lxsweep trial` and in a Ray worker: CPU results then match bit for bit.
    torch.set_num_threads(max(1, int(exp.resources.cpus_per_worker)))
    return Runtime(torch.device("cpu"), rank, world, torch.bfloat16 if exp.training.precision == "bf16" else None)


# -- the step -------------------------------------------------------------------


class MaskHooks(Protocol):
    """What keeps pruned weights at zero: ``pruning.MaskEnforcer`` (or any object with these two calls)."""

    def zero_grads(self) -> None: ...

    def apply(self) -> None: ...


def forward(net: torch.nn.Module, batch: dict, rt: "Runtime") -> torch.Tensor:
    """Answer logits (fp32) of a batch in the loader's layout, under the runtime's autocast."""
    with torch.autocast(rt.device.type, dtype=rt.autocast_dtype, enabled=rt.autocast_dtype is not None):
        return net(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"], visual_feats=batch["features"], visual_pos=batch["boxes"],
        ).question_answering_score.float()


def vqa_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """LXMERT's loss: mean BCE against the soft targets, times the number of answers."""
    target = soft_target_matrix(batch["target_labels"], batch["target_scores"], logits.shape[1])
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target) * logits.shape[1]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, rt: "Runtime") -> torch.optim.AdamW:
    """The fine-tune's AdamW (:func:`lxsweep.optim.adamw`), fused on GPU."""
    return optim.adamw(model, lr, weight_decay, fused=rt.fused_adamw)


def train_step(net: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, rt: "Runtime", *,
               scheduler=None, masks: Optional[MaskHooks] = None, grad_clip: float = 0.0) -> torch.Tensor:
    """One optimizer step of a trial; returns the (detached) loss.

    Forward, soft-target BCE, backward; the pruned entries' gradients are
    zeroed *before* clipping and the step (so neither the norm nor AdamW's
    state sees them), then the pruned weights are set to exactly zero again
    (weight decay and the update moved them).
    """
    loss = vqa_loss(forward(net, batch, rt), batch)
    loss.backward()
    if masks is not None:
        masks.zero_grads()
    if grad_clip > 0:
        optim.clip_gradients(net.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if masks is not None:
        masks.apply()
    return loss.detach()


class Fit:
    """Fine-tuning state of one trial: model, optimizer, schedule, data, mask.

    ``name`` labels the log lines; ``shuffle_seed(epoch)`` seeds each epoch's data order. ``max_steps``
    stops training after that many steps (the last epoch is then shorter; the schedule decays to zero
    there); ``lr`` replaces ``training.lr``. Only parameters that require gradients train.
    """

    def __init__(self, exp: Experiment, rt: Runtime, model, mask, data: VQADataset, tokenizer, epochs: int, *,
                 name: str, shuffle_seed: Callable[[int], int], max_steps: Optional[int] = None,
                 lr: Optional[float] = None):
        self.exp, self.rt, self.data = exp, rt, data
        self.name, self.shuffle_seed = name, shuffle_seed
        t = exp.training
        self.model = lxmodel.use_sdpa_attention(model.to(rt.device))
        self.enforcer = pruning.MaskEnforcer(self.model, mask) if mask else None  # zeroes the pruned weights now
        # training.enforce_mask: false (the paper's code, docs/PAPER_CODE.md row d): zeroed once, never again.
        self.masks = self.enforcer if t.enforce_mask else None
        # Once per node, not per trial: the cache is keyed by tokenizer, max_tokens and questions.
        self.train_tokens = question_tokens(tokenizer, data.train.questions, exp.data.max_tokens)
        self.valid_tokens = question_tokens(tokenizer, data.valid.questions, exp.data.max_tokens)
        self.tokenizer = tokenizer
        # training.batch_size is the global batch: each of `world` ranks takes an equal share, so the
        # batches (and, up to float error and dropout, the run) match a one-worker run.
        self.rank_batch = math.ceil(t.batch_size / rt.world)
        self.steps_per_epoch = math.ceil(math.ceil(len(data.train) / rt.world) / self.rank_batch)
        self.total_steps = self.steps_per_epoch * epochs if max_steps is None else max_steps
        self.epochs = epochs if max_steps is None else math.ceil(max_steps / self.steps_per_epoch)
        self.optimizer = adamw(self.model, t.lr if lr is None else lr, t.weight_decay, rt)
        self.scheduler = optim.warmup_then_decay(self.optimizer, self.total_steps, int(t.warmup * self.total_steps))
        self.net = self.model
        if rt.world > 1:
            ids = [rt.device.index] if rt.device.type == "cuda" else None
            # find_unused_parameters: LXMERT's last cross layer computes a vision output the QA head never reads.
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        self.epoch, self.step, self.history = 0, 0, []

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "step": self.step,
            "history": self.history, "rng": torch.get_rng_state(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])
        torch.set_rng_state(state["rng"])

    def train_epoch(self, hooks: Sequence[TrialHook] = ()) -> dict:
        rt = self.rt
        loader = make_loader(self.data.train, self.train_tokens, self.rank_batch, rt, shuffle_seed=self.shuffle_seed(self.epoch), num_workers=self.exp.data.loader_workers)
        self.net.train()
        total, count = torch.zeros((), device=rt.device), 0
        for batch in loader:
            if self.step >= self.total_steps:
                break
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            total += train_step(self.net, batch, self.optimizer, rt, scheduler=self.scheduler, masks=self.masks,
                                grad_clip=self.exp.training.grad_clip)
            count += 1
            self.step += 1
            for hook in hooks:
                hook.on_step(self.step)
        return {"train_loss": float(total) / max(count, 1), "lr": self.scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def evaluate(self, split_name: str = "valid") -> dict:
        """Official accuracy of the current weights on ``valid`` (every epoch) or ``test`` (once, at the end)."""
        rt = self.rt
        if split_name == "valid":
            split, tokens = self.data.valid, self.valid_tokens
        else:
            split = self.data.test
            tokens = question_tokens(self.tokenizer, split.questions, self.exp.data.max_tokens)
        loader = make_loader(split, tokens, self.exp.training.eval_batch_size, rt, shuffle_seed=None)
        self.net.eval()
        rows, preds = [], []
        for batch in loader:
            rows.append(batch.pop("rows"))
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            preds.append(forward(self.net, batch, rt).argmax(dim=1).cpu())
        rows_t, preds_t = torch.cat(rows), torch.cat(preds)
        if rt.world > 1:  # every rank scores the whole split from the gathered shards
            gathered: list = [None] * rt.world
            dist.all_gather_object(gathered, (rows_t, preds_t))
            rows_t = torch.cat([g[0] for g in gathered])
            preds_t = torch.cat([g[1] for g in gathered])
        order = torch.argsort(rows_t)
        rows_np, preds_np = rows_t[order].numpy(), preds_t[order].numpy()
        rows_np, first = np.unique(rows_np, return_index=True)  # drop the sampler's padding duplicates
        preds_np = preds_np[first]
        return evaluation_metrics(split, rows_np, [self.data.answers[i] for i in preds_np])

    def run(self, log: Callable[[str], None], hooks: Sequence[TrialHook] = ()) -> list[dict]:
        while self.epoch < self.epochs:
            t0 = time.time()
            train = self.train_epoch(hooks)
            metrics = {**train, **self.evaluate()}
            self.epoch += 1
            metrics.update(epoch=self.epoch, step=self.step, epoch_seconds=round(time.time() - t0, 3))
            if self.enforcer:
                metrics["sparsity"] = self.measured_sparsity()
            self.history.append(metrics)
            if self.rt.is_main:
                log(f"{self.name} epoch {self.epoch}/{self.epochs}: loss {train['train_loss']:.4f} "
                    f"accuracy {metrics['accuracy']:.4f} ({metrics['epoch_seconds']:.1f}s)")
            for hook in hooks:
                hook.on_epoch(metrics, self.state)
        return self.history

    def measured_sparsity(self) -> float:
        """Fraction of masked weights that are exactly zero: the mask's sparsity while it is enforced, the
        sparsity left by retraining with ``training.enforce_mask: false``."""
        assert self.enforcer is not None
        params = dict(self.model.named_parameters())
        masked = [params[name] for name in self.enforcer.names]
        return sum(int((p == 0).sum()) for p in masked) / sum(p.numel() for p in masked)


def soft_target_matrix(labels: torch.Tensor, scores: torch.Tensor, num_answers: int) -> torch.Tensor:
    """Dense [B, A] soft targets from padded (label, score) pairs (-1 = padding)."""
    target = torch.zeros(labels.shape[0], num_answers, device=labels.device)
    valid = labels >= 0
    return target.scatter_add_(1, labels.clamp(min=0), torch.where(valid, scores, torch.zeros_like(scores)))


def evaluation_metrics(split: VQASplit, rows: np.ndarray, predictions: list[str]) -> dict:
    """Official VQA accuracy, overall, per answer type and per question kind (VQA's question_type)."""
    columns = (split.answers, split.answer_types, split.question_kinds)
    return accuracy_metrics(predictions, *(rows_of(column, rows) for column in columns))
