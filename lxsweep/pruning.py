"""Pruning core: scope, masks, magnitude/random pruning, mask files, mask enforcement.

Pure functions of tensors and parameter names (DESIGN.md §5). A *mask* is a
``dict[str, torch.BoolTensor]`` keyed by parameter name, True = kept, holding
only the prunable tensors of the scope. Nothing here knows about Ray, W&B or the
training loop; the trainer uses :class:`MaskEnforcer` to keep pruned weights at
exactly zero.

Selecting the weights to remove (magnitude and random pruning alike) is one
routine, :func:`_remove_smallest`: every surviving weight gets a non-negative
int32 *key*, and the ``count`` survivors with the smallest keys are removed. The
k-th smallest key is found by a two-level radix histogram (high 16 bits, then
low 16 bits inside the one bucket that holds it), so ~180M weights need three
streaming passes, no sort, no ``torch.quantile`` and no full-size copy.

Tie rule (documented, tested): among survivors with equal keys, the one that
comes first in the *canonical order* is removed first. The canonical order is
tensors sorted by parameter name, then row-major flat index inside a tensor.
Results therefore never depend on the iteration order of the input mappings.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

__all__ = [
    "ALL_GROUPS",
    "SCOPE_GROUPS",
    "ANY_SHAPE_GROUPS",
    "Mask",
    "MaskEnforcer",
    "full_mask",
    "group_of",
    "layer_of",
    "load_mask",
    "magnitude_mask",
    "prunable_names",
    "prunable_parameters",
    "random_mask",
    "stepwise_mask",
    "code_high_mask",
    "attention_blocks",
    "ffn_blocks",
    "nm_mask",
    "structured_groups",
    "structured_mask",
    "shrink_spec",
    "code_random_mask",
    "layer_random_mask",
    "read_mask_metadata",
    "removed_count",
    "save_mask",
    "sparsity",
    "sparsity_report",
]

Mask = dict[str, Tensor]

# A name matches a group when it is a ``.weight`` of that part of the encoder and
# its module is not a LayerNorm. ``(?:lxmert\.)?`` also accepts a bare
# LxmertModel. The 2-D check in prunable_names() is a second guard (LayerNorm
# weights are 1-D), never the only one.
_LAYER_WEIGHT = r"\.\d+\.(?:\w+\.)*(?!LayerNorm\.)\w+\.weight$"
SCOPE_GROUPS: dict[str, str] = {
    "language": r"^(?:lxmert\.)?encoder\.layer" + _LAYER_WEIGHT,
    "vision": r"^(?:lxmert\.)?encoder\.r_layers" + _LAYER_WEIGHT,
    "cross": r"^(?:lxmert\.)?encoder\.x_layers" + _LAYER_WEIGHT,
    "pooler": r"^(?:lxmert\.)?pooler\.dense\.weight$",
    # The paper's published code's scope (docs/PAPER_CODE.md row e): it skips state-dict *positions*
    # (lottery_ticket_hypothesis.py::low_magnitude_pruning, `not_pruned_layers` and the last entry), which in
    # transformers' LxmertForQuestionAnswering names leaves out the embeddings, visn_fc.visn_fc.bias, the
    # visual LayerNorm, box_fc, the box LayerNorm and the answer head's output bias — and prunes everything
    # else: the visual feature projection's weight, every weight, bias and LayerNorm of the encoder layers,
    # the pooler, answer_head.logit_fc.0/.2 and logit_fc.3.weight. Any shape (see ANY_SHAPE_GROUPS).
    "published_code": r"^(?!(?:lxmert\.)?embeddings\.)"
                      r"(?!(?:lxmert\.)?encoder\.visn_fc\.(?:visn_fc\.bias$|visn_layer_norm\.|box_fc\.|box_layer_norm\.))"
                      r"(?!answer_head\.logit_fc\.3\.bias$)"
                      r"(?:(?:lxmert\.)?encoder\.|(?:lxmert\.)?pooler\.|answer_head\.logit_fc\.)",
}
ALL_GROUPS: tuple[str, ...] = ("language", "vision", "cross", "pooler")  # the default scope
# Groups whose tensors are pruned whatever their shape (biases, LayerNorm); the others take 2-D weights only.
ANY_SHAPE_GROUPS: frozenset[str] = frozenset({"published_code"})

_INT32_MAX = 0x7FFFFFFF
_HIGH_BUCKETS = 1 << 15  # high 16 bits of a non-negative int32 key
_LOW_BUCKETS = 1 << 16

_FORMAT_KEY = "lxsweep.mask.format"
_SHAPES_KEY = "lxsweep.mask.shapes"
_PACKED_FORMAT = "packbits-v1"


# --------------------------------------------------------------------------- scope


def _group_patterns(groups: Sequence[str]) -> list[tuple[str, re.Pattern[str]]]:
    if not groups:
        raise ValueError(f"scope needs at least one group; choose from {list(SCOPE_GROUPS)}")
    unknown = [g for g in groups if g not in SCOPE_GROUPS]
    if unknown:
        raise ValueError(f"unknown scope group(s) {unknown}; expected some of {list(SCOPE_GROUPS)}")
    return [(g, re.compile(SCOPE_GROUPS[g])) for g in dict.fromkeys(groups)]


def prunable_names(tensors: Mapping[str, Tensor], groups: Sequence[str] = ALL_GROUPS) -> list[str]:
    """Names of the prunable 2-D weights among ``tensors`` (a state dict or named parameters).

    A name is prunable when it matches the regex of one of ``groups`` (see
    :data:`SCOPE_GROUPS`) and its tensor is 2-D (any shape for a group of
    :data:`ANY_SHAPE_GROUPS`). Order follows ``tensors``.
    Raises ValueError for an unknown group or when nothing matches.
    """
    if isinstance(groups, str):  # a lone group name, not a sequence of characters
        groups = (groups,)
    patterns = _group_patterns(groups)
    names = [
        name
        for name, tensor in tensors.items()
        if any(p.match(name) and (tensor.dim() == 2 or g in ANY_SHAPE_GROUPS) for g, p in patterns)
    ]
    if not names:
        raise ValueError(
            f"no prunable weights match scope groups {list(groups)}; "
            "is this an LXMERT model (names like 'lxmert.encoder.layer.0.attention.self.query.weight')?"
        )
    return names


def prunable_parameters(
    model: torch.nn.Module, groups: Sequence[str] = ALL_GROUPS
) -> dict[str, torch.nn.Parameter]:
    """The model's prunable parameters by name, in the model's ``named_parameters()`` order.

    ``groups`` selects a subset of "language", "vision", "cross", "pooler" (for
    ablations); with those, embeddings, the visual feature projection
    (``visn_fc``), biases, LayerNorm and the answer head are never included.
    ``"published_code"`` replays the paper's code's scope instead (see
    :data:`SCOPE_GROUPS`).
    """
    params = dict(model.named_parameters())
    return {name: params[name] for name in prunable_names(params, groups)}


# --------------------------------------------------------------------------- masks


def full_mask(params: Mapping[str, Tensor]) -> Mask:
    """A mask that keeps everything: one all-True CPU bool tensor per entry of ``params``."""
    return {name: torch.ones(p.shape, dtype=torch.bool) for name, p in params.items()}


def removed_count(fraction: float, total: int) -> int:
    """How many of ``total`` weights a sparsity of ``fraction`` removes: ``round(fraction * total)``.

    The single rounding rule for every mask kind, so the same level always
    removes the same number of weights.
    """
    return int(round(fraction * total))


def sparsity(mask: Mask) -> float:
    """Fraction of the masked weights that are removed (False), over all tensors of ``mask``."""
    total = sum(m.numel() for m in mask.values())
    if total == 0:
        raise ValueError("sparsity of an empty mask is undefined")
    kept = sum(int(m.sum()) for m in mask.values())
    return (total - kept) / total


def sparsity_report(mask: Mask, total_parameters: int | None = None) -> dict:
    """Kept/total/sparsity overall, per tensor, per scope group and per layer (JSON-ready).

    ``{"sparsity", "kept", "total", "tensors": {name: {"kept", "total", "sparsity"}},
    "groups": {group: {...}}, "layers": {layer: {...}}}``: where IMP prunes.
    Groups are those of :data:`SCOPE_GROUPS` (``"other"`` for a name outside
    them); layers are named by :func:`layer_of`, e.g. ``lxmert.encoder.layer.3``.
    With ``total_parameters`` (all parameters of the model, prunable or not) it
    also gives ``"sparsity_all_parameters"``: removed weights over that number.
    """
    tensors = {name: _counts(int(m.sum()), m.numel()) for name, m in mask.items()}
    kept = sum(t["kept"] for t in tensors.values())
    total = sum(t["total"] for t in tensors.values())
    if total == 0:
        raise ValueError("sparsity report of an empty mask is undefined")
    report = {"sparsity": (total - kept) / total, "kept": kept, "total": total, "tensors": tensors,
              "groups": _tally(tensors, group_of), "layers": _tally(tensors, layer_of)}
    if total_parameters is not None:
        if total_parameters < total:
            raise ValueError(
                f"total_parameters={total_parameters} is smaller than the {total} masked weights"
            )
        report["sparsity_all_parameters"] = (total - kept) / total_parameters
    return report


def group_of(name: str) -> str:
    """The scope group of a parameter name (``language``, ``vision``, ``cross``, ``pooler``), else ``other``."""
    return next((g for g in ALL_GROUPS if re.match(SCOPE_GROUPS[g], name)), "other")


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: ``lxmert.encoder.x_layers.1.visual_attention.att.query.weight`` ->
    ``lxmert.encoder.x_layers.1``; outside the numbered layers, its module's parent (``lxmert.pooler``)."""
    match = _LAYER_PREFIX.match(name)
    return match.group(1) if match else name.rsplit(".", 2)[0]


_LAYER_PREFIX = re.compile(r"^(.*?\.(?:layer|r_layers|x_layers)\.\d+)\.")


def _counts(kept: int, total: int) -> dict:
    return {"kept": kept, "total": total, "sparsity": (total - kept) / total if total else 0.0}


def _tally(tensors: Mapping[str, dict], key: Callable[[str], str]) -> dict[str, dict]:
    """Per-tensor counts summed by ``key(name)``, keys in order of first appearance in sorted names."""
    sums: dict[str, list[int]] = {}
    for name in sorted(tensors):
        entry = sums.setdefault(key(name), [0, 0])
        entry[0] += tensors[name]["kept"]
        entry[1] += tensors[name]["total"]
    return {k: _counts(kept, total) for k, (kept, total) in sums.items()}


# ------------------------------------------------------------------ the selection


def _remove_smallest(
    names: Sequence[str],
    keys: Callable[[str], Tensor],
    survivors: Mapping[str, Tensor],
    count: int,
) -> dict[str, Tensor]:
    """Kept flags after removing the ``count`` survivors with the smallest keys.

    ``names`` must be in canonical (sorted) order; ``keys(name)`` returns a fresh
    1-D int32 tensor of non-negative keys and is called once per pass (three
    passes), so keys are recomputed rather than held: peak extra memory is one
    tensor's temporaries plus the output flags. ``survivors[name]`` is a 1-D
    bool tensor (True = still kept). Equal keys: earlier canonical position goes
    first. Returns 1-D bool tensors, a subset of ``survivors``.
    """
    if count == 0:
        return {n: survivors[n].clone() for n in names}

    # Pass 1: histogram of the high 16 bits; pruned entries go to a spare bucket.
    high_hist = torch.zeros(_HIGH_BUCKETS + 1, dtype=torch.int64)
    for n in names:
        high = keys(n) >> 16
        high.masked_fill_(survivors[n].logical_not(), _HIGH_BUCKETS)
        high_hist += torch.bincount(high, minlength=_HIGH_BUCKETS + 1)
    high_hist = high_hist[:_HIGH_BUCKETS]
    high_cum = high_hist.cumsum(0)
    if count > int(high_cum[-1]):
        raise ValueError(f"cannot remove {count} weights: only {int(high_cum[-1])} survive")
    bucket = int(torch.searchsorted(high_cum, count))
    rest = count - int(high_cum[bucket] - high_hist[bucket])  # still to remove inside `bucket`

    # Pass 2: histogram of the low 16 bits inside that one bucket.
    low_hist = torch.zeros(_LOW_BUCKETS, dtype=torch.int64)
    for n in names:
        key = keys(n)
        inside = (key >> 16) == bucket
        inside &= survivors[n]
        low_hist += torch.bincount(key[inside] & 0xFFFF, minlength=_LOW_BUCKETS)
    low_cum = low_hist.cumsum(0)
    low = int(torch.searchsorted(low_cum, rest))
    threshold = (bucket << 16) | low
    ties_left = rest - int(low_cum[low] - low_hist[low])  # equal-to-threshold keys to remove

    # Pass 3: keep keys >= threshold, then remove the first `ties_left` ties in canonical order.
    kept = {}
    for n in names:
        key = keys(n)
        flags = key >= threshold
        flags &= survivors[n]
        if ties_left:
            tie_positions = torch.nonzero((key == threshold) & flags).view(-1)[:ties_left]
            flags[tie_positions] = False
            ties_left -= tie_positions.numel()
        kept[n] = flags
    assert ties_left == 0, "radix select lost track of the threshold ties"
    return kept


def _check_sparsity(value: float) -> None:
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"sparsity must be in [0, 1), got {value!r}")


def _check_ranking_inputs(name: str, w: Tensor, m: Tensor) -> None:
    """One tensor a magnitude ranking reads: its mask is a bool tensor of its shape, its weights have no NaN."""
    if m.shape != w.shape or m.dtype != torch.bool:
        raise ValueError(f"mask for {name} must be a bool tensor of shape {tuple(w.shape)}, got {m.dtype} {tuple(m.shape)}")
    if torch.isnan(w).any():
        raise ValueError(f"weights of {name} contain NaN; cannot rank magnitudes")


def _still_to_remove(flags: Sequence[Tensor], sparsity: float, what: str) -> int:
    # Pruning is only ever *to* a sparsity: a mask never gets weights back.
    total = sum(f.numel() for f in flags)
    already = total - sum(int(f.sum()) for f in flags)
    target = removed_count(sparsity, total)
    if target < already:
        raise ValueError(
            f"{what} already has sparsity {already / total:.4f} > requested {sparsity}; "
            "masks only ever remove more weights"
        )
    return target - already


def _flat_float32(weight: Tensor) -> Tensor:
    # A view for CPU float32 weights; one tensor's copy otherwise (GPU, bf16, fp16).
    return weight.detach().to(device="cpu", dtype=torch.float32).reshape(-1)


def magnitude_mask(
    weights: Mapping[str, Tensor],
    current: Mask,
    sparsity: float,
    *,
    largest: bool = False,
    layerwise: bool = False,
) -> Mask:
    """Prune survivors of ``current`` by magnitude until ``sparsity`` of all weights is removed.

    By default the smallest surviving ``|w|`` are removed (the lottery ticket);
    ``largest=True`` removes the largest. ``sparsity`` is the fraction of *all* prunable
    weights removed after this step (not of the survivors); exactly
    ``removed_count(sparsity, total)`` weights are removed overall (global,
    default) or per tensor (``layerwise=True``). Only survivors are removed, so
    the result is a subset of ``current``. Equal magnitudes: the weight earlier
    in canonical order (tensor name sorted, then flat index) is removed first.

    Raises ValueError for a sparsity outside [0, 1) or below what ``current``
    already removes, mismatched names/shapes, or NaN weights.
    Returns new CPU bool tensors in the order of ``weights``.
    """
    _check_sparsity(sparsity)
    if set(weights) != set(current):
        only_w = sorted(set(weights) - set(current))
        only_m = sorted(set(current) - set(weights))
        raise ValueError(
            f"weights and mask name different tensors: only in weights {only_w}, only in mask {only_m}"
        )
    survivors = {}
    for name, w in weights.items():
        m = current[name]
        _check_ranking_inputs(name, w, m)
        survivors[name] = m.detach().to("cpu").reshape(-1)

    def keys(name: str) -> Tensor:
        # Non-negative IEEE-754 floats order exactly like their bit patterns, so
        # |w| as int32 bits is an exact, monotone integer key.
        key = _flat_float32(weights[name]).view(torch.int32) & _INT32_MAX
        if largest:
            key.bitwise_xor_(_INT32_MAX)  # == INT32_MAX - key: largest magnitude sorts first
        return key

    names = sorted(weights)
    if layerwise:
        kept: dict[str, Tensor] = {}
        for name in names:
            count = _still_to_remove([survivors[name]], sparsity, name)
            kept.update(_remove_smallest([name], keys, survivors, count))
    else:
        count = _still_to_remove(list(survivors.values()), sparsity, "current mask")
        kept = _remove_smallest(names, keys, survivors, count)
    return {name: kept[name].view(weights[name].shape) for name in weights}


def _rng_seed(seed: int, level: int, name: str, purpose: str = "random-mask") -> int:
    # Canonical JSON, not str() or hash(): stable across runs, processes and Python versions.
    text = json.dumps([purpose, seed, level, name])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def random_mask(shapes: Mapping[str, torch.Size], sparsity: float, seed: int, level: int) -> Mask:
    """A global uniformly random mask removing exactly ``removed_count(sparsity, total)`` weights.

    Each weight gets an independent uniform 31-bit key from a ``torch.Generator``
    seeded from ``(seed, level, tensor name)``; the smallest keys are removed
    (ties, rare, by canonical order). Identical for the same ``(seed, level)``,
    independent of the mapping's order; different seeds or levels differ.
    """
    _check_sparsity(sparsity)
    seed, level = operator.index(seed), operator.index(level)  # no silent float truncation
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}

    def keys(name: str) -> Tensor:
        generator = torch.Generator().manual_seed(_rng_seed(seed, level, name))
        return torch.randint(0, _INT32_MAX, (sizes[name],), generator=generator, dtype=torch.int32)

    names = sorted(shapes)
    survivors = {name: torch.ones(sizes[name], dtype=torch.bool) for name in names}
    kept = _remove_smallest(names, keys, survivors, removed_count(sparsity, sum(sizes.values())))
    return {name: kept[name].view(tuple(shape)) for name, shape in shapes.items()}


# ------------------------------------------------------- the paper's code, replayed


def stepwise_mask(weights: Mapping[str, Tensor], current: Mask, steps: int, rate: float = 0.1, *,
                  largest: bool = False) -> Mask:
    """``steps`` per-tensor pruning steps of ``rate`` from ``current``, no retraining in between.

    The paper's published code (docs/PAPER_CODE.md row a;
    ``src/tasks/lottery_ticket_hypothesis.py::weight_prune_layer``, looped by
    ``low_magnitude_pruning``): in every step, per tensor, the surviving
    ``|w|`` are sorted, ``cutoff = sorted[round(rate * n)]`` (n survivors,
    numpy's round half to even) and every survivor with ``|w| <= cutoff`` is
    removed, ties included: ``round(rate * n) + 1`` weights per step unless
    magnitudes tie. A tensor where that index does not exist (no survivor, or
    ``round(rate * n) == n``) is left as it is, as their ``except`` branch
    does. ``largest=True`` mirrors it on the largest magnitudes. The achieved
    sparsity is what the mask removes (above ``1 - (1 - rate) ** steps``);
    the result is a subset of ``current``, on the CPU. One sort per tensor
    (on the weights' device) serves every step.
    """
    if operator.index(steps) < 0 or not 0.0 < rate < 1.0:
        raise ValueError(f"stepwise pruning needs steps >= 0 and a rate in (0, 1), got {steps!r}, {rate!r}")
    out = {}
    for name, w in weights.items():
        _check_ranking_inputs(name, w, current[name])
        # On the weights' device: a GPU sorts LXMERT-base's tensors in milliseconds, a CPU takes about a minute.
        key = w.detach().float().reshape(-1).abs()
        if largest:
            key = -key
        kept = current[name].detach().to(key.device).reshape(-1).clone()
        # The weights do not change between steps, so the survivors are always a suffix of the survivors'
        # sorted keys: one sort, then each step is an index and a binary search.
        alive, start, cutoff = torch.sort(key[kept]).values, 0, None
        for _ in range(steps):
            n = alive.numel() - start
            index = int(np.round(rate * n))
            if index >= n:
                continue
            cutoff = alive[start + index]  # sorted survivors[round(rate * n)]
            start = int(torch.searchsorted(alive, cutoff, right=True))  # every survivor <= cutoff is removed
        if cutoff is not None:
            kept &= key > cutoff
        out[name] = kept.view(w.shape).cpu()
    return out


def _uniform_keys(purpose: str, seed: int, level: int, name: str, size: int) -> Tensor:
    generator = torch.Generator().manual_seed(_rng_seed(seed, level, name, purpose))
    return torch.randint(0, _INT32_MAX, (size,), generator=generator, dtype=torch.int32)


def _pick_random(purpose: str, seed: int, level: int, name: str, pool: Tensor, count: int) -> Tensor:
    """1-D flags of ``count`` entries of ``pool`` (1-D bool) drawn uniformly, seeded by (purpose, seed, level, name)."""
    keys = lambda _: _uniform_keys(purpose, seed, level, name, pool.numel())  # noqa: E731
    left = _remove_smallest([name], keys, {name: pool}, count)[name]
    return pool & ~left


def code_high_mask(low: Mask, seed: int, level: int) -> Mask:
    """The paper's code's "high magnitude" subnetwork, made from the low mask at the same nominal level.

    docs/PAPER_CODE.md row b (``lottery_ticket_hypothesis.py::high_magnitude_pruning``):
    per tensor, ``bad`` = the weights ``low`` removes, ``good`` = those it
    keeps. If ``|good| > |bad|`` it removes all of ``bad`` plus
    ``|good| - |bad|`` weights of ``good`` at random; else a random
    ``|good|``-sized subset of ``bad``. So it removes as many weights as low
    keeps, never the largest as such. Their ``random.sample`` is replaced by
    uniform keys seeded from ``(seed, level, tensor)``.
    """
    seed, level = operator.index(seed), operator.index(level)
    out = {}
    for name in sorted(low):
        good = low[name].detach().to("cpu").reshape(-1)
        bad = ~good
        n_good, n_bad = int(good.sum()), int(bad.sum())
        if n_good > n_bad:
            removed = bad | _pick_random("code-high", seed, level, name, good, n_good - n_bad)
        else:
            removed = _pick_random("code-high", seed, level, name, bad, n_good)
        out[name] = (~removed).view(low[name].shape)
    return {name: out[name] for name in low}


def code_random_mask(low: Mask, seed: int, level: int) -> Mask:
    """The paper's code's random subnetwork: per tensor, each weight removed with low's removed fraction.

    docs/PAPER_CODE.md row c (``lottery_ticket_hypothesis.py::get_random_mask``):
    a weight is removed where a uniform draw in [0, 1) is below the fraction
    of that tensor the low mask removes, so counts match low's only in
    expectation. Draws seeded from ``(seed, level, tensor)``.
    """
    seed, level = operator.index(seed), operator.index(level)
    out = {}
    for name, m in low.items():
        flat = m.detach().to("cpu").reshape(-1)
        fraction = 1.0 - int(flat.sum()) / flat.numel()
        generator = torch.Generator().manual_seed(_rng_seed(seed, level, name, "code-random"))
        draw = torch.rand(flat.numel(), generator=generator, dtype=torch.float64)
        out[name] = (draw >= fraction).view(m.shape)
    return out


def layer_random_mask(low: Mask, seed: int, level: int) -> Mask:
    """A layer-matched random control: per tensor, exactly as many random weights removed as ``low`` removes.

    It keeps *which tensors lose how many weights* from the ticket and makes
    *which weights* random (issue 11, point 4). Uniform keys seeded from
    ``(seed, level, tensor)``; the smallest are removed.
    """
    seed, level = operator.index(seed), operator.index(level)
    out = {}
    for name, m in low.items():
        flat = m.detach().to("cpu").reshape(-1)
        everything = torch.ones(flat.numel(), dtype=torch.bool)
        removed = _pick_random("layer-random", seed, level, name, everything, flat.numel() - int(flat.sum()))
        out[name] = (~removed).view(m.shape)
    return out


# --------------------------------------------------------------------------- structured masks

STRUCTURES = ("head", "neuron")  # the units a structured criterion removes whole
# A feed-forward block: its widening layer and the layer that narrows it back, as LXMERT names them.
_FFN = re.compile(r"^(.*\.)(intermediate|lang_inter|visn_inter)\.dense\.weight$")
_FFN_OUT = {"intermediate": "output", "lang_inter": "lang_output", "visn_inter": "visn_output"}


def attention_blocks(names: Sequence[str]) -> list[dict[str, str]]:
    """Each attention block whose four weights are all among ``names``: ``{"query", "key", "value", "output"}``
    (e.g. ``…layer.0.attention.self.query.weight`` … ``…layer.0.attention.output.dense.weight``)."""
    have, out = set(names), []
    for name in sorted(have):
        if not name.endswith(".query.weight"):
            continue
        base = name[: -len("query.weight")]
        root = base[:-1].rsplit(".", 1)[0]
        block = {"query": name, "key": base + "key.weight", "value": base + "value.weight",
                 "output": root + ".output.dense.weight"}
        if all(v in have for v in block.values()):
            out.append(block)
    return out


def ffn_blocks(names: Sequence[str]) -> list[dict[str, str]]:
    """Each feed-forward block whose two weights are among ``names``: ``{"inter", "output"}``."""
    have, out = set(names), []
    for name in sorted(have):
        m = _FFN.match(name)
        if m and f"{m.group(1)}{_FFN_OUT[m.group(2)]}.dense.weight" in have:
            out.append({"inter": name, "output": f"{m.group(1)}{_FFN_OUT[m.group(2)]}.dense.weight"})
    return out


def structured_groups(shapes: Mapping[str, torch.Size], heads: int,
                      kinds: Sequence[str] = STRUCTURES) -> list[tuple[str, int, list[tuple[str, int, int, int]]]]:
    """The removable units among the prunable tensors: ``(kind, index, slices)`` with each slice
    ``(tensor, dim, start, stop)``.

    A *head* of an attention block is its ``d = rows / heads`` rows of the query, key and value weights and
    the same ``d`` columns of the output weight: with them zero the head adds exactly nothing (its value
    bias is multiplied by the zero columns), so the block computes what the same block without that head
    computes. A *neuron* of a feed-forward block is one row of the widening weight and the same column of
    the narrowing one.
    """
    out = []
    names = list(shapes)
    if "head" in kinds:
        if heads < 1:
            raise ValueError("head pruning needs the model's number of attention heads (config.num_attention_heads)")
        for block in attention_blocks(names):
            rows = shapes[block["query"]][0]
            if rows % heads:
                raise ValueError(f"{block['query']}: {rows} rows do not split into {heads} heads")
            d = rows // heads
            for h in range(heads):
                sl = [(block[k], 0, h * d, (h + 1) * d) for k in ("query", "key", "value")]
                out.append(("head", h, sl + [(block["output"], 1, h * d, (h + 1) * d)]))
    if "neuron" in kinds:
        for block in ffn_blocks(names):
            for j in range(shapes[block["inter"]][0]):
                out.append(("neuron", j, [(block["inter"], 0, j, j + 1), (block["output"], 1, j, j + 1)]))
    return out


def _view(t: Tensor, dim: int, start: int, stop: int) -> Tensor:
    return t.narrow(dim, start, stop - start)


def structured_mask(weights: Mapping[str, Tensor], current: Mask, sparsity: float, heads: int,
                    kinds: Sequence[str] = STRUCTURES) -> Mask:
    """Remove whole heads and/or feed-forward neurons (``kinds``: "head", "neuron") until ``sparsity`` of the weights they cover
    is removed, lowest magnitude first.

    A unit's magnitude is the root mean square of its surviving weights (its group norm over the square root
    of its size: heads and neurons differ in size, so only a mean compares them). Units are removed whole,
    so the removed fraction of the covered weights lands at or just above ``sparsity`` (by less than one
    unit); weights no unit covers (the pooler, or everything when a model has no such blocks) are kept.
    Equal magnitudes: the unit whose first tensor name sorts first, then the lower index, goes first. The
    result is a subset of ``current``.
    """
    _check_sparsity(sparsity)
    shapes = {n: w.shape for n, w in weights.items()}
    groups = structured_groups(shapes, heads, kinds)
    kept = {n: current[n].detach().to("cpu").clone() for n in weights}
    covered = {n for _, _, sl in groups for n, *_ in sl}
    total = sum(weights[n].numel() for n in covered)
    if total == 0:
        raise ValueError(f"no {' or '.join(kinds)} among the prunable tensors: nothing to remove")
    target = removed_count(sparsity, total)
    removed = sum(int((~kept[n]).sum()) for n in covered)
    # Per tensor and dimension, the sum of squares and the survivors of every row (dim 0) or column (dim 1),
    # once: a unit is a run of rows or columns, so its totals are slices of these (LXMERT-base has ~74k units).
    sums: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}
    for n, d in {(n, d) for _, _, sl in groups for n, d, *_ in sl}:
        k = kept[n]
        w = weights[n].detach().float().cpu() * k
        sums[(n, d)] = (w.pow(2).sum(dim=1 - d, dtype=torch.float64), k.sum(dim=1 - d))
    scored = []
    for kind, index, sl in groups:
        alive = sum(int(sums[(n, d)][1][a:b].sum()) for n, d, a, b in sl)
        if alive == 0:
            continue
        sq = sum(float(sums[(n, d)][0][a:b].sum()) for n, d, a, b in sl)
        size = sum((b - a) * weights[n].shape[1 - d] for n, d, a, b in sl)
        scored.append((math.sqrt(sq / size), sl[0][0], index, alive, sl))
    for _, _, _, alive, sl in sorted(scored, key=lambda x: x[:3]):
        if removed >= target:
            break
        for n, d, a, b in sl:
            _view(kept[n], d, a, b).fill_(False)
        removed += alive
    return {n: kept[n] for n in weights}


def shrink_spec(mask: Mask, heads: int) -> dict:
    """What a physically smaller model drops (lxsweep/shrunk_lxmert.py's ``config.shrunk``): per attention block
    and feed-forward block, the heads and neurons ``mask`` does not remove *whole* (a unit the mask only thins
    stays, its zeros with it). Blocks that lose nothing are left out; ``{}`` when no unit is removed whole."""
    shapes = {n: m.shape for n, m in mask.items()}
    dead: dict[tuple[str, str], set[int]] = {}
    units: dict[tuple[str, str], int] = {}
    for kind, index, sl in structured_groups(shapes, heads, STRUCTURES if heads > 0 else ("neuron",)):
        block = (kind, sl[0][0])
        units[block] = units.get(block, 0) + 1
        if not any(mask[n].narrow(d, a, b - a).any() for n, d, a, b in sl):
            dead.setdefault(block, set()).add(index)
    out: dict[str, list] = {}
    for (kind, first), gone in sorted(dead.items()):
        keep = [i for i in range(units[(kind, first)]) if i not in gone]
        if kind == "head":
            block = next(b for b in attention_blocks(list(mask)) if b["query"] == first)
            out.setdefault("attention", []).append({"attention": first[: -len(".query.weight")],
                                                "output": block["output"][: -len(".weight")], "keep": keep})
        else:
            block = next(b for b in ffn_blocks(list(mask)) if b["inter"] == first)
            out.setdefault("feed_forward", []).append({"inter": first[: -len(".weight")],
                                                  "output": block["output"][: -len(".weight")], "keep": keep})
    return out


def nm_mask(weights: Mapping[str, Tensor], current: Mask, n: int = 2, m: int = 4) -> Mask:
    """N:M semi-structured sparsity: in every group of ``m`` consecutive weights along the input dimension
    (a row's columns), keep the ``n`` of largest ``|w|`` among those ``current`` keeps (2:4: what NVIDIA's
    sparse tensor cores and ``torch.sparse.to_sparse_semi_structured`` take). A tensor whose input dimension
    is not a multiple of ``m`` is kept whole. Ties: the earlier column is kept. A subset of ``current``."""
    if not 0 < n < m:
        raise ValueError(f"N:M sparsity needs 0 < N < M, got {n}:{m}")
    out = {}
    for name, w in weights.items():
        keep = current[name].detach().to("cpu")
        if w.dim() != 2 or w.shape[1] % m:
            out[name] = keep.clone()
            continue
        mag = w.detach().float().cpu().abs().masked_fill(~keep, -1.0).view(w.shape[0], -1, m)
        # stable descending order: among equal magnitudes the earlier column ranks first
        order = torch.sort(-mag, dim=2, stable=True).indices
        top = torch.zeros_like(mag, dtype=torch.bool).scatter_(2, order[..., :n], True)
        out[name] = top.view(w.shape) & keep
    return out


# --------------------------------------------------------------------------- files


def save_mask(mask: Mask, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``mask`` to a safetensors file, bit-packed (1 bit per weight), atomically.

    Each tensor is stored as ``np.packbits`` of its flattened flags (uint8); the
    shapes and the name order go into the file's metadata together with the
    caller's string ``metadata``. The file is written beside ``path`` under a
    temporary name and moved into place, so readers see the old file or the new
    one, never half of one.
    """
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"mask metadata must map str to str, got {key!r}: {value!r}")
        if key.startswith("lxsweep.mask."):
            raise ValueError(f"metadata key {key!r} is reserved for the mask format")
    packed, shapes = {}, {}
    for name, m in mask.items():
        if m.dtype != torch.bool:
            raise ValueError(f"mask for {name} must be bool, got {m.dtype}")
        flags = m.detach().to("cpu").contiguous().numpy().reshape(-1)
        packed[name] = torch.from_numpy(np.packbits(flags))
        shapes[name] = list(m.shape)
    metadata[_FORMAT_KEY] = _PACKED_FORMAT
    metadata[_SHAPES_KEY] = json.dumps(shapes)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(packed, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the rename must not outlive the data on a crash
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_mask(path: str | os.PathLike) -> Mask:
    """Read a mask written by :func:`save_mask` (or a safetensors file of bool tensors).

    Returns CPU bool tensors with the saved names, order and shapes.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get(_FORMAT_KEY) is None:
            return {name: _require_bool(f.get_tensor(name), name, path) for name in f.keys()}
        if meta[_FORMAT_KEY] != _PACKED_FORMAT:
            raise ValueError(
                f"{path}: unknown mask format {meta[_FORMAT_KEY]!r}, expected {_PACKED_FORMAT!r}"
            )
        shapes = json.loads(meta[_SHAPES_KEY])
        mask = {}
        for name, shape in shapes.items():
            numel = math.prod(shape)
            bits = np.unpackbits(f.get_tensor(name).numpy(), count=numel)
            mask[name] = torch.from_numpy(bits.view(np.bool_)).reshape(shape)
        return mask


def _require_bool(tensor: Tensor, name: str, path: str | os.PathLike) -> Tensor:
    if tensor.dtype != torch.bool:
        raise ValueError(f"{path}: {name} is {tensor.dtype}; a mask file holds bool or bit-packed tensors")
    return tensor


def read_mask_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The caller's metadata stored with a mask by :func:`save_mask` (format keys left out)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: v for k, v in meta.items() if not k.startswith("lxsweep.mask.")}


# ---------------------------------------------------------------------- enforcing


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training.

    ``MaskEnforcer(model, mask)`` resolves mask names to the model's parameters
    (KeyError naming any that are missing), keeps float masks on each
    parameter's device and dtype, and zeroes the pruned entries at once. Then,
    every step::

        loss.backward()
        enforcer.zero_grads()   # before clipping / optimizer.step()
        optimizer.step()
        enforcer.apply()        # after optimizer.step()

    ``zero_grads`` keeps gradients (hence Adam moments) of pruned weights at
    zero; ``apply`` undoes what weight decay or existing optimizer state did to
    them. Both are one fused ``torch._foreach_mul_`` call over all tensors.
    Build the enforcer after moving the model to its device.
    """

    def __init__(self, model: torch.nn.Module, mask: Mask) -> None:
        params = dict(model.named_parameters())
        missing = [name for name in mask if name not in params]
        if missing:
            raise KeyError(f"mask names {len(missing)} parameter(s) the model does not have: {missing[:5]}")
        self.names: list[str] = list(mask)
        self._params: list[torch.nn.Parameter] = [params[n] for n in self.names]
        self._masks: list[Tensor] = []
        for name, param in zip(self.names, self._params):
            if mask[name].shape != param.shape:
                raise ValueError(
                    f"mask for {name} has shape {tuple(mask[name].shape)}, parameter has {tuple(param.shape)}"
                )
            self._masks.append(mask[name].to(device=param.device, dtype=param.dtype))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Multiply the weights by their masks in place (call after ``optimizer.step()``)."""
        torch._foreach_mul_(self._params, self._masks)

    @torch.no_grad()
    def zero_grads(self) -> None:
        """Multiply existing gradients by the masks (call after backward, before clip/step)."""
        pairs = [(p.grad, m) for p, m in zip(self._params, self._masks) if p.grad is not None]
        if pairs:
            grads, masks = zip(*pairs)
            torch._foreach_mul_(list(grads), list(masks))
