"""The mask lifecycle of a trial: where its mask and starting weights come from, and which masks it leaves.

A trial's mask is one of (the subnetwork kind decides, :mod:`lxsweep.subnetworks`):

- none: level 0 (dense) or a control without a mask (scratch);
- **generated** at the trial's start from the rewind point's weights, the seed
  and the level (``random``), and stored under the trial's own name;
- its **parent's child mask**: a chain trial (``low``, ``high``) or a
  follower (``code_high``, ``layer_random``) trains with the mask its parent
  computed from its trained weights (:func:`write_child_masks`); a control
  (``reinit``) with the mask of the criterion it names.

The weights the kept entries start from are the rewind point's (the
pretrained model, or the dense trial's weights after ``rewind.step`` steps,
which :class:`RewindWeights` stores), redrawn by a control's ``init``.

Masks live in the store by trial name (``masks/<trial>.safetensors``,
bit-packed); this module is the only one that reads or writes them.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import torch

from lxsweep import pruning, subnetworks
from lxsweep.config import Experiment
from lxsweep.errors import CorruptStoreFile
from lxsweep.hooks import TrialHook
from lxsweep.plan import TrialKey, child_masks, mask_source, parent
from lxsweep.store import Store, mask_path, metrics_path, rewind_path, weights_path
from lxsweep.subnetworks import MaskInputs


# -- stored masks ---------------------------------------------------------------


def save_mask(store: Store, name: str, mask: pruning.Mask, meta: dict) -> None:
    """Store mask ``name`` (bit-packed safetensors; ``meta`` values as JSON in its metadata)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mask.safetensors"
        pruning.save_mask(mask, path, {k: json.dumps(v) for k, v in meta.items()})
        store.write_bytes(mask_path(name), path.read_bytes())


def load_mask(store: Store, name: str, *, with_metadata: bool = False):
    """Mask ``name`` from the store (and its metadata with ``with_metadata``).

    :class:`CorruptStoreFile` if the file is truncated or not a mask.
    """
    from safetensors import SafetensorError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mask.safetensors"
        path.write_bytes(store.read_bytes(mask_path(name)))
        try:
            mask = pruning.load_mask(path)
            return (mask, pruning.read_mask_metadata(path)) if with_metadata else mask
        except (SafetensorError, ValueError, KeyError) as exc:
            raise CorruptStoreFile(store.path(mask_path(name)), f"unreadable mask ({exc}); truncated?",
                                   f"it is left untouched; move it aside and re-run the trial that wrote it "
                                   f"({name}'s parent), or restore it from a copy") from None


def load_weights(store: Store, rel: str, repair: str) -> dict[str, torch.Tensor]:
    """The tensors of safetensors file ``rel`` in the store; :class:`CorruptStoreFile` naming it and ``repair``
    (how to make it again) when it is truncated or not a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(store.read_bytes(rel))
    except (SafetensorError, ValueError, KeyError) as exc:
        raise CorruptStoreFile(store.path(rel), f"unreadable weights ({exc}); truncated?",
                               f"it is left untouched; move it aside and {repair}, or restore it from a copy") from None


def check_trial_mask(exp: Experiment, key: TrialKey, store: Store) -> None:
    """Refuse now a stored mask this trial would train with that is there but unreadable."""
    source = mask_source(exp, key)
    if source and store.exists(mask_path(source)):
        load_mask(store, source)


# -- a trial's start ------------------------------------------------------------


def start(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> Optional[pruning.Mask]:
    """Set ``model`` (loaded at the rewind point) to the weights trial ``key`` starts from; its mask.

    Order matters: a ``rewind.to: step`` trial first takes the dense trial's
    weights after ``rewind.step`` steps; a generated mask is made from those
    weights; a control re-initialises the model last.
    """
    if exp.rewind.to == "step" and key.level > 0:
        _load_rewind_weights(exp, key, store, model)
    mask = trial_mask(exp, key, store, model)
    control = subnetworks.control(key.subnetwork)
    if control is not None:
        control.init(model, key.seed_for(subnetworks.FRESH_INIT))
    return mask


def trial_mask(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> Optional[pruning.Mask]:
    """The mask this trial trains with: none, generated now (and stored), or its parent's child mask."""
    crit = subnetworks.criterion(key.subnetwork)
    if key.level == 0 or crit is None:
        return None
    if crit.generated:  # from the rewind point's weights, before any control re-initialises them
        weights = {n: p.detach() for n, p in pruning.prunable_parameters(model, exp.pruning.scope).items()}
        inputs = MaskInputs(weights, pruning.full_mask(weights), exp.sparsity(key.level), key.seed, key.level,
                            exp.pruning.layerwise, heads=heads_of(model))
        mask = crit.mask(inputs)
        save_mask(store, key.name, mask, {"trial": key.name, "kind": crit.name})
        return mask
    source = mask_source(exp, key)
    if not store.exists(mask_path(source)):
        recomputed = _mask_from_kept_weights(exp, key, store, model)
        if recomputed is not None:
            return recomputed
        raise FileNotFoundError(
            f"trial {key.name} needs mask {mask_path(source)} in {store.root}; run {parent(exp, key)} first"
        )
    return load_mask(store, source)


def _load_rewind_weights(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module) -> None:
    rel = rewind_path(key.seed, exp.rewind.step)
    dense = TrialKey(0, subnetworks.DENSE, key.seed)
    if not store.exists(rel):
        raise FileNotFoundError(f"trial {key.name} rewinds to {rel} in {store.root} — run {dense.name} first")
    model.load_state_dict(load_weights(store, rel, f"re-run {dense.name} into a copy of the store to write it again"))


class RewindWeights(TrialHook):
    """rewind.to: step — the dense trial stores its weights after ``rewind.step`` optimizer steps."""

    def __init__(self, exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module):
        self.exp, self.key, self.store, self.model = exp, key, store, model

    def on_step(self, step: int) -> None:
        if step == self.exp.rewind.step:
            from safetensors.torch import save

            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            self.store.write_bytes(rewind_path(self.key.seed, step), save(state))


def start_hooks(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module, total_steps: int,
                is_main: bool) -> list[TrialHook]:
    """The hooks trial ``key`` runs to leave a rewind point for others (the dense trial under ``rewind.to: step``)."""
    if exp.rewind.to != "step" or key.subnetwork != subnetworks.DENSE:
        return []
    if exp.rewind.step > total_steps:
        raise ValueError(f"rewind.step {exp.rewind.step} is beyond the dense fine-tune's {total_steps} steps")
    return [RewindWeights(exp, key, store, model)] if is_main else []


# -- the masks a trial leaves ----------------------------------------------------


def heads_of(model: torch.nn.Module) -> int:
    """The model's attention heads per block (0 when its config does not say)."""
    return int(getattr(getattr(model, "config", None), "num_attention_heads", 0) or 0)


def child_mask(exp: Experiment, child: TrialKey, weights: dict, current: pruning.Mask, *,
               current_level: int = 0, followed: Optional[pruning.Mask] = None, heads: int = 0) -> pruning.Mask:
    """The mask ``child`` trains with, from its parent's trained ``weights`` and the mask they trained under.

    ``schedule: stepwise``: ``current`` is the chain's mask at ``current_level`` (the full mask at 0) and the
    child takes ``child.level - current_level`` per-tensor steps from it. ``followed``: for a criterion that
    follows another, that one's mask at the child's level.
    """
    steps = child.level - current_level if exp.pruning.schedule == "stepwise" else 0
    inputs = MaskInputs(weights, current, exp.sparsity(child.level), child.seed, child.level, exp.pruning.layerwise,
                        steps=steps, rate=exp.pruning.rate, followed=followed, heads=heads)
    return subnetworks.criterion(child.subnetwork).mask(inputs)


def write_child_masks(exp: Experiment, key: TrialKey, store: Store, model: torch.nn.Module,
                      mask: Optional[pruning.Mask]) -> list[str]:
    """Compute and store the masks this trial's trained weights define (docs/ARCHITECTURE.md, one trial)."""
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
            made = child_mask(exp, child, weights, current, followed=followed, heads=heads_of(model))
        else:
            base, base_level = last.get((child.seed, child.subnetwork), (current, 0)) if stepwise else (current, 0)
            made = child_mask(exp, child, weights, base, current_level=base_level, heads=heads_of(model))
            last[(child.seed, child.subnetwork)] = (made, child.level)
        save_mask(store, child.name, made, {"trial": child.name, "kind": child.subnetwork, "from": key.name})
        written.append(child.name)
    return written


def _mask_from_kept_weights(exp: Experiment, key: TrialKey, store: Store,
                            model: torch.nn.Module) -> Optional[pruning.Mask]:
    """A chain mask its finished parent never wrote, rebuilt from the parent's kept weights (else None).

    Stores made before chain trials wrote their next level's mask past the
    last planned level lack it when ``pruning.levels`` is raised later; the
    parent is finished and must not be re-run, but its kept weights define the
    mask (ranked in the stored dtype: with float16, ties may order differently).
    """
    par = parent(exp, key)
    if par is None or not store.exists(metrics_path(par.name)) or not store.exists(weights_path(par.name)):
        return None
    state = load_weights(store, weights_path(par.name), f"re-run {par.name} into a copy of the store")
    weights = {n: state[n].float() for n in pruning.prunable_parameters(model, exp.pruning.scope)}
    source = mask_source(exp, par)
    current = load_mask(store, source) if source else pruning.full_mask(weights)
    follows, followed = subnetworks.criterion(key.subnetwork).follows, None
    if follows is not None:  # the followed mask at this level: stored beside, or rebuilt the same way
        base = TrialKey(key.level, follows, key.seed)
        followed = (load_mask(store, base.name) if store.exists(mask_path(base.name))
                    else child_mask(exp, base, weights, current, heads=heads_of(model)))
    mask = child_mask(exp, key, weights, current, followed=followed, heads=heads_of(model))
    save_mask(store, key.name, mask, {"trial": key.name, "kind": key.subnetwork, "from": par.name,
                                      "recomputed_from": weights_path(par.name)})
    return mask
