"""Experiment files: YAML -> validated, typed config, with overrides and a hash.

An experiment is one YAML file under ``experiments/``. Every key has a default
here; the file names only what differs. ``--set key=value`` overrides any key
by its dotted path. Errors name the file, the key and what was expected,
before anything runs.

The experiment hash covers the values that change a trial's result *and
differ from their defaults* (as open_lth's hparams do), in canonical JSON. So a
new option with a default leaves every existing hash, and every store, as it
was. Fields that only select, place or track trials are marked ``selects()``
(grid selection ``pruning.levels``/``subnetworks``, ``seeds``, tracking,
resources, storage, the name, loader workers, eval batch size): adding a level
or a seed to a finished sweep reuses its store and re-runs nothing there.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import yaml

from lxsweep import subnetworks
from lxsweep.errors import ConfigError, CorruptStoreFile
from lxsweep.store import EXPERIMENT_FILE, Store

DEFAULT_SCOPE = ("language", "vision", "cross", "pooler")  # lxsweep.pruning.ALL_GROUPS
# Every scope group lxsweep.pruning.SCOPE_GROUPS defines (named here too: validation imports no torch).
# published_code replays the paper's code's tensor scope (docs/PAPER_CODE.md row e) and stands alone.
SCOPE_GROUPS = (*DEFAULT_SCOPE, "published_code")


def selects(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A field that selects, places or tracks trials but never changes a result: the hash leaves it out."""
    return field(default=default, default_factory=default_factory, metadata={"hashed": False})


# Keys that were renamed: reading one gives a single line saying what to write instead.
RENAMED = {
    "tracking.wandb": "tracking.wandb was replaced by tracking.backend (wandb | tensorboard | none) and "
                      "tracking.mode (offline | online) — write e.g. `tracking: {backend: wandb, mode: offline}`, "
                      "or `backend: none` for `wandb: disabled`",
}


SYNTHETIC_KINDS = ("exist", "count", "attribute", "spatial")  # lxsweep.data.synthetic.KINDS (no numpy here)
SYNTHETIC_ATTRIBUTES = ("color", "shape", "size")  # what an attribute question may ask


@dataclass
class SyntheticConfig:
    """The generated scene-question task (see lxsweep/data/synthetic.py)."""

    train_questions: int = 6000
    valid_questions: int = 1500
    pretrain_questions: int = 6000  # the disjoint split the rewind point is pretrained on
    test_questions: int = 0  # a held-out test split (0 = none): every reported number, no choice made on it
    # The question kinds (lxsweep/data/synthetic.py KINDS) the fine-tune splits (train, valid, test) ask, and
    # those the pretraining splits ask: disjoint kinds make a rewind point that has not seen the fine-tune task.
    kinds: list[str] = field(default_factory=lambda: list(SYNTHETIC_KINDS))
    pretrain_kinds: list[str] = field(default_factory=lambda: list(SYNTHETIC_KINDS))
    # What the attribute questions of those splits ask (what color / shape / size is ...).
    attributes: list[str] = field(default_factory=lambda: list(SYNTHETIC_ATTRIBUTES))
    pretrain_attributes: list[str] = field(default_factory=lambda: list(SYNTHETIC_ATTRIBUTES))
    num_boxes: int = 10
    feat_dim: int = 64
    annotator_noise: float = 0.05  # chance an annotator gives a plausible wrong answer
    feature_noise: float = 0.35
    seed: int = 1234  # the task itself; trial seeds never change the data


PRETRAINING_OBJECTIVES = ("mlm", "obj", "attr", "feat", "itm", "qa")


@dataclass
class PretrainingConfig:
    """How the embedded task's rewind point is pretrained (lxsweep/pretrain.py); synthetic data only."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    warmup: float = 0.1
    objectives: list[str] = field(default_factory=lambda: list(PRETRAINING_OBJECTIVES))
    mask_prob: float = 0.15  # words and regions masked for mlm / obj / attr / feat


@dataclass
class ModelConfig:
    pretrained: Optional[str] = None  # hub name or local directory; None = pretrain a tiny LXMERT from `config`
    tokenizer: Optional[str] = None  # defaults to `pretrained`
    config: dict = field(default_factory=dict)  # LxmertConfig kwargs when pretrained is None
    pretraining: PretrainingConfig = field(default_factory=PretrainingConfig)
    # The pretraining QA head's answers in row order (LXMERT's data/lxmert/all_ans.json): the answer head then
    # starts from the checkpoint's as LXMERT's load_lxmert_qa does (lxsweep/model.py); None = seeded random head.
    answer_table: Optional[str] = None


@dataclass
class DataConfig:
    source: Literal["synthetic", "vqa"] = "synthetic"
    path: Optional[str] = None  # prepared VQA store (lxsweep prepare-vqa)
    train_split: str = "train"
    valid_split: str = "minival"
    test_split: Optional[str] = None  # a prepared split every reported number is measured on (null: valid's)
    max_tokens: int = 20
    limit_train: Optional[int] = None
    limit_valid: Optional[int] = None
    loader_workers: int = selects(0)  # DataLoader worker processes per training worker
    stage: bool = selects(False)  # copy data.path to node-local disk once per node (an NFS path); a URI always is
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class TrainingConfig:
    epochs: int = 4
    batch_size: int = 32
    eval_batch_size: int = selects(256)
    lr: float = 5e-5
    warmup: float = 0.1  # fraction of steps with linear warmup, then linear decay
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    # The `probe` control: the rewind point's encoder frozen, a fresh answer head trained this many steps at this lr.
    probe_steps: int = 250
    probe_lr: float = 1e-3
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU
    # Which trials keep their trained weights in the store (weights/<trial>.safetensors): every trial,
    # only tickets (the ticket criterion and dense), or none; and in which dtype (pruned entries are
    # exactly zero in any of them). Selection only: the hash leaves both out.
    keep_weights: Literal["all", "tickets", "none"] = selects("all")
    weights_dtype: Literal["float16", "bfloat16", "float32"] = selects("float16")
    # A sweep trial's Ray checkpoints (fp32 weights + AdamW state: ~2.7 GB for LXMERT-base) are the means to resume
    # it; false deletes them once its metrics.json is written (the kept weights, mask and metrics stay).
    keep_checkpoints: bool = selects(False)
    # false replays the paper's code (docs/PAPER_CODE.md row d): the mask zeroes the pruned weights once at the
    # start and is never applied again (no gradient zeroing), so AdamW and weight decay move them off zero;
    # metrics.json's `trained_sparsity` records the zeros left after retraining.
    enforce_mask: bool = True


@dataclass
class PruningConfig:
    rate: float = 0.1  # fraction of the remaining weights removed per level
    levels: int = selects(10)
    sparsities: Optional[list[float]] = None  # explicit level sparsities; overrides rate
    subnetworks: list[str] = selects(default_factory=lambda: list(subnetworks.DEFAULT))  # lxsweep/subnetworks.py
    # Levels to run for some subnetworks instead of all, e.g. {high: [1, 2, 3], reinit: [2, 10]}.
    levels_of: dict = selects(default_factory=dict)
    scope: list[str] = field(default_factory=lambda: list(DEFAULT_SCOPE))
    layerwise: bool = False
    # iterative: level k's mask from level k-1's trained weights; oneshot: from the dense fine-tune's weights,
    # pruned to level k's sparsity at once; stepwise: from the dense fine-tune's weights by k per-tensor steps
    # of `rate` with no retraining between them (the paper's code, docs/PAPER_CODE.md row a).
    schedule: Literal["iterative", "oneshot", "stepwise"] = "iterative"
    # Nominal sparsities the report reads off (e.g. the paper's 0.1..0.9): for each, the first level whose
    # achieved sparsity is at or above it (lxsweep/report.py::nominal_table). Selection only: not hashed.
    nominal: list[float] = selects(default_factory=list)


@dataclass
class RewindConfig:
    to: Literal["pretrained", "step"] = "pretrained"
    step: int = 0  # with to=step: the dense fine-tune's weights after this many steps
    # One dense fine-tune for every seed (the paper's code, docs/PAPER_CODE.md row f): this seed's dense trial
    # is the parent of every seed's chains and the rewind point (answer-head start) of every trial; the pruned
    # trials keep their own seeds. None: one dense fine-tune per seed.
    dense_seed: Optional[int] = None


@dataclass
class ResourcesConfig:
    workers_per_trial: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_concurrent_trials: Optional[int] = None  # None = as many as the cluster fits
    max_failures: int = 2  # worker-group restarts per trial before it fails for good
    fine_tune_hours: Optional[float] = None  # GPU-hours per fine-tune, for `lxsweep plan`
    # Where fine_tune_hours comes from: "measured: ..." (device, how) or "estimate: ..." (its basis); plan prints it.
    fine_tune_basis: Optional[str] = None
    # Let trials whose resolved precision or device type differ share one store (warns loudly);
    # without it such a trial is refused (see lxsweep/facts.py).
    allow_mixed: bool = False


@dataclass
class TrackingConfig:
    backend: str = "wandb"  # wandb | tensorboard | none, or a name given to lxsweep.tracking.register_tracker
    mode: Literal["offline", "online"] = "offline"  # W&B only: offline writes files `wandb sync` uploads later
    project: str = "lxsweep"  # W&B project
    entity: Optional[str] = None  # W&B entity (team or user)
    # W&B artifacts of each trial's masks and kept weights: `reference` records the store's file:// / s3:// / gs://
    # URIs and checksums (nothing is copied), `upload` copies the files into W&B, `none` records no artifacts.
    artifacts: Literal["reference", "upload", "none"] = "reference"


@dataclass
class SearchConfig:
    """Which of the grid's trials run (lxsweep/frontier.py). Selection only: a frontier study and the full grid
    share one store, so either extends the other."""

    # grid: every trial; frontier: only the trials that decide where each subnetwork stops matching dense and
    # where the ticket collapses, chosen level by level from the validation accuracies of the trials done so far.
    mode: Literal["grid", "frontier"] = "grid"
    margin: float = 0.02  # "matches dense": the paired interval of (subnetwork - dense) inside ±margin
    confidence: float = 0.95  # of each one-sided test (the two-sided interval read is 1 - 2 (1 - confidence))
    collapse: float = 0.10  # the ticket has collapsed where it is decidedly more than this below dense
    min_seeds: int = 2  # seeds each decision starts with (a paired interval needs two)
    max_seeds: Optional[int] = None  # seeds a decision may grow to while its interval straddles; None: all seeds
    # The subnetworks asked "up to which level do you match dense?"; None: the ticket and every wanted subnetwork
    # the registry compares with dense (lxsweep/subnetworks.py `compare`).
    subnetworks: Optional[list[str]] = None


@dataclass
class Experiment:
    name: str = selects("experiment")
    storage: str = selects("runs")  # local path, NFS path or s3:// / gs:// URI; the store lives under it
    seeds: list[int] = selects(default_factory=lambda: [0])
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    rewind: RewindConfig = field(default_factory=RewindConfig)
    resources: ResourcesConfig = selects(default_factory=ResourcesConfig)
    tracking: TrackingConfig = selects(default_factory=TrackingConfig)
    search: SearchConfig = selects(default_factory=SearchConfig)
    # Modules imported wherever an experiment is built (driver and every Ray worker), before validation:
    # they may register criteria, controls or trackers. Not hashed: what they add is selected by other keys.
    plugins: list[str] = selects(default_factory=list)
    source: str = field(default="<defaults>", metadata={"internal": True})  # the file it came from
    # The hash a store recorded (experiment.yaml): a store keeps its name when the hash scheme changes.
    recorded_hash: Optional[str] = field(default=None, metadata={"internal": True})
    # model.* paths as the hash sees them: relative to the experiment file, never where the checkout lives.
    hashed_paths: dict = field(default_factory=dict, metadata={"internal": True})

    # -- derived ---------------------------------------------------------
    def sparsity(self, level: int) -> float:
        """Target fraction of prunable weights removed at ``level`` (0 = dense)."""
        if level == 0:
            return 0.0
        if self.pruning.sparsities is not None:
            return float(self.pruning.sparsities[level - 1])
        return 1.0 - (1.0 - self.pruning.rate) ** level

    def levels_of(self, name: str) -> list[int]:
        """The levels subnetwork ``name`` trains at: ``pruning.levels_of[name]`` or all of its levels."""
        chosen = self.pruning.levels_of.get(name)
        return list(chosen) if chosen is not None else list(subnetworks.levels(name, self.num_levels))

    def nominal_levels(self) -> list[Optional[int]]:
        """Per ``pruning.nominal`` point, the first level whose target sparsity reaches it (None: none does).

        What a plan can know before anything runs; the report reads the points off the *achieved* sparsities
        (``lxsweep/report.py::nominal_table``), which under ``schedule: stepwise`` lie a little above the
        targets, so it picks the same level or an earlier one.
        """
        levels = range(1, self.num_levels + 1)
        return [next((k for k in levels if self.sparsity(k) >= x - 1e-9), None) for x in self.pruning.nominal]

    def dense_seed(self, seed: int) -> int:
        """The seed of the dense trial a trial of ``seed`` starts from (``rewind.dense_seed`` or its own)."""
        return seed if self.rewind.dense_seed is None else self.rewind.dense_seed

    @property
    def from_dense(self) -> bool:
        """Every level's mask comes from the dense fine-tune's weights (schedule oneshot or stepwise)."""
        return self.pruning.schedule in ("oneshot", "stepwise")

    @property
    def num_levels(self) -> int:
        p = self.pruning
        return len(p.sparsities) if p.sparsities is not None else p.levels

    def to_dict(self) -> dict:
        """Every key as plain data (what experiment.yaml and the trackers record)."""
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                d.pop(f.name)
        return d

    def result_dict(self) -> dict:
        """What the hash covers: the result-affecting values that differ from their defaults."""
        d = _non_default(self, type(self)())
        # Values that the rest of the experiment makes irrelevant to the result:
        pruning, data, model = d.get("pruning", {}), d.get("data", {}), d.get("model", {})
        if self.pruning.sparsities is not None:
            pruning.pop("rate", None)  # explicit sparsities override the rate
        if self.data.source != "synthetic":
            data.pop("synthetic", None)
        if self.model.pretrained is not None or self.data.source != "synthetic":
            model.pop("pretraining", None)  # only the synthetic task pretrains its rewind point
        for key, value in self.hashed_paths.items():  # a directory next to the file: hashed as written there
            if key in model:
                model[key] = value
        return {k: v for k, v in d.items() if v != {}}

    @property
    def legacy_hash(self) -> str:
        """The hash before model paths were hashed relative to the experiment file (stores named by it are
        renamed by :func:`migrate_store`)."""
        return canonical_hash(dataclasses.replace(self, hashed_paths={}).result_dict())

    @property
    def hash(self) -> str:
        """Canonical hash (sha256 of sorted-key JSON) of :meth:`result_dict`, 10 hex digits.

        A store read back from its experiment.yaml keeps the hash it recorded.
        """
        return self.recorded_hash or canonical_hash(self.result_dict())

    @property
    def store_name(self) -> str:
        return f"{self.name}-{self.hash}"

    def record(self) -> dict:
        """experiment.yaml's content: every key plus the hash (read back by :func:`from_record`)."""
        return {**self.to_dict(), "hash": self.hash}


def _non_default(value: Any, default: Any) -> dict:
    """The hashed fields of a config dataclass whose values differ from ``default``'s, nested sections recursed."""
    out: dict = {}
    for f in dataclasses.fields(value):
        if f.metadata.get("internal") or f.metadata.get("hashed", True) is False:
            continue
        mine, theirs = getattr(value, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(mine):
            sub = _non_default(mine, theirs)
            if sub:
                out[f.name] = sub
        elif mine != theirs:
            out[f.name] = mine
    return out


def canonical_hash(obj: Any, length: int = 10) -> str:
    """sha256 over canonical JSON (sorted keys, repr-exact floats)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# -- loading -----------------------------------------------------------------


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = (), check: bool = True) -> Experiment:
    """Read, override and validate an experiment file. Raises :class:`ConfigError`.

    ``check=False`` skips the local-path checks (``lxsweep plan`` runs nothing,
    so it can budget a cluster run from a laptop that lacks the data).
    """
    path = Path(path)
    where = str(path)
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory, not an experiment file — pass a YAML file such as experiments/smoke.yaml")
    if not path.is_file():
        raise ConfigError(f"{where}: no such experiment file — check the path (the shipped ones are in experiments/)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the experiment file ({exc}) — pass a readable UTF-8 YAML file") from None
    raw = parse_yaml(text, where)
    if raw is None or raw == {}:
        raise ConfigError(f"{where}: the experiment file is empty — name at least the keys that differ from the "
                          f"defaults (start from experiments/smoke.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys, got {type(raw).__name__} — "
                          f"write `key: value` lines such as `name: my-sweep`")
    # Top-level `x-...` keys hold YAML anchors for merge keys (`x-base: &base {...}`, then `<<: *base`).
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    for item in overrides:
        apply_override(raw, item, where)
    exp = from_dict(raw, where)
    exp.source = where
    resolve_model_dirs(exp, path.parent)
    if check:
        check_paths(exp, path.parent)
    return exp


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"key {key!r} is written twice (lines {first} and {line})")
        self.key, self.line, self.first = key, line, first


class _TooBig(yaml.YAMLError):
    pass


MAX_ALIASES = 100  # `*name` uses in one experiment file: plenty for sharing sections
MAX_VALUES = 100_000  # values once aliases are expanded: an alias bomb stops here, not in memory
MAX_DEPTH = 32  # nesting of mappings and lists (an experiment file needs 4)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key written twice (plain YAML keeps the last silently), allows
    merge keys (``<<: *base``: an explicit key then overrides the merged one, as YAML says), and bounds alias
    uses and nesting depth."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases, self._depth = 0, 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _TooBig(f"more than {MAX_ALIASES} aliases (*name) — write the values out, or share fewer")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooBig(f"nested more than {MAX_DEPTH} levels deep — an experiment file needs 4")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        root = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(node) -> int:  # values under node with every alias expanded; shared nodes counted once each
            if id(node) not in sizes:
                children = node.value if isinstance(node.value, list) else []
                flat = [n for c in children for n in (c if isinstance(c, tuple) else (c,))]
                sizes[id(node)] = 1 + sum(expanded(c) for c in flat)
            return sizes[id(node)]

        if root is not None and expanded(root) > MAX_VALUES:
            raise _TooBig(f"more than {MAX_VALUES} values once its aliases (*name) are expanded — write the "
                          f"values out instead of nesting aliases")
        return root

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges another mapping in; its keys may be overridden here
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, line, seen[key])
            except TypeError:  # an unhashable key: let SafeLoader give its own error
                continue
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> plain data, with duplicate keys refused; errors are one :class:`ConfigError` line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{where}: line {exc.line}: key {_show(exc.key)} is written twice (first at line {exc.first}) "
                          f"— merge the two into one (YAML would silently keep only the last)") from None
    except _TooBig as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{line}: {getattr(exc, 'problem', exc)} — fix the syntax there") from None


def resolve_model_dirs(exp: Experiment, base: Path) -> None:
    """Make relative local model directories absolute: Ray workers run in other directories.

    A relative ``model.pretrained``/``model.tokenizer`` (a directory) or
    ``model.answer_table`` (a file) is looked up next to the experiment file
    first (``checkpoints/x`` in ``experiments/smoke.yaml``), then in the current
    directory; hub names (``org/model``) are left alone. The hash sees such a
    path relative to the experiment file (``hashed_paths``), so two checkouts
    of a project at different places name its stores alike.
    """
    for key in ("pretrained", "tokenizer", "answer_table"):
        value = getattr(exp.model, key)
        if not value or Path(value).expanduser().is_absolute():
            continue
        for candidate in (base / value, Path(value)):
            if candidate.is_dir() if key != "answer_table" else candidate.is_file():
                resolved = candidate.resolve()
                setattr(exp.model, key, str(resolved))
                exp.hashed_paths[key] = Path(os.path.relpath(resolved, base.resolve())).as_posix()
                break


def apply_override(raw: dict, item: str, where: str = "--set") -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML) to the raw mapping."""
    if "=" not in item:
        raise ConfigError(f"{where}: --set {item!r}: expected key=value — write e.g. --set training.epochs=2")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader) if text.strip() else None
    except _DuplicateKey as exc:
        raise ConfigError(f"{where}: --set {key}: key {exc.key!r} is written twice — give each key once") from None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: --set {key}: {part!r} is not a section — set {'.'.join(parts[:parts.index(part) + 1])} itself, or a key of a section")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict, where: str = "<dict>") -> Experiment:
    """Build and validate an :class:`Experiment` from a plain mapping."""
    exp = _build(Experiment, raw, where, "")
    import_plugins(exp.plugins, where)
    _validate(exp, where)
    return exp


def import_plugins(modules: list[str], where: str = "<dict>") -> None:
    """Import each plugin module (once per process; Python caches modules) so its registrations run."""
    for i, name in enumerate(modules):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{where}: plugins[{i}]: cannot import {name!r} ({exc}) — install it or put its "
                              "directory on PYTHONPATH") from None


def from_record(raw: dict, where: str = "experiment.yaml") -> Experiment:
    """The experiment a store recorded (see :meth:`Experiment.record`), keeping its recorded hash.

    Stores written before a key was renamed still open: the old tracking key
    is translated, since tracking never changes what a store holds.
    """
    raw = dict(raw)
    recorded = raw.pop("hash", None)
    tracking = raw.get("tracking")
    if isinstance(tracking, dict) and "wandb" in tracking:
        tracking = dict(tracking)
        mode = tracking.pop("wandb")
        tracking.update({"backend": "none"} if mode == "disabled" else {"backend": "wandb", "mode": mode})
        raw["tracking"] = tracking
    exp = from_dict(raw, where)
    exp.source, exp.recorded_hash = where, recorded
    return exp


def _build(cls: type, raw: Any, where: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {raw!r} — "
                          f"write its keys indented below it, e.g. `training: {{epochs: 2}}`")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for name in raw:
        if prefix + str(name) in RENAMED:
            raise ConfigError(f"{where}: {RENAMED[prefix + str(name)]}")
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = prefix + str(unknown[0])
        close = difflib.get_close_matches(str(unknown[0]), fields, n=1)
        hint = f"did you mean {prefix}{close[0]}? " if close else ""
        raise ConfigError(f"{where}: {key}: unknown key — {hint}expected one of {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, where, prefix + name)
    return cls(**kwargs)


MAX_NAME = 100  # characters of an experiment name (store directories and W&B groups are named after it)
MAX_SHOWN = 200  # characters of an offending value an error line echoes


def _show(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_SHOWN` characters (an alias bomb must not become a 100 MB line)."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}… ({len(text)} characters)"


# Plain YAML types: (accepts, expected, what to write instead). bool is not an int here, though Python says it is.
_PLAIN: dict[type, tuple[Callable[[Any], bool], str, str]] = {
    dict: (lambda v: isinstance(v, dict), "a mapping", "a mapping, e.g. {name: value}"),
    bool: (lambda v: isinstance(v, bool), "true or false", "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", "a whole number"),
    str: (lambda v: isinstance(v, str), "a string", "a string (quote it if YAML reads it as something else)"),
}


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, where, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}: {_show(value)} is not allowed — use one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key}: expected a list, got {_show(value)} — write a list, e.g. [a, b]")
        return [_coerce(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        hint = dict
    if hint in _PLAIN:
        ok, expected, write = _PLAIN[hint]
        if not ok(value):
            raise ConfigError(f"{where}: {key}: expected {expected}, got {_show(value)} — write {write}")
        return dict(value) if hint is dict else value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key}: expected a number, got {_show(value)} — write a number such as 0.5 or 5.0e-5")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {key}: {value} is not a finite number — write a number such as 0.5 or 5.0e-5")
        return float(value)
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module, not the file


def _validate(exp: Experiment, where: str) -> None:
    def fail(key: str, value: Any, expected: str) -> None:
        raise ConfigError(f"{where}: {key}: {_show(value)} is out of range — expected {expected}")

    p, t, r, d = exp.pruning, exp.training, exp.resources, exp.data
    if not exp.name or any(c in exp.name for c in "/\\ ") or len(exp.name) > MAX_NAME:
        fail("name", exp.name, f"a non-empty name of at most {MAX_NAME} characters without spaces or slashes")
    if not exp.seeds:
        fail("seeds", exp.seeds, "at least one seed")
    if len(set(exp.seeds)) != len(exp.seeds):
        fail("seeds", exp.seeds, "distinct seeds")
    for i, seed in enumerate(exp.seeds):
        if not 0 <= seed < 2**32:
            fail(f"seeds[{i}]", seed, "an integer in [0, 2**32) (numpy and torch seed generators take no more)")
    if not 0.0 < p.rate < 1.0:
        fail("pruning.rate", p.rate, "a number in (0, 1)")
    if p.levels < 0:
        fail("pruning.levels", p.levels, "an integer >= 0")
    if p.sparsities is not None:
        if not p.sparsities:
            fail("pruning.sparsities", p.sparsities, "at least one sparsity, or null to use pruning.rate and pruning.levels")
        for i, s in enumerate(p.sparsities):
            if not 0.0 < s < 1.0:
                fail(f"pruning.sparsities[{i}]", s, "a sparsity in (0, 1)")
        if any(b <= a for a, b in zip(p.sparsities, p.sparsities[1:])):
            fail("pruning.sparsities", p.sparsities, "strictly increasing sparsities")
    if p.sparsities is None:
        _check_schedule(exp, where)
    if not p.subnetworks:
        fail("pruning.subnetworks", p.subnetworks, "at least one subnetwork, e.g. [low, high, random]")
    for i, s in enumerate(p.subnetworks):
        try:
            subnetworks.get(s)
        except ValueError as exc:
            raise ConfigError(f"{where}: pruning.subnetworks[{i}]: {exc}") from None
    if len(set(p.subnetworks)) != len(p.subnetworks):
        fail("pruning.subnetworks", p.subnetworks, "each subnetwork once")
    for name, chosen in p.levels_of.items():
        key = f"pruning.levels_of.{name}"
        if name not in p.subnetworks:
            try:
                subnetworks.get(name)
            except ValueError as exc:
                raise ConfigError(f"{where}: {key}: {exc}") from None
            continue  # a selection for a subnetwork this run leaves out (e.g. `--set pruning.subnetworks=[low]`)
        allowed = list(subnetworks.levels(name, exp.num_levels))
        if (not isinstance(chosen, list) or not chosen
                or any(isinstance(v, bool) or not isinstance(v, int) or v not in allowed for v in chosen)):
            fail(key, chosen, f"a non-empty list of levels among {allowed[0]}..{allowed[-1]}")
    if not p.scope:
        fail("pruning.scope", p.scope, "at least one of " + ", ".join(SCOPE_GROUPS))
    for i, g in enumerate(p.scope):
        if g not in SCOPE_GROUPS:
            raise ConfigError(f"{where}: pruning.scope[{i}]: unknown group {g!r} — use some of {', '.join(SCOPE_GROUPS)}")
    if "published_code" in p.scope and len(p.scope) > 1:
        raise ConfigError(f"{where}: pruning.scope: {p.scope!r}: published_code is the paper's code's whole scope "
                          f"(it contains every other group) — write [published_code] alone")
    _check_replay(exp, where)
    _check_bounds(fail, "training", t, TRAINING_BOUNDS)
    _check_bounds(fail, "data", d, DATA_BOUNDS)
    for key in ("limit_train", "limit_valid"):
        v = getattr(d, key)
        if v is not None and not v >= 1:
            fail(f"data.{key}", v, "an integer >= 1 or null")
    _check_bounds(fail, "data.synthetic", d.synthetic, SYNTHETIC_BOUNDS)
    for key, allowed in (("kinds", SYNTHETIC_KINDS), ("pretrain_kinds", SYNTHETIC_KINDS),
                         ("attributes", SYNTHETIC_ATTRIBUTES), ("pretrain_attributes", SYNTHETIC_ATTRIBUTES)):
        chosen = getattr(d.synthetic, key)
        if (not isinstance(chosen, list) or not chosen
                or any(not isinstance(k, str) or k not in allowed for k in chosen) or len(set(chosen)) != len(chosen)):
            fail(f"data.synthetic.{key}", chosen, "a non-empty list of distinct values among " + ", ".join(allowed))
    pt = exp.model.pretraining
    _check_bounds(fail, "model.pretraining", pt, PRETRAINING_BOUNDS)
    if not pt.objectives:
        fail("model.pretraining.objectives", pt.objectives, "at least one of " + ", ".join(PRETRAINING_OBJECTIVES))
    for i, o in enumerate(pt.objectives):
        if o not in PRETRAINING_OBJECTIVES:
            raise ConfigError(f"{where}: model.pretraining.objectives[{i}]: unknown objective {o!r} — "
                              f"use some of {', '.join(PRETRAINING_OBJECTIVES)}")
    if exp.rewind.step < 0:
        fail("rewind.step", exp.rewind.step, "an integer >= 0")
    if exp.rewind.to == "step" and exp.rewind.step < 1:
        fail("rewind.step", exp.rewind.step, "a step >= 1 when rewind.to is 'step'")
    if exp.rewind.to == "pretrained" and exp.rewind.step != 0:
        raise ConfigError(f"{where}: rewind.step: {exp.rewind.step} has no effect with rewind.to: pretrained — "
                          f"set rewind.to: step to rewind to the dense fine-tune's step {exp.rewind.step}, or drop rewind.step")
    _check_search(exp, where)
    if r.workers_per_trial < 1:
        fail("resources.workers_per_trial", r.workers_per_trial, "an integer >= 1")
    if r.gpus_per_worker < 0:
        fail("resources.gpus_per_worker", r.gpus_per_worker, "a number >= 0")
    if r.gpus_per_worker > 1 and not float(r.gpus_per_worker).is_integer():
        # Ray shares one GPU between workers (a fraction < 1) but cannot split several: 1.5 GPUs is refused.
        fail("resources.gpus_per_worker", r.gpus_per_worker, "a fraction of one GPU (<= 1) or a whole number of GPUs")
    if r.cpus_per_worker < 0:
        fail("resources.cpus_per_worker", r.cpus_per_worker, "a number >= 0")
    if r.max_concurrent_trials is not None and r.max_concurrent_trials < 1:
        fail("resources.max_concurrent_trials", r.max_concurrent_trials, "an integer >= 1 or null")
    if r.max_failures < 0:
        fail("resources.max_failures", r.max_failures, "an integer >= 0")
    if r.fine_tune_hours is not None and r.fine_tune_hours <= 0:
        fail("resources.fine_tune_hours", r.fine_tune_hours, "a number > 0 or null")
    if r.fine_tune_basis is not None:
        if not r.fine_tune_basis.strip():
            fail("resources.fine_tune_basis", r.fine_tune_basis, "a sentence saying how fine_tune_hours was measured or estimated, or null")
        if r.fine_tune_hours is None:
            raise ConfigError(f"{where}: resources.fine_tune_basis: given without resources.fine_tune_hours — set the "
                              f"hours it explains, or drop the basis")
    table = exp.model.answer_table
    if table is not None and (not table.strip() or "://" in table):
        raise ConfigError(f"{where}: model.answer_table: {table!r} is not a file path — give the path of LXMERT's "
                          f"all_ans.json on a filesystem every node reads (local or NFS), or null for a seeded head")
    if exp.model.config:
        _check_model_config(exp.model.config, where)
    if exp.model.pretrained is None and d.source == "vqa":
        raise ConfigError(f"{where}: model.pretrained: required when data.source is 'vqa' — set it to a hub name "
                          f"(unc-nlp/lxmert-base-uncased) or a local directory")
    if d.source == "vqa" and not d.path:
        raise ConfigError(f"{where}: data.path: required when data.source is 'vqa' — set it to the directory "
                          f"`lxsweep prepare-vqa --out` made")


# LxmertConfig keywords lxsweep sets itself when it builds a tiny model (lxsweep/model.py: build_tiny).
SET_BY_LXSWEEP = {"num_qa_labels": "the answer vocabulary's size"}


def _check_model_config(config: dict, where: str) -> None:
    """Every ``model.config`` key must be an LxmertConfig attribute (transformers ignores unknown ones silently)."""
    from transformers import LxmertConfig  # at call time: transformers is slow to import and most files need none

    known = set(LxmertConfig().to_dict())
    for name in config:
        if name in SET_BY_LXSWEEP:
            raise ConfigError(f"{where}: model.config.{name}: set by lxsweep from {SET_BY_LXSWEEP[name]} — drop it")
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{where}: model.config.{name}: not an LxmertConfig attribute — {hint}see "
                              f"transformers' LxmertConfig (e.g. hidden_size, l_layers, x_layers, r_layers)")


# Per-field bounds: (field, test, what is expected). A test is written so that NaN fails it.
_AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
_LEARNING_RATE = (lambda v: v > 0, "a learning rate > 0")
_FRACTION = (lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")
TRAINING_BOUNDS = (("epochs", *_AT_LEAST_1), ("batch_size", *_AT_LEAST_1), ("eval_batch_size", *_AT_LEAST_1),
                   ("lr", *_LEARNING_RATE), ("warmup", *_FRACTION),
                   ("weight_decay", lambda v: v >= 0, "a number >= 0"),
                   ("grad_clip", lambda v: v >= 0, "a number >= 0 (0 = no clipping)"),
                   ("probe_steps", *_AT_LEAST_1), ("probe_lr", *_LEARNING_RATE))
DATA_BOUNDS = (("max_tokens", lambda v: v >= 4, "an integer >= 4"),
               ("loader_workers", lambda v: v >= 0, "an integer >= 0"))
SYNTHETIC_BOUNDS = (*((k, *_AT_LEAST_1) for k in ("train_questions", "valid_questions", "pretrain_questions", "feat_dim")),
                    ("test_questions", lambda v: v >= 0, "an integer >= 0 (0 = no test split)"),
                    ("num_boxes", lambda v: v >= 4, "an integer >= 4 (scenes hold up to 4 objects)"),
                    ("annotator_noise", lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)"),
                    ("feature_noise", lambda v: v >= 0, "a number >= 0"))
PRETRAINING_BOUNDS = (("steps", *_AT_LEAST_1), ("batch_size", lambda v: v >= 2, "an integer >= 2"),
                      ("lr", *_LEARNING_RATE), ("warmup", *_FRACTION),
                      ("mask_prob", lambda v: 0.0 < v < 1.0, "a probability in (0, 1)"))


def _check_bounds(fail: Callable[[str, Any, str], None], prefix: str, section: Any, bounds: tuple) -> None:
    """``fail(key, value, expected)`` for the first field of ``section`` outside its bounds."""
    for name, ok, expected in bounds:
        value = getattr(section, name)
        if not ok(value):
            fail(f"{prefix}.{name}", value, expected)


def _check_search(exp: Experiment, where: str) -> None:
    """search.*: bounds, seeds the experiment has, and subnetworks the grid trains."""
    s = exp.search

    def fail(key: str, value: Any, expected: str) -> None:
        raise ConfigError(f"{where}: search.{key}: {_show(value)} is out of range — expected {expected}")

    if not 0.0 < s.margin < 1.0:
        fail("margin", s.margin, "a fraction of accuracy in (0, 1), e.g. 0.02 for 2 points")
    if not 0.5 < s.confidence < 1.0:
        fail("confidence", s.confidence, "a probability in (0.5, 1), e.g. 0.95")
    if not 0.0 < s.collapse <= 1.0:
        fail("collapse", s.collapse, "a fraction of accuracy in (0, 1], e.g. 0.10 for 10 points")
    if s.mode != "frontier":
        return
    if len(exp.seeds) < 2:
        raise ConfigError(f"{where}: search.mode: frontier needs at least two seeds (its decisions are paired "
                          f"intervals over seeds); seeds is {exp.seeds} — add seeds, or use search.mode: grid")
    if not 2 <= s.min_seeds <= len(exp.seeds):
        fail("min_seeds", s.min_seeds, f"an integer in 2..{len(exp.seeds)} (the experiment's {len(exp.seeds)} seeds)")
    if s.max_seeds is not None and not s.min_seeds <= s.max_seeds <= len(exp.seeds):
        fail("max_seeds", s.max_seeds, f"an integer in {s.min_seeds}..{len(exp.seeds)} (search.min_seeds to the "
                                       f"number of seeds), or null for all")
    for i, name in enumerate(s.subnetworks or []):
        if name not in exp.pruning.subnetworks:
            raise ConfigError(f"{where}: search.subnetworks[{i}]: {name!r} is not in pruning.subnetworks "
                              f"{exp.pruning.subnetworks} — the search only chooses among the grid's trials")
    if s.subnetworks is not None and (not s.subnetworks or len(set(s.subnetworks)) != len(s.subnetworks)):
        fail("subnetworks", s.subnetworks, "distinct subnetworks, at least one, or null for the default questions")


def _check_replay(exp: Experiment, where: str) -> None:
    """The options that replay the paper's code (docs/PAPER_CODE.md): combinations that cannot mean anything."""
    p, r = exp.pruning, exp.rewind
    if p.schedule == "stepwise":
        if p.sparsities is not None:
            raise ConfigError(f"{where}: pruning.sparsities: schedule stepwise takes `pruning.rate` per-tensor steps "
                              f"per level, not explicit sparsities — set pruning.sparsities: null and pruning.levels, "
                              f"or use schedule oneshot")
        if p.layerwise:
            raise ConfigError(f"{where}: pruning.layerwise: schedule stepwise is always per tensor — drop "
                              f"pruning.layerwise")
    for i, s in enumerate(p.nominal):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 < s < 1.0:
            raise ConfigError(f"{where}: pruning.nominal[{i}]: {s!r} is out of range — expected a sparsity in (0, 1), "
                              f"e.g. [0.1, 0.2, 0.5]")
    if any(b <= a for a, b in zip(p.nominal, p.nominal[1:])):
        raise ConfigError(f"{where}: pruning.nominal: {p.nominal!r} — expected strictly increasing sparsities")
    if r.dense_seed is not None:
        if r.dense_seed not in exp.seeds:
            raise ConfigError(f"{where}: rewind.dense_seed: {r.dense_seed} is not in seeds {exp.seeds} — use one of "
                              f"them (its dense trial is every seed's parent)")
        if r.to != "pretrained":
            raise ConfigError(f"{where}: rewind.dense_seed: needs rewind.to: pretrained (the paper's code rewinds "
                              f"to the pretrained weights) — drop rewind.dense_seed or rewind to the pretrained weights")


def _check_schedule(exp: Experiment, where: str) -> None:
    """``pruning.rate``/``levels`` must give distinct sparsities below 1 (exact counts need the model: preflight)."""
    previous = 0.0
    for level in range(1, exp.pruning.levels + 1):
        s = exp.sparsity(level)
        if s >= 1.0 or s <= previous:
            raise ConfigError(
                f"{where}: pruning.levels: {exp.pruning.levels} levels at rate {exp.pruning.rate} reach sparsity "
                f"{s!r} at level {level}, where nothing is left to prune — lower pruning.levels below {level}")
        previous = s


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


def check_paths(exp: Experiment, base: Path | None = None) -> None:
    """Fail early on local paths that do not exist (the data store, a local pretrained dir, the answer table).

    Hub names (``org/model``) are left to ``from_pretrained``. Relative paths
    are taken from the current directory, like every other CLI path.
    """
    where = exp.source
    if exp.data.source == "vqa" and exp.data.path and "://" not in exp.data.path:
        store = Path(exp.data.path).expanduser()
        if not (store / "manifest.json").is_file():
            why = "does not exist" if not store.exists() else "has no manifest.json"
            raise ConfigError(f"{where}: data.path: {exp.data.path!r} {why} — make it with "
                              f"`lxsweep prepare-vqa --out {exp.data.path} ...` or fix data.path")
    table = exp.model.answer_table
    if table and not Path(table).expanduser().is_file():
        raise ConfigError(f"{where}: model.answer_table: {table!r} is not a file — give the path of LXMERT's "
                          f"data/lxmert/all_ans.json (it ships in the airsplay/lxmert repository), or drop the key")
    for key in ("pretrained", "tokenizer"):
        value = getattr(exp.model, key)
        if value and _looks_local(value) and not Path(value).expanduser().is_dir():
            raise ConfigError(f"{where}: model.{key}: local directory {_show(value)} does not exist — fix the path "
                              f"(a relative one is looked up next to the experiment file, then in the current directory)")
        if value and value.count("/") > 1 and not Path(value).expanduser().is_dir():
            raise ConfigError(
                f"{where}: model.{key}: {_show(value)} is neither an existing directory nor a hub name like 'org/model' "
                f"— fix the path or write a hub name"
            )


# -- the experiment recorded in a store ------------------------------------------


def write_experiment(store: Store, exp: Experiment, overwrite: bool = True) -> None:
    """Record the resolved experiment (``status`` and ``report`` read it); ``overwrite=False`` keeps one there."""
    if overwrite or not store.exists(EXPERIMENT_FILE):
        store.write_bytes(EXPERIMENT_FILE, yaml.safe_dump(exp.record(), sort_keys=False).encode())


EXPERIMENT_FIX = ("pass the experiment file instead of the store (`lxsweep status experiments/X.yaml`), or restore it; "
                  "`lxsweep launch` writes it again")


def read_experiment(store: Store) -> Experiment:
    """The experiment recorded in the store, with its recorded hash (its plugins imported, as for any experiment).

    :class:`CorruptStoreFile` when ``experiment.yaml`` is empty, not YAML, or not an experiment.
    """
    where = store.path(EXPERIMENT_FILE)
    try:
        raw = yaml.safe_load(store.read_bytes(EXPERIMENT_FILE))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CorruptStoreFile(where, f"not valid YAML ({' '.join(str(exc).split())[:200]})", EXPERIMENT_FIX) from None
    if not isinstance(raw, dict) or not raw:
        raise CorruptStoreFile(where, "empty or not a mapping", EXPERIMENT_FIX)
    if "hash" not in raw:
        raise CorruptStoreFile(where, "incomplete: no recorded hash", EXPERIMENT_FIX)
    return from_record(raw, where)


def migrate_store(exp: Experiment, log: Callable[[str], None] = print) -> Optional[str]:
    """Rename a local store named by :attr:`Experiment.legacy_hash` (an absolute model path in the hash) to the
    experiment's store name, once; returns the new root, or None when there is nothing to move.

    Nothing is overwritten: with both stores present, both stay and one line says so. Object stores are not
    renamed (a copy of every object); the line says how.
    """
    if exp.recorded_hash or exp.legacy_hash == exp.hash:
        return None
    old, new = f"{exp.name}-{exp.legacy_hash}", exp.store_name
    storage = exp.storage.removeprefix("file://")
    if "://" in storage:
        return None
    base = Path(storage).expanduser()
    if not (base / old / EXPERIMENT_FILE).is_file():
        return None
    if (base / new).exists():
        log(f"lxsweep: note: {base / old} (named before model paths were hashed relative to the experiment file) "
            f"and {base / new} both exist; using {base / new} and leaving the other as it is")
        return None
    (base / old).rename(base / new)
    store = Store(str(base / new))
    record = yaml.safe_load(store.read_bytes(EXPERIMENT_FILE))
    record["hash"] = exp.hash
    store.write_bytes(EXPERIMENT_FILE, yaml.safe_dump(record, sort_keys=False).encode())
    log(f"lxsweep: renamed the store {base / old} to {base / new}: the hash now sees model paths relative to the "
        f"experiment file, not where the checkout lives (finished trials are kept)")
    return store.root
