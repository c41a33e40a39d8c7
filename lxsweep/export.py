"""Take a trial away: a Hugging Face directory of its subnetwork, and a compact sparse form.

:func:`export_trial` turns a finished trial's kept weights
(``weights/<trial>.safetensors``, see ``training.keep_weights``) into a
``save_pretrained`` directory that ``LxmertForQuestionAnswering.from_pretrained``
loads with no lxsweep installed: the model (pruned weights exactly zero), its
config (``id2label``/``label2id`` = the answer vocabulary, and an ``lxsweep``
entry with the sparsity, the mask's provenance and the recorded metrics), the
tokenizer and a model card (README.md). Beside the model, ``sparse.safetensors``
holds the same weights as a bit-packed mask plus the kept values of every
pruned tensor; :func:`load_sparse` gives the dense state dict back bit for bit.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lxsweep import pruning
from lxsweep.plan import TrialKey, parent, trial_mask_name
from lxsweep.config import read_experiment
from lxsweep.masks import load_mask, load_weights
from lxsweep.store import Store, finished_trials, mask_path, metrics_path, weights_path

if TYPE_CHECKING:
    from transformers import LxmertForQuestionAnswering

    from lxsweep.config import Experiment

SPARSE_FILE = "sparse.safetensors"
SPARSE_FORMAT = "lxsweep.sparse-v1"
_FORMAT_KEY, _SHAPES_KEY = "lxsweep.sparse.format", "lxsweep.sparse.shapes"
_MASK, _VALUES = "::mask", "::values"  # suffixes of a pruned tensor's two entries


class ExportError(ValueError):
    """A trial that cannot be exported as asked; the message says what to do."""


# -- the sparse form ------------------------------------------------------------


def save_sparse(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], path: str | Path,
                metadata: Optional[dict[str, str]] = None) -> None:
    """Write ``state`` with each tensor in ``mask`` as a bit-packed mask plus its kept values (in order).

    Tensors outside ``mask`` are stored whole. Values keep their dtype, so
    :func:`load_sparse` returns exactly ``state`` (pruned entries zero).
    """
    tensors, shapes = {}, {}
    for name, t in state.items():
        m = mask.get(name)
        if m is None:
            tensors[name] = t.detach().cpu().contiguous()
            continue
        if m.shape != t.shape:
            raise ValueError(f"mask of {name} has shape {tuple(m.shape)}, the tensor {tuple(t.shape)}")
        flat = m.detach().cpu().reshape(-1)
        tensors[name + _MASK] = torch.from_numpy(np.packbits(flat.numpy()))
        tensors[name + _VALUES] = t.detach().cpu().reshape(-1)[flat].contiguous()
        shapes[name] = list(t.shape)
    meta = {**(metadata or {}), _FORMAT_KEY: SPARSE_FORMAT, _SHAPES_KEY: json.dumps(shapes)}
    save_file(tensors, str(path), metadata=meta)


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """The dense state dict of a file written by :func:`save_sparse` (load it with ``load_state_dict``)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get(_FORMAT_KEY) != SPARSE_FORMAT:
            raise ValueError(f"{path}: not an lxsweep sparse file (format {meta.get(_FORMAT_KEY)!r})")
        shapes = json.loads(meta[_SHAPES_KEY])
        state = {}
        for name in f.keys():
            if name.endswith((_MASK, _VALUES)):
                continue
            state[name] = f.get_tensor(name)
        for name, shape in shapes.items():
            values = f.get_tensor(name + _VALUES)
            bits = np.unpackbits(f.get_tensor(name + _MASK).numpy(), count=math.prod(shape))
            flat = torch.zeros(math.prod(shape), dtype=values.dtype)
            flat[torch.from_numpy(bits.view(np.bool_))] = values
            state[name] = flat.reshape(shape)
    return state


# -- export -------------------------------------------------------------------


@dataclass
class Exported:
    """What :func:`export_trial` wrote."""

    out: Path
    model_file: Path
    sparse_file: Path
    zeros: int  # exact zeros among the prunable weights
    pruned: int  # weights the mask removed

    @property
    def dense_bytes(self) -> int:
        return self.model_file.stat().st_size

    @property
    def sparse_bytes(self) -> int:
        return self.sparse_file.stat().st_size


def provenance(store: Store, trial: str) -> dict:
    """Where trial ``trial``'s mask came from: the mask file, its criterion, and the chain of trials behind it."""
    exp, key = read_experiment(store), TrialKey.parse(trial)
    chain, k = [], parent(exp, key)
    while k is not None:
        chain.insert(0, k.name)
        k = parent(exp, k)
    name = trial_mask_name(exp, key)
    out: dict = {"trial": trial, "chain": chain, "mask": None}
    if name is not None and store.exists(mask_path(name)):
        meta = load_mask(store, name, with_metadata=True)[1]
        out["mask"] = {"file": mask_path(name), **{k: json.loads(meta[k]) for k in ("kind", "from", "trial") if k in meta}}
    return out


@dataclass
class TrialModel:
    """A finished trial's subnetwork, rebuilt from its kept weights (float32, pruned weights zero)."""

    exp: "Experiment"
    key: TrialKey
    metrics: dict
    stored: dict[str, torch.Tensor]  # the kept weights as stored (training.weights_dtype)
    model: "LxmertForQuestionAnswering"
    tokenizer: object
    answers: list[str]


def trial_model(store: Store, trial: str, log: Callable[[str], None] = print) -> TrialModel:
    """Rebuild finished trial ``trial`` of ``store`` as a model; :class:`ExportError` when it cannot be."""
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    from lxsweep import model as lxmodel
    from lxsweep.data.source import load_dataset
    from lxsweep.pretrain import rewind_point

    exp = read_experiment(store)
    try:
        key = TrialKey.parse(trial)
    except ValueError:
        key = None
    if key is None or not store.exists(metrics_path(trial)):
        finished = sorted(finished_trials(store))
        if not finished:
            raise ExportError(f"{store.root}: no finished trial {trial!r} — the store has none yet; launch the "
                              f"experiment or run `lxsweep trial` first")
        import difflib

        near = difflib.get_close_matches(trial[:200], finished, n=3, cutoff=0.5) or finished[:3]
        raise ExportError(f"{store.root}: no finished trial {trial[:200]!r} — pick one of the {len(finished)} "
                          f"finished ones (`lxsweep status {store.root}`), e.g. {', '.join(near)}")
    if not store.exists(weights_path(trial)):
        from lxsweep.plan import keeps_weights

        why = (f"its weights file {weights_path(trial)} is missing (the store was copied without weights/, or the "
               f"file was deleted)" if keeps_weights(exp, key) else
               f"it kept no weights (training.keep_weights was {exp.training.keep_weights!r})")
        raise ExportError(f"{store.root}: trial {trial}: {why} — re-run it with `lxsweep trial ... --set "
                          f"training.keep_weights=all` into a copy of the store, then use that copy")
    stored = load_weights(store, weights_path(trial), f"re-run the trial (`lxsweep trial` with --level {key.level} "
                          f"--subnetwork {key.subnetwork} --seed {key.seed}) into a copy of the store")
    answers = load_dataset(exp, store).answers
    model_dir = rewind_point(exp, store, log)
    config = LxmertConfig.from_pretrained(model_dir)
    config.num_qa_labels = len(answers)
    config.id2label = dict(enumerate(answers))
    config.label2id = {a: i for i, a in enumerate(answers)}
    model = LxmertForQuestionAnswering(config)
    model.load_state_dict({n: t.float() if t.is_floating_point() else t for n, t in stored.items()}, strict=True)
    tokenizer = lxmodel.load_tokenizer(exp.model.tokenizer or model_dir)
    return TrialModel(exp, key, store.read_json(metrics_path(trial)), stored, model.eval(), tokenizer, answers)


def export_trial(store: Store, trial: str, out: str | Path, log: Callable[[str], None] = print,
                 shrink: bool = False) -> Exported:
    """Write trial ``trial``'s subnetwork as a ``save_pretrained`` directory plus ``sparse.safetensors``.

    The model is float32 (the kept float16/bfloat16 values cast exactly), so
    it loads and scores the same everywhere; the sparse form keeps the stored
    dtype. ``shrink``: the heads and feed-forward neurons the mask removes whole
    are removed from the model, not zeroed (lxsweep/shrunk_lxmert.py, copied
    beside it and named in ``config.json``'s ``auto_map``), so the files and the
    matrix products are smaller. Raises :class:`ExportError` for an unfinished
    trial, missing weights, a non-empty ``out``, or ``shrink`` on a mask that
    removes no whole unit.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty directory — choose a new or empty --out")
    tm = trial_model(store, trial, log)
    exp, key, metrics, stored = tm.exp, tm.key, tm.metrics, tm.stored
    mask_name = trial_mask_name(exp, key)
    mask = load_mask(store, mask_name) if mask_name else {}
    prunable = pruning.prunable_names(stored, exp.pruning.scope)
    zeros = sum(int((stored[n] == 0).sum()) for n in prunable)
    pruned = sum(int((~m).sum()) for m in mask.values())
    card = {
        "trial": trial, "experiment": exp.name, "hash": exp.hash, "subnetwork": key.subnetwork,
        "level": key.level, "seed": key.seed, "sparsity": metrics["sparsity"], "sparsity_all": metrics["sparsity_all"],
        "pruned_weights": pruned, "zeros_in_scope": zeros, "scope": exp.pruning.scope,
        "kept_dtype": metrics["weights"]["dtype"] if metrics.get("weights") else str(next(iter(stored.values())).dtype),
        "max_tokens": exp.data.max_tokens, "valid_split": exp.data.valid_split,
        "metrics": {k: v for k, v in metrics.items() if k.startswith("accuracy") or k == "best_accuracy"},
        "provenance": provenance(store, trial),
    }
    tm.model.config.lxsweep = card  # saved into config.json beside the model's own keys
    from lxsweep.masks import heads_of

    heads = heads_of(tm.model)
    shrunk = shrink_model(tm.model, mask, trial) if shrink else None
    if shrunk is not None:
        card["shrunk"] = {"heads_removed": sum(heads - len(b["keep"]) for b in shrunk.get("attention", [])),
                          "neurons_removed": sum(mask[b["inter"] + ".weight"].shape[0] - len(b["keep"])
                                                 for b in shrunk.get("feed_forward", [])),
                          "parameters": sum(p.numel() for p in tm.model.parameters())}
        tm.model.config.lxsweep = card
    out.mkdir(parents=True, exist_ok=True)
    tm.model.save_pretrained(str(out))
    tm.tokenizer.save_pretrained(str(out))
    if shrunk is not None:
        import shutil

        from lxsweep import shrunk_lxmert

        shutil.copyfile(shrunk_lxmert.__file__, out / SHRUNK_MODULE)
    sparse_file = out / SPARSE_FILE
    state = tm.model.state_dict() if shrunk is not None else stored
    left = shrunk_mask(mask, shrunk, heads) if shrunk is not None else mask
    save_sparse(state, left, sparse_file, {"trial": trial, "provenance": json.dumps(card["provenance"])})
    result = Exported(out, out / "model.safetensors", sparse_file, zeros, pruned)
    (out / "README.md").write_text(model_card(card, result))
    return result


SHRUNK_MODULE = "shrunk_lxmert.py"


def shrink_model(model: "LxmertForQuestionAnswering", mask: Mapping[str, torch.Tensor], trial: str) -> dict:
    """Remove from ``model`` (in place) the heads and neurons ``mask`` removes whole; record how in its config
    (``shrunk``, ``auto_map``, ``architectures``) so ``from_pretrained`` rebuilds it; returns the spec."""
    from lxsweep.masks import heads_of
    from lxsweep.shrunk_lxmert import apply_shrink

    spec = pruning.shrink_spec(dict(mask), heads_of(model))
    if not spec:
        raise ExportError(f"trial {trial}: its mask removes no whole attention head or feed-forward neuron, so "
                          f"--shrink has nothing to take out — export a structured ticket (subnetworks heads, "
                          f"neurons, structured), or drop --shrink")
    apply_shrink(model, spec)
    model.config.shrunk = spec
    model.config.architectures = ["LxmertShrunkForQuestionAnswering"]
    model.config.auto_map = {"AutoModelForQuestionAnswering": "shrunk_lxmert.LxmertShrunkForQuestionAnswering",
                             "AutoModel": "shrunk_lxmert.LxmertShrunkForQuestionAnswering"}
    return spec


def shrunk_mask(mask: Mapping[str, torch.Tensor], spec: dict, heads: int) -> dict[str, torch.Tensor]:
    """``mask`` without the rows and columns ``spec`` removes: what is left of it on the shrunk model's tensors."""
    out = dict(mask)

    def keep(name: str, dim: int, index: torch.Tensor) -> None:
        out[name] = out[name].index_select(dim, index)

    for block in spec.get("attention", []):
        size = out[f"{block['attention']}.query.weight"].shape[0] // heads
        rows = torch.tensor([h * size + i for h in block["keep"] for i in range(size)], dtype=torch.long)
        for part in ("query", "key", "value"):
            keep(f"{block['attention']}.{part}.weight", 0, rows)
        keep(f"{block['output']}.weight", 1, rows)
    for block in spec.get("feed_forward", []):
        index = torch.tensor(block["keep"], dtype=torch.long)
        keep(f"{block['inter']}.weight", 0, index)
        keep(f"{block['output']}.weight", 1, index)
    return out


def _use(card: dict) -> str:
    """The model card's loading snippet: the stock class, or the shrunk one (it ships beside the weights)."""
    load = "LxmertForQuestionAnswering.from_pretrained(DIR)"
    head = "from transformers import AutoTokenizer, LxmertForQuestionAnswering"
    note = ""
    if card.get("shrunk"):
        sh = card["shrunk"]
        load = "AutoModelForQuestionAnswering.from_pretrained(DIR, trust_remote_code=True)"
        head = "from transformers import AutoModelForQuestionAnswering, AutoTokenizer"
        note = (f"Shrunk: {sh['heads_removed']} attention heads and {sh['neurons_removed']} feed-forward neurons "
                f"removed, not zeroed ({sh['parameters']} parameters left); `{SHRUNK_MODULE}` (torch and "
                f"transformers only) builds the narrower layers, named in `config.json`'s `auto_map`.\n\n")
    return (f"{note}```python\n{head}\nmodel = {load}\ntokenizer = AutoTokenizer.from_pretrained(DIR)  # questions "
            f"padded/truncated to {card['max_tokens']} tokens\nanswer = model.config.id2label[int(model(**inputs)"
            f".question_answering_score.argmax(-1)[0])]\n```")


def model_card(card: dict, result: Exported) -> str:
    """The exported directory's README.md: what the subnetwork is, where its mask came from, how it scored."""
    m, p = card["metrics"], card["provenance"]
    mask = p["mask"]
    origin = "none (a dense model)" if mask is None else (
        f"`{mask['file']}`, criterion `{mask.get('kind', '?')}`"
        + (f", computed from the trained weights of `{mask['from']}`" if mask.get("from") else ", made at the trial's start"))
    chain = " → ".join([*p["chain"], card["trial"]])
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(m.items()) if isinstance(v, (int, float)))
    return f"""---
library_name: transformers
tags: [lxmert, visual-question-answering, pruning, lottery-ticket, lxsweep]
---
# {card['trial']} of {card['experiment']}-{card['hash']}

LXMERT for VQA: subnetwork `{card['subnetwork']}` at level {card['level']}, seed {card['seed']}.
Sparsity {100 * card['sparsity']:.2f}% of the prunable weights (scope {', '.join(card['scope'])}),
{100 * card['sparsity_all']:.2f}% of all parameters: {card['pruned_weights']} weights pruned, stored as exact
zeros ({card['zeros_in_scope']} zeros in scope). Trained weights kept in {card['kept_dtype']}, saved here as float32.

## Mask provenance

Mask: {origin}. Chain of trials: {chain}.

## Recorded metrics (official VQA accuracy, split `{card['valid_split']}`)

| metric | value |
|---|---|
{rows}

## Use

{_use(card)}

## Sparse form

`{SPARSE_FILE}` ({result.sparse_bytes} bytes, against {result.dense_bytes} for `model.safetensors`): each pruned
tensor as a bit-packed mask plus its kept values, the rest whole. `lxsweep.export.load_sparse(path)` returns the
dense state dict (`model.load_state_dict(...)`).
"""
