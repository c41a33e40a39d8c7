"""Frontier search: the grid's answers from a fraction of its trials (``search.mode: frontier``).

A pruning study asks where each subnetwork stops matching dense and where the
ticket collapses. The full grid answers by running everything; the frontier
search runs only the trials that decide those answers, chosen from the trials
already done:

- **The ticket's chains** (the first ``search.min_seeds`` seeds) advance one
  level at a time. At each level the ticket is compared with dense, paired
  over seeds: it *matches* when the two-sided ``1 − 2(1 − confidence)``
  interval of ticket − dense lies inside ±margin (two one-sided tests, as the
  report's "matches dense"), *misses* when the interval lies wholly outside,
  and is *undecided* otherwise. Undecided adds the next seed (its dense trial
  and its chain up to that level) until ``search.max_seeds``; still undecided
  then counts as a miss, as the report's test would. The frontier is the last
  level of the first unbroken run of matches. Past it the chains go on until
  the ticket has *collapsed* (the interval's upper end more than
  ``search.collapse`` below dense; undecided again adds a seed), and stop there.
- **Every other subnetwork asked about** is bisected over its levels, assuming
  that once it misses it does not match again at higher sparsity: test the
  middle level, go up on a match, down on a miss, adding seeds as above. A
  level whose mask comes from the ticket's chain past its collapse is not run.

Unbiased by construction: a trial is chosen from the results of *other*
trials, before its own result exists, and is never dropped once chosen (no
early stopping: a weak arm is never cut short, which is what would bias a
ticket-vs-random comparison). Decisions read **validation** accuracy; the
report's answers (:func:`answers`, the same function for a full grid) read
the test split when the trials have one, which no decision looked at. What
remains is the usual caution about sequential designs: where a seed was added
because an interval straddled the margin, that interval was looked at more
than once; the report's intervals are not widened for it.

Pure: no Ray, no files. The sweep's searcher (lxsweep/sweep.py) calls
:func:`choose` whenever a trial finishes and records every new choice and
its reason in the store (``search.json``); a resumed launch re-derives the
same choices from the same results, and a study is extended (more seeds,
a smaller margin, another subnetwork asked about, or ``search.mode: grid``)
in the same store, since ``search.*`` is not part of the experiment's hash.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from lxsweep import subnetworks
from lxsweep.config import Experiment, SearchConfig
from lxsweep.plan import TrialKey, dense_key, parent
from lxsweep.stats import t_ppf
from lxsweep.subnetworks import DENSE

MATCH, MISS, UNDECIDED = "match", "miss", "undecided"
COLLAPSED, STANDING = "collapsed", "standing"


def valid_accuracy(row: dict) -> float:
    """A trial's final validation accuracy (what decisions read; ``accuracy`` is test's when it has a test split)."""
    return row["valid"]["accuracy"] if row.get("evaluated_on") == "test" else row["accuracy"]


def reported_accuracy(row: dict) -> float:
    """A trial's reported accuracy: test's when it has a test split, else validation's."""
    return row["accuracy"]


@dataclass(frozen=True)
class Verdict:
    """One comparison with dense at one level: the outcome and the interval it was read from (fractions)."""

    outcome: str
    mean: Optional[float]
    low: Optional[float]
    high: Optional[float]
    seeds: tuple[int, ...]

    def text(self) -> str:
        if self.mean is None:
            return "no paired seeds"
        if self.low is None:
            return f"{100 * self.mean:+.2f} (one seed)"
        return f"{100 * self.mean:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}] over seeds {list(self.seeds)}"


def _interval(values: list[float], confidence: float) -> tuple[float, Optional[float], Optional[float]]:
    """Mean and the two-sided ``2 confidence − 1`` t interval (each end a one-sided bound at ``confidence``)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    half = t_ppf(confidence, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _paired(sub: dict[int, float], dense: dict[int, float], seeds: Iterable[int]) -> tuple[list[float], tuple[int, ...]]:
    used = tuple(s for s in seeds if s in sub and s in dense)
    return [sub[s] - dense[s] for s in used], used


def _judge(sub: dict[int, float], dense: dict[int, float], seeds: Iterable[int], s: SearchConfig,
           decide: Callable[[float, float], str]) -> Verdict:
    """The paired interval of ``sub`` − dense over ``seeds`` and ``decide(low, high)``'s outcome (undecided
    without two paired seeds)."""
    diffs, used = _paired(sub, dense, seeds)
    if not diffs:
        return Verdict(UNDECIDED, None, None, None, used)
    mean, low, high = _interval(diffs, s.confidence)
    return Verdict(UNDECIDED if low is None else decide(low, high), mean, low, high, used)


def judge_match(sub: dict[int, float], dense: dict[int, float], seeds: Iterable[int], s: SearchConfig) -> Verdict:
    """Does ``sub`` match dense within ±``s.margin`` on these seeds: match, miss or undecided?"""
    def decide(low: float, high: float) -> str:
        if -s.margin < low and high < s.margin:
            return MATCH
        return MISS if high <= -s.margin or low >= s.margin else UNDECIDED
    return _judge(sub, dense, seeds, s, decide)


def judge_collapse(sub: dict[int, float], dense: dict[int, float], seeds: Iterable[int], s: SearchConfig) -> Verdict:
    """Is ``sub`` decidedly more than ``s.collapse`` below dense on these seeds: collapsed, standing or undecided?"""
    def decide(low: float, high: float) -> str:
        if high < -s.collapse:
            return COLLAPSED
        return STANDING if low >= -s.collapse else UNDECIDED
    return _judge(sub, dense, seeds, s, decide)


def questions(exp: Experiment) -> list[str]:
    """The subnetworks asked where they stop matching dense: ``search.subnetworks``, or the ticket and every
    wanted subnetwork the registry compares with dense."""
    if exp.search.subnetworks is not None:
        return list(exp.search.subnetworks)
    wanted = exp.pruning.subnetworks
    ticket = subnetworks.ticket()
    compared = [a for a, b in subnetworks.comparisons(wanted + [DENSE]) if b == DENSE]
    return list(dict.fromkeys(([ticket] if ticket in wanted else []) + compared))


Accuracies = dict[tuple[str, int], dict[int, float]]  # (subnetwork, level) -> seed -> accuracy


def accuracies(rows: Iterable[dict], metric: Callable[[dict], float]) -> Accuracies:
    out: Accuracies = {}
    for r in rows:
        out.setdefault((r["subnetwork"], r["level"]), {})[r["seed"]] = metric(r)
    return out


@dataclass
class Answer:
    """Where one subnetwork stops matching dense (and, for the ticket, where it collapses), as far as known."""

    subnetwork: str
    matches_up_to: Optional[int] = None  # the frontier: last level of the first run of matches (None: no level)
    first_miss: Optional[int] = None  # the level after it (None: matched at every level tried)
    miss: Optional[Verdict] = None  # the comparison there
    at_frontier: Optional[Verdict] = None  # the comparison at the frontier
    collapse: Optional[int] = None  # the ticket's first collapsed level (None: none among the levels run)
    collapse_verdict: Optional[Verdict] = None
    settled: bool = False  # no further trial can change it
    pending: Optional[str] = None  # what it waits for, while not settled
    not_run: list[int] = field(default_factory=list)  # levels skipped because the ticket's chain stopped before them

    def to_dict(self) -> dict:
        def v(x: Optional[Verdict]) -> Optional[dict]:
            return None if x is None else {"outcome": x.outcome, "mean": x.mean, "lower": x.low, "upper": x.high,
                                           "seeds": list(x.seeds)}
        return {"subnetwork": self.subnetwork, "matches_up_to": self.matches_up_to, "first_miss": self.first_miss,
                "miss": v(self.miss), "at_frontier": v(self.at_frontier), "collapse": self.collapse,
                "collapse_verdict": v(self.collapse_verdict), "settled": self.settled, "pending": self.pending,
                "not_run": self.not_run}


class _Chooser:
    """One pass of the rules over the results so far: the trials wanted (with why) and the answers."""

    def __init__(self, exp: Experiment, acc: Accuracies):
        self.exp, self.s, self.acc = exp, exp.search, acc
        self.seeds = exp.seeds[: self.s.max_seeds or len(exp.seeds)]
        self.want: dict[TrialKey, str] = {}

    def _base(self) -> list[int]:
        """The seeds every decision starts with (each decision adds its own, so one straddling level costs one
        seed there, not a seed everywhere)."""
        return list(self.seeds[: self.s.min_seeds])

    def _dense(self) -> dict[int, float]:
        return {s: self.acc.get((DENSE, 0), {}).get(self.exp.dense_seed(s)) for s in self.seeds
                if self.exp.dense_seed(s) in self.acc.get((DENSE, 0), {})}

    def _add(self, key: TrialKey, why: str) -> None:
        """Want ``key`` and every ancestor it needs (an ancestor's reason names what needs it)."""
        chain = []
        while key is not None and key not in self.want:
            chain.append((key, why))
            why = f"needed by {key.name}"
            key = parent(self.exp, key)
        for k, w in chain:
            self.want[k] = w

    def _have(self, sub: str, level: int, seeds: Iterable[int], why: str) -> bool:
        """Whether every seed's result for (sub, level) and its dense one are in; wants the missing ones."""
        ok = True
        for seed in seeds:
            d = dense_key(seed, self.exp)
            if d not in self.want:
                self._add(d, "dense: the reference every comparison pairs with")
            if self.exp.dense_seed(seed) not in self.acc.get((DENSE, 0), {}):
                ok = False
            key = TrialKey(level, sub, seed)
            if key not in self.want:
                self._add(key, why)
            if seed not in self.acc.get((sub, level), {}):
                ok = False
        return ok

    def _decide(self, sub: str, level: int, seeds: list[int], judge: Callable, what: str) -> tuple[Optional[Verdict], str]:
        """Judge (sub, level) with ``seeds``, adding seeds (in place) while undecided; None while results are out."""
        while True:
            if not self._have(sub, level, seeds, f"{what} at level {level}"):
                return None, f"{sub} level {level} with seeds {seeds}"
            verdict = judge(self.acc[(sub, level)], self._dense(), seeds, self.s)
            if verdict.outcome != UNDECIDED or len(seeds) >= len(self.seeds):
                return verdict, ""
            seeds.append(self.seeds[len(seeds)])
            bound = (f"margin ±{100 * self.s.margin:g}" if judge is judge_match
                     else f"collapse bound −{100 * self.s.collapse:g}")
            what = f"seed {seeds[-1]} added: {sub} − dense was undecided ({verdict.text()}, {bound})"

    def ticket(self, sub: str) -> Answer:
        top = max(self.exp.levels_of(sub), default=0)
        return _walk(sub, range(1, top + 1),
                     lambda level: self._decide(sub, level, self._base(), judge_match, "does the ticket match dense"),
                     lambda level: self._decide(sub, level, self._base(), judge_collapse, "has the ticket collapsed"))

    def bisect(self, sub: str, reach: Optional[int]) -> Answer:
        """``reach``: the last level the ticket's chain runs to (None while unknown); a level whose parent lies
        on that chain beyond it is not run."""
        ans = Answer(sub)
        levels = sorted(self.exp.levels_of(sub))
        lo, hi = -1, len(levels)
        verdicts: dict[int, Verdict] = {}
        while hi - lo > 1:
            mid = (lo + hi) // 2
            level = levels[mid]
            p = parent(self.exp, TrialKey(level, sub, self.seeds[0]))
            if p is not None and p.subnetwork == subnetworks.ticket() and p.level > (reach if reach is not None else -1):
                if reach is None:
                    ans.pending = f"the ticket's chain to reach level {p.level}"
                    return ans
                ans.not_run.append(level)
                hi = mid
                continue
            v, wait = self._decide(sub, level, self._base(), judge_match,
                                   f"does {sub} match dense (bisection)")
            if v is None:
                ans.pending = wait
                return ans
            verdicts[level] = v
            if v.outcome == MATCH:
                lo = mid
            else:
                hi = mid
        ans.matches_up_to = levels[lo] if lo >= 0 else None
        ans.first_miss = levels[hi] if hi < len(levels) else None
        ans.at_frontier, ans.miss = verdicts.get(ans.matches_up_to), verdicts.get(ans.first_miss)
        ans.settled = True
        return ans


def _walk(sub: str, levels: Iterable[int], match: Callable[[int], tuple[Optional[Verdict], str]],
          collapse: Optional[Callable[[int], tuple[Optional[Verdict], str]]]) -> Answer:
    """Walk ``levels`` in order: the last level of the first unbroken run of matches, the first level after it,
    then (with ``collapse``) the first level from there on that has collapsed. ``match``/``collapse`` give a
    level's verdict, or None and what it waits for (the answer is then pending there)."""
    ans = Answer(sub)
    for level in levels:
        if ans.first_miss is None:
            v, wait = match(level)
            if v is None:
                ans.pending = wait
                return ans
            if v.outcome == MATCH:
                ans.matches_up_to, ans.at_frontier = level, v
                continue
            ans.first_miss, ans.miss = level, v
        if collapse is None:
            break
        c, wait = collapse(level)
        if c is None:
            ans.pending = wait
            return ans
        if c.outcome == COLLAPSED:
            ans.collapse, ans.collapse_verdict = level, c
            break
    ans.settled = True
    return ans


def choose(exp: Experiment, rows: Iterable[dict]) -> tuple[dict[TrialKey, str], list[Answer]]:
    """The trials the frontier search wants given the finished ``rows`` (each with why), and the answers so far.

    Deterministic in the results: the same rows give the same choices, whatever order they arrived in.
    """
    chooser = _Chooser(exp, accuracies(rows, valid_accuracy))
    ticket = subnetworks.ticket()
    asked = questions(exp)
    out: list[Answer] = []
    reach: Optional[int] = None
    if ticket in asked:
        t = chooser.ticket(ticket)
        out.append(t)
        if t.settled:
            reach = t.collapse if t.collapse is not None else max(exp.levels_of(ticket), default=0)
    for sub in asked:
        if sub != ticket:
            out.append(chooser.bisect(sub, reach if ticket in asked else max(exp.levels_of(ticket), default=0)))
    return chooser.want, out


def answers(exp: Experiment, rows: Iterable[dict], metric: Callable[[dict], float] = reported_accuracy) -> list[Answer]:
    """The study's answers from whatever trials it has (a full grid or a frontier search), every seed used.

    Per subnetwork asked about (:func:`questions`): the last level of the first unbroken run of levels at which
    it matches dense (over the levels it has, in order), the first level after it, and for the ticket the first
    level from there on at which it has collapsed. Read with ``metric`` (default: the reported split).
    """
    acc = accuracies(rows, metric)
    s = exp.search
    trained = acc.get((DENSE, 0), {})
    dense = {seed: trained[exp.dense_seed(seed)] for seed in exp.seeds if exp.dense_seed(seed) in trained}
    ticket = subnetworks.ticket()
    out = []
    for sub in questions(exp):
        levels = sorted(level for (name, level) in acc if name == sub)
        if not levels or not dense:
            continue

        def judged(judge: Callable) -> Callable[[int], tuple[Optional[Verdict], str]]:
            return lambda level: (judge(acc[(sub, level)], dense, sorted(acc[(sub, level)]), s), "")
        out.append(_walk(sub, levels, judged(judge_match), judged(judge_collapse) if sub == ticket else None))
    return out


def describe(exp: Experiment, ans: Answer, sparsity: Callable[[int], float]) -> str:
    """One line, e.g. ``low matches dense (±2 points) up to level 15 (96.5%); not at level 16 (97.2%): -2.90
    [-4.10, -1.70] over seeds [0, 1, 2]; collapses (more than 10 points below dense) at level 19 (98.6%)``."""
    def at(level: Optional[int]) -> str:
        return f"level {level} ({100 * sparsity(level):.1f}%)"

    margin = f"±{100 * exp.search.margin:g} points"
    if ans.matches_up_to is None and ans.first_miss is None:
        return f"{ans.subnetwork}: nothing decided yet" + (f" (waiting for {ans.pending})" if ans.pending else "")
    if ans.matches_up_to is not None:
        head = f"{ans.subnetwork} matches dense ({margin}) up to {at(ans.matches_up_to)}"
        if ans.at_frontier is not None:
            head += f" ({ans.at_frontier.text()})"
    else:
        head = f"{ans.subnetwork} does not match dense ({margin}) at any level run"
    parts = [head]
    if ans.first_miss is not None:
        if ans.miss is None:
            parts.append(f"not run at {at(ans.first_miss)}")
        elif ans.miss.outcome == MISS:
            parts.append(f"misses at {at(ans.first_miss)}: {ans.miss.text()}")
        else:  # straddles the margin with every seed it may have: not shown to match, as the report's test reads it
            parts.append(f"not shown to match at {at(ans.first_miss)}: {ans.miss.text()}")
    elif ans.settled:
        parts.append("matched at every level run")
    if ans.subnetwork == subnetworks.ticket() and ans.settled:
        parts.append(f"collapses (more than {100 * exp.search.collapse:g} points below dense) at {at(ans.collapse)}"
                     if ans.collapse else "no collapse among the levels run")
    if ans.not_run:
        parts.append(f"levels {ans.not_run} not run (past the ticket's collapse)")
    if not ans.settled and ans.pending:
        parts.append(f"waiting for {ans.pending}")
    return "; ".join(parts)


def replay(exp: Experiment, rows: Iterable[dict]) -> tuple[list[str], list[Answer]]:
    """What the frontier search would have run on a finished grid: its choices, taken in turn from ``rows``
    (a trial "finishes" once chosen and its parent is in), until it wants nothing more. Returns the trials it
    ran, in order, and its answers (:func:`choose`'s, on validation). A wanted trial the rows lack stops the
    replay there (its answer stays pending)."""
    pool = {TrialKey(r["level"], r["subnetwork"], r["seed"]): r for r in rows}
    done: dict[TrialKey, dict] = {}
    order: list[str] = []
    while True:
        want, out = choose(exp, done.values())
        ready = sorted((k for k in want if k not in done and k in pool
                        and (parent(exp, k) is None or parent(exp, k) in done)), key=lambda k: (k.level, k.seed, k.subnetwork))
        if not ready:
            return order, out
        for k in ready:
            done[k] = pool[k]
            order.append(k.name)


def record(previous: Optional[dict], exp: Experiment, want: dict[TrialKey, str], out: list[Answer], grid: int,
           now: float) -> dict:
    """``search.json``'s content: every choice ever made (a choice is never withdrawn), with why and when, in
    the order made; the settings; the answers so far."""
    chosen = list((previous or {}).get("chosen", []))
    have = {c["trial"] for c in chosen}
    chosen += [{"trial": k.name, "why": why, "at": now} for k, why in want.items() if k.name not in have]
    return {"mode": exp.search.mode, "settings": dataclasses.asdict(exp.search), "grid_trials": grid,
            "chosen": chosen, "answers": [a.to_dict() for a in out], "updated_at": now}
