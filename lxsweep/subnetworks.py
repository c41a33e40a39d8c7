"""Subnetworks as data: the registry every module reads (plan, train, report, status, CLI, config).

A subnetwork is named by a *criterion* or a *control* (or is ``dense``):

- a **criterion** decides which weights are removed and where its scores come
  from. It is ``iterative`` (a chain: the mask of level k is computed from the
  trained weights of level k-1 of the same chain; level 1 from the dense
  model), ``generated`` (no parent: the mask is made at the start of the
  trial from the seed and the level), or it ``follows`` an iterative
  criterion: its mask of level k is derived from that criterion's mask of
  level k (``MaskInputs.followed``), computed right after it by the same
  parent trial, so it adds no fine-tune and no edge to the DAG beyond the
  followed chain's (the replays of the paper's code ``code_high`` and
  ``code_random``, docs/PAPER_CODE.md, and the layer-matched random control
  ``layer_random``);
- a **control** decides which weights the kept ones start from and where its
  mask comes from: ``reinit`` trains the ``low`` chain's mask from fresh random
  weights; ``scratch`` trains the dense model from fresh random weights, no
  mask, at level 0 (no pretraining); ``probe`` freezes the rewind point and
  trains only a fresh answer head, for ``training.probe_steps`` steps (what the
  starting weights already solve).

Adding a criterion is one function plus one :func:`register_criterion` call,
e.g. in a plugin module named in the experiment's ``plugins`` list (imported
wherever an experiment is built: the driver and every Ray worker).

Light on purpose: no torch at import (config validation reads the names).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Optional, Union

if TYPE_CHECKING:
    import torch

DENSE = "dense"  # level 0: the fine-tuned rewind point, parent of every chain
SCRATCH, PROBE = "scratch", "probe"  # the level-0 controls the report's rewind-point check reads
DEFAULT = ("low", "high", "random")  # pruning.subnetworks when an experiment names none
FRESH_INIT = "reinit"  # seed purpose of a control's fresh weights (kept: stores' reinit results depend on it)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Styles for names registered without one and for names a report finds but the registry lacks.
_PALETTE = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ffbb78", "#aec7e8", "#98df8a")
_MARKERS = ("v", "P", "X", "*", "h", "<", ">", "p")


@dataclass(frozen=True)
class MaskInputs:
    """What a criterion sees when it makes the mask of one level.

    ``weights``: the prunable tensors by name (iterative: the parent trial's
    trained weights; generated: the rewind point's). ``current``: the parent's
    mask (all True at level 1 and for generated criteria); a child mask must
    be a subset of it. ``sparsity``: the fraction of all prunable weights the
    result removes (the nominal one under ``schedule: stepwise``).

    ``steps`` (``pruning.schedule: stepwise`` only, else 0): take this many
    per-tensor steps of ``rate`` from ``current`` instead of pruning to
    ``sparsity`` (:func:`lxsweep.pruning.stepwise_mask`). ``followed``: for a
    criterion that ``follows`` another, that criterion's mask at this level
    (else None). ``heads``: attention heads per block, for criteria that remove
    whole heads.
    """

    weights: Mapping[str, "torch.Tensor"]
    current: Mapping[str, "torch.Tensor"]
    sparsity: float
    seed: int
    level: int
    layerwise: bool
    steps: int = 0
    rate: float = 0.0
    followed: Optional[Mapping[str, "torch.Tensor"]] = None
    heads: int = 0  # the model's attention heads per block (config.num_attention_heads; 0: unknown)


MaskFn = Callable[[MaskInputs], dict]
InitFn = Callable[["torch.nn.Module", int], None]


@dataclass(frozen=True)
class Criterion:
    """Which weights are removed: ``mask(inputs)`` returns the kept-weights mask."""

    name: str
    mask: MaskFn
    iterative: bool  # True: a chain (parent = level k-1); False: generated at the trial's start (or follows)
    scores: str  # where its scores come from, one line (docs, `lxsweep plan`)
    color: Optional[str] = None
    marker: Optional[str] = None
    follows: Optional[str] = None  # an iterative criterion whose mask at the same level this one is derived from
    compare: tuple[str, ...] = ()  # subnetworks (or dense) the report tests this one against, seed by seed
    ticket: bool = False  # the lottery ticket: `lxsweep status` reports its sparsest trial near dense
    # Its own target sparsity given the level's (a follower may remove other counts than the one it follows).
    sparsity: Callable[[float], float] = lambda level_sparsity: level_sparsity

    @property
    def generated(self) -> bool:
        """Made at the trial's start from the seed and level: no parent, no stored mask before it runs."""
        return not self.iterative and self.follows is None

    @property
    def chain(self) -> Optional[str]:
        """The iterative criterion whose chain computes this mask (itself, the one it follows), or None."""
        return self.name if self.iterative else self.follows


@dataclass(frozen=True)
class Control:
    """Which weights the kept ones start from (``init(model, seed)``) and whose mask they train with."""

    name: str
    mask_of: Optional[str]  # the criterion whose mask it trains with; None = no mask, level 0 only
    init: InitFn
    start: str  # where the kept weights start, one line
    color: Optional[str] = None
    marker: Optional[str] = None
    compare: tuple[str, ...] = ()  # subnetworks (or dense) the report tests this one against, seed by seed
    # "all": every weight trains (the fine-tune's recipe); "head": only the answer head trains, the rest frozen,
    # for training.probe_steps steps at training.probe_lr (a probe of what the starting weights already solve)
    trains: str = "all"


Subnetwork = Union[Criterion, Control]
_REGISTRY: dict[str, Subnetwork] = {}
_BUILTIN: set[str] = set()


def _register(entry: Subnetwork) -> Subnetwork:
    if not _NAME.match(entry.name) or entry.name == DENSE:
        raise ValueError(f"subnetwork name {entry.name!r}: expected letters, digits and '_', not {DENSE!r}")
    if entry.name in _BUILTIN:
        raise ValueError(f"subnetwork {entry.name!r} is built in; register your variant under another name")
    _REGISTRY[entry.name] = entry  # a plugin module imported again replaces its own entry
    return entry


def register_criterion(name: str, mask: MaskFn, *, iterative: bool, scores: str,
                       color: Optional[str] = None, marker: Optional[str] = None,
                       follows: Optional[str] = None, compare: tuple[str, ...] = (),
                       ticket: bool = False, sparsity: Optional[Callable[[float], float]] = None) -> Criterion:
    """Add a pruning criterion. ``mask(MaskInputs) -> {name: bool tensor}`` (True = kept).

    ``follows``: a registered iterative criterion; the mask is then made from
    ``MaskInputs.followed`` (that criterion's mask at the same level) by the
    trial that computes it, and ``iterative`` must be False. ``compare``: the
    subnetworks (or ``dense``) the report pairs this one with, seed by seed, at
    every level both have (:func:`comparisons`). ``ticket``: this criterion
    makes the lottery tickets (one criterion does; the last registered wins).
    ``sparsity(level_sparsity)``: the fraction this criterion removes at a level
    (default: the level's; ``lxsweep plan`` prints it).
    """
    if follows is not None:
        target = _REGISTRY.get(follows)
        if iterative or not isinstance(target, Criterion) or not target.iterative:
            raise ValueError(f"criterion {name!r}: follows {follows!r} needs a registered iterative criterion "
                             "and iterative=False")
    entry = Criterion(name, mask, iterative, scores, color, marker, follows, tuple(compare), ticket)
    return _register(entry if sparsity is None else dataclasses.replace(entry, sparsity=sparsity))


def register_control(name: str, *, mask_of: Optional[str], init: InitFn, start: str,
                     color: Optional[str] = None, marker: Optional[str] = None,
                     compare: tuple[str, ...] = (), trains: str = "all") -> Control:
    """Add a control. ``mask_of``: a registered criterion (its mask at each level) or None (dense, level 0);
    ``compare`` as for :func:`register_criterion`; ``trains``: "all" or "head" (see :class:`Control`)."""
    if mask_of is not None and not isinstance(_REGISTRY.get(mask_of), Criterion):
        raise ValueError(f"control {name!r}: mask_of {mask_of!r} is not a registered criterion")
    if trains not in ("all", "head"):
        raise ValueError(f"control {name!r}: trains {trains!r}: expected 'all' or 'head'")
    return _register(Control(name, mask_of, init, start, color, marker, tuple(compare), trains))


# -- lookups ------------------------------------------------------------------


def names() -> tuple[str, ...]:
    """Every registered subnetwork, in registration order (built-ins first)."""
    return tuple(_REGISTRY)


def get(name: str) -> Subnetwork:
    """The registered criterion or control; ValueError naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown subnetwork {name!r} — use one of {', '.join(_REGISTRY)} "
                         "(or register it in a module named under `plugins`)") from None


def criterion(name: str) -> Optional[Criterion]:
    """The criterion whose mask ``name`` trains with (itself, a control's ``mask_of``), or None."""
    if name == DENSE:
        return None
    entry = get(name)
    if isinstance(entry, Criterion):
        return entry
    return get(entry.mask_of) if entry.mask_of else None  # type: ignore[return-value]


def control(name: str) -> Optional[Control]:
    """The control ``name`` names, or None (dense or a criterion)."""
    entry = None if name == DENSE else get(name)
    return entry if isinstance(entry, Control) else None


def levels(name: str, num_levels: int) -> range:
    """The levels a subnetwork trains at: 0 without a mask (dense, scratch), else 1..L."""
    return range(0, 1) if criterion(name) is None else range(1, num_levels + 1)


def chains(wanted: list[str]) -> list[str]:
    """Iterative criteria whose masks the wanted subnetworks need (followers need the one they follow),
    in registration order."""
    need = {c.chain for c in map(criterion, wanted) if c is not None and c.chain}
    return [n for n in _REGISTRY if n in need]


def followers(chain: str, wanted: list[str]) -> list[str]:
    """Criteria that follow ``chain`` and whose masks the wanted subnetworks need, in registration order."""
    need = {c.name for c in map(criterion, wanted) if c is not None and c.follows == chain}
    return [n for n in _REGISTRY if n in need]


def ticket() -> str:
    """The criterion that makes the lottery tickets (``ticket=True``): ``trial`` names it by default above
    level 0, ``training.keep_weights: tickets`` keeps its weights, ``status`` reports its sparsest trial."""
    marked = [entry.name for entry in _REGISTRY.values() if isinstance(entry, Criterion) and entry.ticket]
    if not marked:
        raise ValueError("no registered criterion has ticket=True")
    return marked[-1]


def comparisons(present: Optional[Iterable[str]] = None) -> list[tuple[str, str]]:
    """The pairs ``(a, b)`` the report tests against seed noise: every ``compare`` entry, in registration order.

    ``present``: only the pairs whose two sides are both in it (``dense`` counts as present when named).
    """
    pairs = [(entry.name, other) for entry in _REGISTRY.values() for other in entry.compare]
    if present is None:
        return pairs
    have = set(present)
    return [(a, b) for a, b in pairs if a in have and b in have]


def order(name: str) -> int:
    """Sort rank: dense first, then registration order, then names the registry lacks."""
    if name == DENSE:
        return 0
    return 1 + (list(_REGISTRY).index(name) if name in _REGISTRY else len(_REGISTRY))


def style(name: str) -> tuple[str, str]:
    """(colour, marker) for figures: the registered one, else picked from the name (stable everywhere)."""
    entry = _REGISTRY.get(name)
    pick = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    color = entry.color if entry is not None and entry.color else _PALETTE[pick % len(_PALETTE)]
    marker = entry.marker if entry is not None and entry.marker else _MARKERS[pick // len(_PALETTE) % len(_MARKERS)]
    return color, marker


# -- the built-ins ------------------------------------------------------------


def _magnitude(largest: bool) -> MaskFn:
    def mask(inputs: MaskInputs) -> dict:
        from lxsweep.pruning import magnitude_mask, stepwise_mask

        if inputs.steps:  # schedule: stepwise (the paper's code, docs/PAPER_CODE.md row a)
            return stepwise_mask(inputs.weights, inputs.current, inputs.steps, inputs.rate, largest=largest)
        return magnitude_mask(inputs.weights, inputs.current, inputs.sparsity, largest=largest,
                              layerwise=inputs.layerwise)
    return mask


def _random(inputs: MaskInputs) -> dict:
    from lxsweep.pruning import random_mask

    return random_mask({n: w.shape for n, w in inputs.weights.items()}, inputs.sparsity, inputs.seed, inputs.level)


def _structured(kinds: tuple[str, ...]) -> MaskFn:
    def mask(inputs: MaskInputs) -> dict:
        from lxsweep.pruning import structured_mask

        if inputs.steps:
            raise ValueError(f"{'+'.join(kinds)} masks are removed whole, level by level: use schedule "
                             f"iterative or oneshot, not stepwise")
        return structured_mask(inputs.weights, inputs.current, inputs.sparsity, inputs.heads, kinds)
    return mask


def _nm24(inputs: MaskInputs) -> dict:
    from lxsweep.pruning import nm_mask

    return nm_mask(inputs.weights, inputs.current, 2, 4)


def _follower(kind: str) -> MaskFn:
    def mask(inputs: MaskInputs) -> dict:
        from lxsweep import pruning

        if inputs.followed is None:
            raise ValueError(f"{kind}: needs the followed criterion's mask at level {inputs.level} (MaskInputs.followed)")
        return getattr(pruning, f"{kind}_mask")(inputs.followed, inputs.seed, inputs.level)
    return mask


def _fresh(model: "torch.nn.Module", seed: int) -> None:
    from lxsweep.model import reinitialize

    reinitialize(model, seed)


def _as_loaded(model: "torch.nn.Module", seed: int) -> None:
    """The rewind point as loaded (its answer head seeded like every trial's)."""


# `compare`: the pairs the report tests against seed noise (a name registered later, or absent from a store,
# simply yields no rows). The ticket against dense, random and high; the mask alone (reinit) against the ticket.
register_criterion("low", _magnitude(largest=False), iterative=True, color="#1f77b4", marker="o", ticket=True,
                   compare=(DENSE, "random", "high", "code_random", "code_high", "layer_random"),
                   scores="|w| of the parent's trained weights: smallest removed (the lottery ticket)")
register_criterion("high", _magnitude(largest=True), iterative=True, color="#ff7f0e", marker="s",
                   compare=("random",), scores="|w| of the parent's trained weights: largest removed")
register_criterion("random", _random, iterative=False, color="#2ca02c", marker="^", compare=(DENSE,),
                   scores="uniform keys seeded by (seed, level, tensor): smallest removed")
register_control("reinit", mask_of="low", init=_fresh, color="#9467bd", marker="D", compare=("low", "random"),
                 start="fresh random weights (seeded by the trial) under the low chain's mask")
register_control(SCRATCH, mask_of=None, init=_fresh, color="#d62728", marker="x",
                 start="fresh random weights, no mask, no pretraining: the dense model trained from scratch")
# What the rewind point already solves (issue 24): its encoder frozen, only a fresh answer head trained.
register_control(PROBE, mask_of=None, init=_as_loaded, color="#7f7f7f", marker="*", trains="head",
                 start="the rewind point frozen; only a fresh answer head trains (training.probe_steps steps)")
# The published code's subnetworks (docs/PAPER_CODE.md rows b, c) and the layer-matched control (issue 11).
register_criterion("code_high", _follower("code_high"), iterative=False, follows="low", color="#ff9896", marker="s",
                   compare=("code_random", "random"), sparsity=lambda level_sparsity: 1.0 - level_sparsity, scores="the paper's code's 'high': from the low mask at the same level, per tensor, removes as "
                          "many as low keeps, from low's removed weights first, then at random")
register_criterion("code_random", _follower("code_random"), iterative=False, follows="low", color="#98df8a",
                   marker="^", compare=("random",), scores="the paper's code's 'random': per tensor, each weight removed with the low "
                                      "mask's removed fraction as a probability (counts approximate)")
register_criterion("layer_random", _follower("layer_random"), iterative=False, follows="low", color="#006400",
                   marker="v", compare=("random",), scores="random weights, seeded by (seed, level, tensor), removed with the low "
                                      "mask's exact per-tensor counts")
# Structured tickets (issue 25): whole units removed, so an export can be physically smaller (`export --shrink`).
# A level's sparsity is of the weights the units cover (the pooler is never removed); units go whole, so each
# level lands at or just above it.
register_criterion("heads", _structured(("head",)), iterative=True, color="#17becf", marker="P",
                   compare=(DENSE, "low"), scores="RMS of each attention head's weights (query/key/value rows, "
                                                  "output columns) of the parent's trained weights: lowest heads removed whole")
register_criterion("neurons", _structured(("neuron",)), iterative=True, color="#bcbd22", marker="X",
                   compare=(DENSE, "low"), scores="RMS of each feed-forward neuron's weights (its row in and column out) of "
                                                  "the parent's trained weights: lowest neurons removed whole")
register_criterion("structured", _structured(("head", "neuron")), iterative=True, color="#e377c2", marker="h",
                   compare=(DENSE, "low"), scores="heads and feed-forward neurons ranked together by the RMS of their "
                                                  "weights (parent's trained weights): lowest removed whole")
# 2:4 is one pattern, 50% of every tensor whose input dimension is a multiple of 4, whatever the level.
register_criterion("nm24", _nm24, iterative=True, color="#8c564b", marker=">", compare=(DENSE, "low"),
                   sparsity=lambda level_sparsity: 0.5,
                   scores="|w| of the parent's trained weights: the 2 largest of every 4 consecutive inputs kept (2:4)")
_BUILTIN.update(_REGISTRY)
