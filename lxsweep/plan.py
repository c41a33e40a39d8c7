"""The grid of trials as a DAG: which trial needs which, in what order to run them.

A trial is keyed ``(level, subnetwork, seed)``; level 0 is the dense model.
What a subnetwork needs comes from its registry entry (lxsweep/subnetworks.py):
an iterative criterion's level k takes its mask from level k-1 of its chain
(or from the dense weights with ``schedule: oneshot`` or ``stepwise``); a
criterion that ``follows`` one gets its mask from the same parent trial as
the followed one's (computed right after it); a generated criterion needs
nothing unless every trial rewinds to a step of the dense fine-tune; a
control hangs off the chain whose mask it trains with, or off nothing. With
``rewind.dense_seed`` every seed's chains hang off that one seed's dense trial.

Pure: no Ray, no files. The sweep's searcher, ``lxsweep plan`` and
``lxsweep trial`` (missing ancestors) use it, and so does the scheduler benchmark.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

from lxsweep import subnetworks
from lxsweep.config import Experiment, canonical_hash
from lxsweep.subnetworks import DENSE


@dataclass(frozen=True, order=True)
class TrialKey:
    level: int
    subnetwork: str
    seed: int

    @property
    def name(self) -> str:
        """Readable, filesystem-safe id, e.g. ``low-L3-s1``; also the mask and run name."""
        return f"{self.subnetwork}-L{self.level}-s{self.seed}"

    @staticmethod
    def parse(name: str) -> "TrialKey":
        sub, level, seed = name.rsplit("-", 2)
        return TrialKey(int(level[1:]), sub, int(seed[1:]))

    def __str__(self) -> str:
        return self.name

    def seed_for(self, purpose: str) -> int:
        """A 31-bit seed derived from the key and a purpose (canonical JSON, stable everywhere): a trial
        seeds its answer head, dropout, data order and masks from its key alone."""
        return int(canonical_hash([self.seed, self.level, self.subnetwork, purpose], 8), 16) & 0x7FFFFFFF


def dense_key(seed: int, exp: Experiment | None = None) -> TrialKey:
    """The dense trial a trial of ``seed`` starts from: its own seed's, or ``rewind.dense_seed``'s with ``exp``."""
    return TrialKey(0, DENSE, exp.dense_seed(seed) if exp is not None else seed)


def trial_key(exp: Experiment, level: int, subnetwork: str | None, seed: int) -> TrialKey:
    """The key a user names by level, subnetwork and seed (``lxsweep trial``).

    No subnetwork: dense at level 0, the lottery ticket above. A subnetwork
    that trains only at levels >= 1 names the dense model at level 0.
    """
    if subnetwork is None:
        subnetwork = DENSE if level == 0 else subnetworks.ticket()
    elif level == 0 and subnetwork != DENSE and 0 not in subnetworks.levels(subnetwork, exp.num_levels):
        subnetwork = DENSE
    return TrialKey(level, subnetwork, seed)


def validate_key(exp: Experiment, key: TrialKey) -> None:
    """ValueError naming what is wrong with a trial key for this experiment."""
    if key.seed not in exp.seeds:
        raise ValueError(f"seed {key.seed} is not in the experiment's seeds {exp.seeds}")
    if not 0 <= key.level <= exp.num_levels:
        raise ValueError(f"level {key.level} is outside 0..{exp.num_levels}")
    if key.subnetwork == DENSE:
        if key.level != 0:
            raise ValueError(f"{DENSE} is level 0 only")
        if key.seed != exp.dense_seed(key.seed):
            raise ValueError(f"{DENSE} trains once, with seed {exp.rewind.dense_seed} (rewind.dense_seed)")
        return
    allowed = subnetworks.levels(key.subnetwork, exp.num_levels)  # ValueError for an unknown name
    if key.level not in allowed:
        raise ValueError(f"{key.subnetwork} trains at level{'s' if len(allowed) > 1 else ''} "
                         f"{allowed[0]}{f'..{allowed[-1]}' if len(allowed) > 1 else ''}, not {key.level}")


def mask_source(exp: Experiment, key: TrialKey) -> str | None:
    """Name of the stored mask this trial trains with (None: no mask, or one generated at its start)."""
    crit = subnetworks.criterion(key.subnetwork)
    if key.level == 0 or crit is None or crit.generated:
        return None
    return TrialKey(key.level, crit.name, key.seed).name


def trial_sparsity(exp: Experiment, key: TrialKey) -> float:
    """The target fraction of prunable weights trial ``key`` removes: its criterion's at the level's sparsity."""
    crit = subnetworks.criterion(key.subnetwork)
    return 0.0 if key.level == 0 or crit is None else crit.sparsity(exp.sparsity(key.level))


def trial_mask_name(exp: Experiment, key: TrialKey) -> str | None:
    """The stored mask trial ``key`` trains with (its parent's child mask or its own generated one), if any."""
    if key.level == 0 or subnetworks.criterion(key.subnetwork) is None:
        return None
    return mask_source(exp, key) or key.name


def parent(exp: Experiment, key: TrialKey) -> TrialKey | None:
    """The trial whose results this one needs, or None."""
    crit = subnetworks.criterion(key.subnetwork)
    if key.level == 0 or crit is None:
        return None
    if crit.generated:
        return dense_key(key.seed, exp) if exp.rewind.to == "step" else None
    if key.level == 1 or exp.from_dense:
        return dense_key(key.seed, exp)
    return TrialKey(key.level - 1, crit.chain, key.seed)


def keeps_weights(exp: Experiment, key: TrialKey) -> bool:
    """``training.keep_weights``: every trial, only tickets (the ticket criterion and dense), or none."""
    keep = exp.training.keep_weights
    return keep == "all" or (keep == "tickets" and key.subnetwork in (DENSE, subnetworks.ticket()))


def child_masks(exp: Experiment, key: TrialKey) -> list[TrialKey]:
    """The masks this trial computes from its trained weights when it finishes.

    Each is named after the trial that trains with it (``low-L3-s0`` is the
    mask low level 3 uses). Dense feeds level 1 of every chain (iterative) or
    every level a trial trains (oneshot, stepwise; every level when the dense
    weights are not kept, as nothing could rebuild one later); a chain trial feeds its chain's next
    level, also past the last planned one when the schedule defines it (a rate
    does, an explicit ``sparsities`` list ends): the mask is small, and raising
    ``pruning.levels`` later then continues every finished chain from the
    store. Every chain mask is followed by the masks of the wanted criteria
    that follow it at the same level (made from it). With ``rewind.dense_seed``
    the one dense trial computes them for every seed.
    """
    wanted = exp.pruning.subnetworks
    chains = subnetworks.chains(wanted)

    def with_followers(level: int, chain: str, seed: int) -> list[TrialKey]:
        return [TrialKey(level, c, seed) for c in [chain, *subnetworks.followers(chain, wanted)]]

    levels = range(1, exp.num_levels + 1)
    if key.subnetwork == DENSE:
        seeds = [s for s in exp.seeds if exp.dense_seed(s) == key.seed] or [key.seed]
        if not exp.from_dense:
            return [k for s in seeds for c in chains for k in with_followers(1, c, s)]
        if not keeps_weights(exp, key):
            return [k for s in seeds for c in chains for level in levels for k in with_followers(level, c, s)]
        # From the dense weights, only the masks planned trials train with (their mask_source: a control's is its
        # chain's): with paper-code.yaml's 22 steps and 9 trained levels, 9 of 22 (LXMERT-base: ~22 MB each, per
        # criterion and seed). A chain's mask is also made where a follower of it trains (the follower is made
        # from it). A level asked for later is rebuilt from the kept dense weights (masks._mask_from_kept_weights).
        needed = {mask_source(exp, TrialKey(lv, c, s)) for c in wanted for lv in exp.levels_of(c) if lv > 0 for s in seeds}
        out = []
        for s in seeds:
            for c in chains:
                for level in levels:
                    group = [k for k in with_followers(level, c, s) if k.name in needed]
                    if group and group[0].subnetwork != c:
                        group.insert(0, TrialKey(level, c, s))
                    out += group
        return out
    entry = subnetworks.get(key.subnetwork)
    if isinstance(entry, subnetworks.Criterion) and entry.iterative and exp.pruning.schedule == "iterative":
        if exp.pruning.sparsities is not None and key.level >= len(exp.pruning.sparsities):
            return []
        return with_followers(key.level + 1, key.subnetwork, key.seed)
    return []


@dataclass
class Plan:
    """All trials of an experiment, their dependencies and a run order."""

    exp: Experiment

    @cached_property
    def _universe(self) -> set[TrialKey]:
        """The trials the experiment asks for (dense included) plus their ancestors."""
        exp, wanted = self.exp, set()
        for seed in exp.seeds:
            asked = [dense_key(seed, exp)] + [TrialKey(k, s, seed) for s in exp.pruning.subnetworks for k in exp.levels_of(s)]
            for key in asked:
                while key is not None and key not in wanted:
                    wanted.add(key)
                    key = parent(exp, key)
        return wanted

    @cached_property
    def trials(self) -> list[TrialKey]:
        """Every trial to run, highest priority first."""
        return sorted(self._universe, key=self.priority)

    @cached_property
    def parents(self) -> dict[TrialKey, TrialKey | None]:
        return {k: parent(self.exp, k) for k in self._universe}

    @cached_property
    def children(self) -> dict[TrialKey, list[TrialKey]]:
        out: dict[TrialKey, list[TrialKey]] = {}
        for k, p in sorted(self.parents.items()):
            if p is not None:
                out.setdefault(p, []).append(k)
        return out

    @cached_property
    def height(self) -> dict[TrialKey, int]:
        """Fine-tunes on the longest path from a trial to the end of the sweep, itself included."""
        memo: dict[TrialKey, int] = {}
        for k in sorted(self._universe, key=lambda k: -k.level):  # children before parents
            memo[k] = 1 + max((memo[c] for c in self.children.get(k, [])), default=0)
        return memo

    def priority(self, key: TrialKey) -> tuple:
        """Sort key: longest remaining path first, then seed, level, subnetwork."""
        return (-self.height[key], key.seed, key.level, subnetworks.order(key.subnetwork))

    def descendants(self, key: TrialKey) -> list[TrialKey]:
        out, todo = [], list(self.children.get(key, []))
        while todo:
            k = todo.pop()
            out.append(k)
            todo.extend(self.children.get(k, []))
        return sorted(out, key=self.priority)

    def missing_ancestors(self, key: TrialKey, done: Iterable[TrialKey]) -> list[TrialKey]:
        """The ancestors of ``key`` not in ``done``, oldest first: what must run before it.

        Walks parents until a done one; ``key`` need not be in this plan
        (``lxsweep trial`` may run a subnetwork the experiment does not list).
        """
        done, out, p = set(done), [], parent(self.exp, key)
        while p is not None and p not in done:
            out.append(p)
            p = parent(self.exp, p)
        return out[::-1]

    def ready(self, done: Iterable[TrialKey], started: Iterable[TrialKey]) -> list[TrialKey]:
        """Trials not yet started whose parent is done, highest priority first."""
        done, started = set(done), set(started)
        return [k for k in self.trials if k not in started and k not in done and (self.parents[k] is None or self.parents[k] in done)]

    # -- cost --------------------------------------------------------------
    @property
    def fine_tunes(self) -> int:
        return len(self.trials)

    @property
    def critical_path(self) -> int:
        return max(self.height[k] for k in self.trials)

    @property
    def naive_fine_tunes(self) -> int:
        """Cost of a flat grid in which every trial re-runs its own chain prefix."""
        total = 0
        for k in self.trials:
            depth, p = 1, self.parents[k]
            while p is not None:
                depth, p = depth + 1, parent(self.exp, p)
            total += depth
        return total

    def makespan(self, slots: int, duration: float = 1.0, order: str = "priority") -> float:
        """Simulated wall time with ``slots`` concurrent trials of equal ``duration``.

        ``order="priority"`` is the searcher's rule; ``"level"`` is a flat grid
        released level by level (the naive scheduler), for comparison.
        """
        rank = {k: i for i, k in enumerate(self.trials if order == "priority" else sorted(self.trials, key=lambda k: (k.level, k.seed, subnetworks.order(k.subnetwork))))}
        done: set[TrialKey] = set()
        running: list[tuple[float, TrialKey]] = []
        waiting = sorted(self.trials, key=rank.__getitem__)
        now = 0.0
        while waiting or running:
            free = slots - len(running)
            for k in [k for k in waiting if self.parents[k] is None or self.parents[k] in done][:free]:
                waiting.remove(k)
                heapq.heappush(running, (now + duration, k))
            now, k = heapq.heappop(running)
            done.add(k)
            while running and running[0][0] <= now:
                done.add(heapq.heappop(running)[1])
        return now

    def summary(self) -> dict:
        """What ``lxsweep plan`` prints (and ``--json`` emits)."""
        exp = self.exp
        slots = exp.resources.max_concurrent_trials
        out = {
            "experiment": exp.name,
            "hash": exp.hash,
            "store": exp.store_name,
            "seeds": exp.seeds,
            "levels": [{"level": k, "sparsity": round(exp.sparsity(k), 6)} for k in range(exp.num_levels + 1)],
            "subnetworks": exp.pruning.subnetworks,
            "schedule": exp.pruning.schedule,
            "fine_tunes": self.fine_tunes,
            "critical_path": self.critical_path,
            "naive_fine_tunes": self.naive_fine_tunes,
            "trials": [
                {"trial": k.name, "level": k.level, "subnetwork": k.subnetwork, "seed": k.seed,
                 "sparsity": round(trial_sparsity(exp, k), 6),
                 "parent": self.parents[k].name if self.parents[k] else None}
                for k in self.trials
            ],
        }
        if slots:
            out["makespan_fine_tunes"] = self.makespan(slots)
        hours = exp.resources.fine_tune_hours
        if hours:
            gpus = exp.resources.workers_per_trial * max(exp.resources.gpus_per_worker, 0.0)
            out["fine_tune_hours"] = hours
            out["fine_tune_basis"] = exp.resources.fine_tune_basis  # None: nobody said where the hours come from
            out["gpu_hours"] = round(self.fine_tunes * hours * max(gpus, 1.0), 2)
            out["critical_path_hours"] = round(self.critical_path * hours, 2)
            if slots:
                out["wall_hours"] = round(self.makespan(slots, hours), 2)
        return out
