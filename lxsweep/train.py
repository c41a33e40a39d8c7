"""One trial: fine-tune from the rewind point with a mask, evaluate, write the child masks.

:func:`run_trial` is the only trial function and :func:`train_step` the only
optimizer step in lxsweep (the benchmarks and tests call the same step).
``lxsweep trial`` and a Ray Train worker both call :func:`run_trial`; they
differ only in the :class:`TrialHook` objects they pass (progress bar,
tracker, Ray report and checkpoint, fault injection; see lxsweep/hooks.py and
lxsweep/sweep.py). It imports no Ray: distributed training is plain
``torch.distributed`` (DDP), initialised by whoever launched the workers.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist

from lxsweep import model as lxmodel
from lxsweep import optim, pruning, subnetworks
from lxsweep.config import Experiment, canonical_hash
from lxsweep.data import VQADataset, VQASplit
from lxsweep.data.loader import make_loader, tokenize
from lxsweep.data.source import load_dataset
from lxsweep.facts import check_compatible, resolved_facts
from lxsweep.metric import accuracy_metrics
from lxsweep.pretrain import rewind_point
from lxsweep.plan import TrialKey, child_masks, dense_key, keeps_weights, mask_source, parent, validate_key
from lxsweep.store import (EXPERIMENT_FILE, HEARTBEAT_SECONDS, CorruptStoreFile, Store, attempt_path, failed_path,
                           mask_path, metrics_path, read_experiment, read_metrics, rewind_path, sparsity_path,
                           weights_path)
from lxsweep.subnetworks import DENSE, MaskInputs


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


def trial_seed(key: TrialKey, purpose: str) -> int:
    """A 31-bit seed derived from the trial key and a purpose (canonical JSON, stable everywhere)."""
    return int(canonical_hash([key.seed, key.level, key.subnetwork, purpose], 8), 16) & 0x7FFFFFFF




# -- masks --------------------------------------------------------------------


def _save_mask(store: Store, name: str, mask: pruning.Mask, meta: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mask.safetensors"
        pruning.save_mask(mask, path, {k: json.dumps(v) for k, v in meta.items()})
        store.write_bytes(mask_path(name), path.read_bytes())


def _load_mask(store: Store, name: str) -> pruning.Mask:
    """Mask ``name`` from the store; :class:`CorruptStoreFile` if the file is truncated or not a mask."""
    from safetensors import SafetensorError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mask.safetensors"
        path.write_bytes(store.read_bytes(mask_path(name)))
        try:
            return pruning.load_mask(path)
        except (SafetensorError, ValueError, KeyError) as exc:
            raise CorruptStoreFile(store.path(mask_path(name)), f"unreadable mask ({exc}); truncated?",
                                   f"it is left untouched; move it aside and re-run the trial that wrote it "
                                   f"({name}'s parent), or restore it from a copy") from None


def check_trial_inputs(exp: Experiment, key: TrialKey, store: Store) -> None:
    """Refuse, before any training, a trial whose store inputs are there but unreadable.

    Reads what the trial and the chain prefix it may run first will read:
    the store's ``experiment.yaml``, the ``metrics.json`` of the trial, of
    its ancestors and of its seed's dense trial, and the mask it trains with.
    Raises :class:`CorruptStoreFile` naming the first bad file; absent files
    are fine (they are made on the way).
    """
    if store.exists(EXPERIMENT_FILE):
        read_experiment(store)
    chain, k = [key], parent(exp, key)
    while k is not None:
        chain.append(k)
        k = parent(exp, k)
    dense = dense_key(key.seed, exp)
    for k in dict.fromkeys([*reversed(chain), dense]):
        if store.exists(metrics_path(k.name)):
            read_metrics(store, k.name)
    source = mask_source(exp, key)
    if source and store.exists(mask_path(source)):
        _load_mask(store, source)


def trial_mask(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> Optional[pruning.Mask]:
    """The mask this trial trains with: none, generated now (and stored), or its parent's child mask."""
    crit = subnetworks.criterion(key.subnetwork)
    if key.level == 0 or crit is None:
        return None
    if crit.generated:  # from the rewind point's weights, before any control re-initialises them
        weights = {n: p.detach() for n, p in pruning.prunable_parameters(model, exp.pruning.scope).items()}
        inputs = MaskInputs(weights, pruning.full_mask(weights), exp.sparsity(key.level), key.seed, key.level,
                            exp.pruning.layerwise)
        mask = crit.mask(inputs)
        _save_mask(store, key.name, mask, {"trial": key.name, "kind": crit.name})
        return mask
    source = mask_source(exp, key)
    if not store.exists(mask_path(source)):
        recomputed = _mask_from_kept_weights(exp, key, store, model)
        if recomputed is not None:
            return recomputed
        raise FileNotFoundError(
            f"trial {key.name} needs mask {mask_path(source)} in {store.root}; run {parent(exp, key)} first"
        )
    return _load_mask(store, source)


def _child_mask(exp: Experiment, child: TrialKey, weights: dict, current: pruning.Mask, *,
                current_level: int = 0, followed: Optional[pruning.Mask] = None) -> pruning.Mask:
    """The mask ``child`` trains with, from its parent's trained ``weights`` and the mask they trained under.

    ``schedule: stepwise``: ``current`` is the chain's mask at ``current_level`` (the full mask at 0) and the
    child takes ``child.level - current_level`` per-tensor steps from it. ``followed``: for a criterion that
    follows another, that one's mask at the child's level.
    """
    steps = child.level - current_level if exp.pruning.schedule == "stepwise" else 0
    inputs = MaskInputs(weights, current, exp.sparsity(child.level), child.seed, child.level, exp.pruning.layerwise,
                        steps=steps, rate=exp.pruning.rate, followed=followed)
    return subnetworks.criterion(child.subnetwork).mask(inputs)


def _mask_from_kept_weights(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> Optional[pruning.Mask]:
    """A chain mask its finished parent never wrote, rebuilt from the parent's kept weights (else None).

    Stores made before chain trials wrote their next level's mask past the
    last planned level lack it when ``pruning.levels`` is raised later; the
    parent is finished and must not be re-run, but its kept weights define the
    mask (ranked in the stored dtype: with float16, ties may order differently).
    """
    from safetensors.torch import load

    par = parent(exp, key)
    if par is None or not store.exists(metrics_path(par.name)) or not store.exists(weights_path(par.name)):
        return None
    state = load(store.read_bytes(weights_path(par.name)))
    weights = {n: state[n].float() for n in pruning.prunable_parameters(model, exp.pruning.scope)}
    source = mask_source(exp, par)
    current = _load_mask(store, source) if source else pruning.full_mask(weights)
    follows, followed = subnetworks.criterion(key.subnetwork).follows, None
    if follows is not None:  # the followed mask at this level: stored beside, or rebuilt the same way
        base = TrialKey(key.level, follows, key.seed)
        followed = _load_mask(store, base.name) if store.exists(mask_path(base.name)) else _child_mask(exp, base, weights, current)
    mask = _child_mask(exp, key, weights, current, followed=followed)
    _save_mask(store, key.name, mask, {"trial": key.name, "kind": key.subnetwork, "from": par.name,
                                       "recomputed_from": weights_path(par.name)})
    return mask


def write_child_masks(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module, mask: Optional[pruning.Mask]) -> list[str]:
    """Compute and store the masks this trial's trained weights define (DESIGN §4 step 5)."""
    children = child_masks(exp, key)
    if not children:
        return []
    weights = {n: p.detach() for n, p in pruning.prunable_parameters(model, exp.pruning.scope).items()}
    current = mask if mask is not None else pruning.full_mask(weights)
    # Each chain's latest mask (one per chain and seed held, not every level's: LXMERT-base's is 180 MB as bools):
    # the criteria that follow it are made from it, and under stepwise its next level goes on from it.
    last: dict[tuple[int, str], tuple[pruning.Mask, int]] = {}
    stepwise = exp.pruning.schedule == "stepwise"
    written = []
    for child in children:  # plan.child_masks: per chain in level order, each mask before its followers
        follows = subnetworks.criterion(child.subnetwork).follows
        if follows is not None:
            followed, level = last[(child.seed, follows)]
            assert level == child.level, "plan.child_masks lists a follower before its chain's mask of that level"
            child_mask = _child_mask(exp, child, weights, current, followed=followed)
        else:
            base, base_level = last.get((child.seed, child.subnetwork), (current, 0)) if stepwise else (current, 0)
            child_mask = _child_mask(exp, child, weights, base, current_level=base_level)
            last[(child.seed, child.subnetwork)] = (child_mask, child.level)
        _save_mask(store, child.name, child_mask, {"trial": child.name, "kind": child.subnetwork, "from": key.name})
        written.append(child.name)
    return written


def trial_mask_name(exp: Experiment, key: TrialKey) -> Optional[str]:
    """The stored mask trial ``key`` trained with (its parent's child mask or its own generated one), if any."""
    crit = subnetworks.criterion(key.subnetwork)
    if key.level == 0 or crit is None:
        return None
    return mask_source(exp, key) or key.name


# -- trained weights --------------------------------------------------------------


def write_weights(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> Optional[dict]:
    """Rank 0: store the trained weights in ``training.weights_dtype``; what ``metrics.json`` records of them.

    Floating tensors are cast (pruned entries are exactly zero in every
    dtype); ``zeros`` counts the exact zeros among the prunable weights of the
    stored file, ``sha256`` digests its tensors (:func:`tensors_digest`: not the
    file's bytes, whose header order safetensors does not fix).
    """
    if not keeps_weights(exp, key):
        return None
    from safetensors.torch import save

    dtype = getattr(torch, exp.training.weights_dtype)
    # `+ 0.0` turns the -0.0 that masking leaves into +0.0 (and changes nothing else), so the file's
    # bits are those any sparse form rebuilds: one zero, not two.
    state = {n: (t.detach().to("cpu", dtype) + 0.0 if t.is_floating_point() else t.detach().cpu()).contiguous()
             for n, t in model.state_dict().items()}
    prunable = pruning.prunable_names(state, exp.pruning.scope)
    data = save(state, metadata={"trial": key.name, "dtype": exp.training.weights_dtype})
    store.write_bytes(weights_path(key.name), data)
    return {"path": weights_path(key.name), "dtype": exp.training.weights_dtype, "bytes": len(data),
            "sha256": tensors_digest(state),
            "zeros": sum(int((state[n] == 0).sum()) for n in prunable)}


# -- hooks ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrialStart:
    """What a hook learns when the trial starts (after the model, data and any resume state are loaded)."""

    key: TrialKey
    rank: int
    world: int
    epochs: int
    steps_per_epoch: int
    epoch: int  # epochs already done (resumed from a checkpoint), else 0
    step: int
    resumed: bool

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


class TrialHook:
    """Callbacks around one trial; override what you need. Called on every rank unless noted.

    Order within a trial: ``on_start``, ``on_step`` after each optimizer
    step, ``on_epoch`` after each evaluation (``state()`` builds the checkpoint
    on demand), ``on_metrics`` then ``on_end`` on rank 0 around writing
    ``metrics.json``, ``on_close`` always (``ok`` False after an exception).
    Hooks run in the order given.
    """

    def on_start(self, start: TrialStart) -> None:
        pass

    def on_step(self, step: int) -> None:
        pass

    def on_epoch(self, metrics: dict, state: Callable[[], dict]) -> None:
        pass

    def on_metrics(self, metrics: dict) -> None:
        """Rank 0, before ``metrics.json`` is written: may add keys."""

    def on_end(self, metrics: dict) -> None:
        """Rank 0, after ``metrics.json`` is written."""

    def on_close(self, ok: bool) -> None:
        pass


class StepClock(TrialHook):
    """Wall clock of this attempt's first and last optimizer step (bench/ray_overhead.py reads them)."""

    def __init__(self) -> None:
        self.first: Optional[float] = None
        self.last: Optional[float] = None

    def on_step(self, step: int) -> None:
        self.last = time.time()
        if self.first is None:
            self.first = self.last

    def on_metrics(self, metrics: dict) -> None:
        metrics.update(first_step_at=self.first, last_step_at=self.last)


class _SaveRewindWeights(TrialHook):
    """rewind.to: step — the dense trial stores its weights after ``rewind.step`` optimizer steps."""

    def __init__(self, exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module):
        self.exp, self.key, self.store, self.model = exp, key, store, model

    def on_step(self, step: int) -> None:
        if step == self.exp.rewind.step:
            from safetensors.torch import save

            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            self.store.write_bytes(rewind_path(self.key.seed, step), save(state))


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


# -- the loop -----------------------------------------------------------------


class _Fit:
    """Fine-tuning state of one trial: model, optimizer, schedule, data, mask."""

    def __init__(self, exp: Experiment, rt: Runtime, model, mask, data: VQADataset, tokenizer, key: TrialKey, epochs: int):
        self.exp, self.rt, self.key, self.data, self.epochs = exp, rt, key, data, epochs
        t = exp.training
        self.model = lxmodel.use_sdpa_attention(model.to(rt.device))
        self.enforcer = pruning.MaskEnforcer(self.model, mask) if mask else None  # zeroes the pruned weights now
        # training.enforce_mask: false (the paper's code, docs/PAPER_CODE.md row d): zeroed once, never again.
        self.masks = self.enforcer if t.enforce_mask else None
        self.train_tokens = tokenize(tokenizer, data.train.questions, exp.data.max_tokens)
        self.valid_tokens = tokenize(tokenizer, data.valid.questions, exp.data.max_tokens)
        # training.batch_size is the global batch: each of `world` ranks takes an equal share, so the
        # batches (and, up to float error and dropout, the run) match a one-worker run.
        self.rank_batch = math.ceil(t.batch_size / rt.world)
        self.steps_per_epoch = math.ceil(math.ceil(len(data.train) / rt.world) / self.rank_batch)
        self.total_steps = self.steps_per_epoch * epochs
        self.optimizer = adamw(self.model, t.lr, t.weight_decay, rt)
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
        loader = make_loader(self.data.train, self.train_tokens, self.rank_batch, rt, shuffle_seed=trial_seed(self.key, f"data{self.epoch}"), num_workers=self.exp.data.loader_workers)
        self.net.train()
        total, count = torch.zeros((), device=rt.device), 0
        for batch in loader:
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            total += train_step(self.net, batch, self.optimizer, rt, scheduler=self.scheduler, masks=self.masks,
                                grad_clip=self.exp.training.grad_clip)
            count += 1
            self.step += 1
            for hook in hooks:
                hook.on_step(self.step)
        return {"train_loss": float(total) / max(count, 1), "lr": self.scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def evaluate(self) -> dict:
        rt, split = self.rt, self.data.valid
        loader = make_loader(split, self.valid_tokens, self.exp.training.eval_batch_size, rt, shuffle_seed=None)
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

    def start_info(self, resumed: bool) -> TrialStart:
        return TrialStart(self.key, self.rt.rank, self.rt.world, self.epochs, self.steps_per_epoch, self.epoch,
                          self.step, resumed)

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
                log(f"{self.key.name} epoch {self.epoch}/{self.epochs}: loss {train['train_loss']:.4f} "
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
    answers = [split.answers[i] for i in rows]
    types = [split.answer_types[i] for i in rows]
    kinds = [split.question_kinds[i] for i in rows]
    return accuracy_metrics(predictions, answers, types, kinds)


# -- the trial ----------------------------------------------------------------


def initial_model(exp: Experiment, key: TrialKey, store: Store, num_answers: int, log: Callable[[str], None] = print,
                  answers: Optional[Sequence[str]] = None):
    """(model, tokenizer, mask) at the start of a trial: the rewind point, its mask, its control's weights.

    The answer head starts seeded, or with ``model.answer_table`` from the
    checkpoint's QA head (``answers``, the label order, is then needed) — in
    every trial alike; a control that re-initialises (reinit, scratch) redraws it too.
    """
    model_dir = rewind_point(exp, store, log)
    tokenizer = lxmodel.load_tokenizer(exp.model.tokenizer or model_dir)
    table = lxmodel.read_answer_table(exp.model.answer_table) if exp.model.answer_table else None
    # The answer head's start is the rewind point's: the dense trial's seed (shared with rewind.dense_seed).
    model = lxmodel.load_model(model_dir, num_answers, seed=trial_seed(dense_key(key.seed, exp), "answer-head"),
                               answer_table=table, answers=answers, log=log)
    if exp.rewind.to == "step" and key.level > 0:
        _load_rewind_weights(exp, key, store, model)
    mask = trial_mask(exp, key, store, model)
    control = subnetworks.control(key.subnetwork)
    if control is not None:
        control.init(model, trial_seed(key, subnetworks.FRESH_INIT))
    return model, tokenizer, mask


def run_trial(
    exp: Experiment,
    key: TrialKey,
    store: Optional[Store] = None,
    *,
    hooks: Sequence[TrialHook] = (),
    resume_state: Optional[dict] = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run one trial end to end and return its final metrics (also written to the store).

    1. build the model at the rewind point (seeded answer head; a control's fresh weights);
    2. get the mask: parent's child mask, a generated one, or none;
    3. fine-tune with the mask enforced, evaluating every epoch (``hooks`` see every step and epoch);
    4. rank 0 writes the child masks of its chain and ``metrics.json`` (the done marker).
    """
    validate_key(exp, key)
    store = store or Store.for_experiment(exp)
    rt = runtime(exp)
    facts = resolved_facts(rt)  # what `precision: auto` etc. became here; never mix them in one store
    check_compatible(store, facts, exp.resources.allow_mixed, record=rt.is_main, trial=key.name, warn=log)
    started = time.time()
    beat = Heartbeat(store, attempt_path(key.name, started, uuid.uuid4().hex[:6]), {
        "trial": key.name, "started_at": started, "resumed": resume_state is not None,
        "host": socket.gethostname(), "pid": os.getpid(),
    }) if rt.is_main else None
    ok = False
    try:
        data = load_dataset(exp, store)
        model, tokenizer, mask = initial_model(exp, key, store, data.num_answers, log, answers=data.answers)
        torch.manual_seed(trial_seed(key, "dropout"))
        fit = _Fit(exp, rt, model, mask, data, tokenizer, key, epochs=exp.training.epochs)
        if resume_state is not None:
            fit.load_state(resume_state)
            log(f"{key.name}: resumed from epoch {fit.epoch}")
        hooks = [StepClock(), *hooks]
        if exp.rewind.to == "step" and key.subnetwork == DENSE:
            if exp.rewind.step > fit.total_steps:
                raise ValueError(f"rewind.step {exp.rewind.step} is beyond the dense fine-tune's {fit.total_steps} steps")
            if rt.is_main:
                hooks.insert(1, _SaveRewindWeights(exp, key, store, fit.model))
        for hook in hooks:
            hook.on_start(fit.start_info(resume_state is not None))
        history = fit.run(log, hooks)
        digests = replica_digests(fit.model, rt)
        if not rt.is_main:
            ok = True
            return history[-1]
        metrics = {**_final_metrics(exp, key, store, fit, mask, history, started, digests), "facts": facts}
        for hook in hooks:
            hook.on_metrics(metrics)
        store.delete(failed_path(key.name))
        store.write_json(metrics_path(key.name), metrics)
        for hook in hooks:
            hook.on_end(metrics)
        ok = True
        return metrics
    finally:
        for hook in hooks:
            hook.on_close(ok)
        if beat is not None:
            beat.stop(ok)


class Heartbeat:
    """A trial attempt's file in the store, rewritten every ``every`` seconds while it runs.

    It says who runs it (host, pid), since when, and ``heartbeat_at``; at the
    end ``ended_at`` and ``ok``. ``lxsweep status`` calls an attempt whose
    beat is stale (``store.STALE_SECONDS``), or whose process is gone from
    this host, dead rather than running. A beat that fails (a store outage)
    is skipped: the next one writes again.
    """

    def __init__(self, store: Store, rel: str, record: dict, every: float = HEARTBEAT_SECONDS):
        import threading

        self.store, self.rel, self.record, self.every = store, rel, dict(record), every
        self.record["heartbeat_at"] = time.time()
        store.write_json(rel, self.record)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lxsweep-heartbeat-{record['trial']}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.write_json(self.rel, {**self.record, "heartbeat_at": time.time()})
            except Exception:  # noqa: BLE001 — a missed beat must never end the trial; the next one retries
                pass

    def stop(self, ok: bool) -> None:
        self._stop.set()
        self._thread.join()
        now = time.time()
        try:
            self.store.write_json(self.rel, {**self.record, "heartbeat_at": now, "ended_at": now, "ok": ok})
        except Exception:  # noqa: BLE001 — never hide the trial's own error; a stale beat reads as dead anyway
            pass


def _final_metrics(exp: Experiment, key: TrialKey, store: Store, fit: "_Fit", mask: Optional[pruning.Mask],
                   history: list[dict], started: float, digests: list[str]) -> dict:
    """Rank 0: write the child masks and the sparsity report; the trial's final metrics."""
    rt = fit.rt
    weights = write_weights(exp, key, store, fit.model)
    children = write_child_masks(exp, key, store, fit.model, mask)
    total_params = sum(p.numel() for p in fit.model.parameters())
    report_ = pruning.sparsity_report(mask, total_params) if mask else None
    if report_:
        store.write_json(sparsity_path(key.name), report_)
    final = history[-1]
    return {
        "trial": key.name, "level": key.level, "subnetwork": key.subnetwork, "seed": key.seed,
        "target_sparsity": exp.sparsity(key.level),
        "sparsity": report_["sparsity"] if report_ else 0.0,
        "sparsity_all": report_["sparsity_all_parameters"] if report_ else 0.0,
        # Measured on the trained weights: below `sparsity` when the mask was not enforced (pruned weights regrew).
        **({"trained_sparsity": fit.measured_sparsity()} if mask else {}),
        **{k: v for k, v in final.items() if k.startswith("accuracy")},
        "best_accuracy": max(h["accuracy"] for h in history),
        "train_loss": final["train_loss"], "epochs": len(history), "steps": fit.step,
        "history": history, "child_masks": children, "weights": weights,
        "started_at": started, "finished_at": time.time(), "duration_s": round(time.time() - started, 3),
        "experiment": exp.name, "hash": exp.hash, "world_size": rt.world, "replica_digests": digests, "device": str(rt.device),
        "host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
    }


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex digits) of a state dict's names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{list(state[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def replica_digests(model: torch.nn.Module, rt: Runtime) -> list[str]:
    """A digest of every rank's final weights (DDP replicas must agree bit for bit)."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    mine = h.hexdigest()[:16]
    if rt.world == 1:
        return [mine]
    out: list = [None] * rt.world
    dist.all_gather_object(out, mine)
    return out


def _load_rewind_weights(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> None:
    from safetensors.torch import load

    rel = rewind_path(key.seed, exp.rewind.step)
    if not store.exists(rel):
        raise FileNotFoundError(f"trial {key.name} rewinds to {rel} in {store.root} — run {TrialKey(0, DENSE, key.seed)} first")
    model.load_state_dict(load(store.read_bytes(rel)))
