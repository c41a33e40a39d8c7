"""A physically smaller LXMERT: attention heads and feed-forward neurons removed, not zeroed.

Self-contained on purpose (torch and transformers only, never lxsweep): ``lxsweep export --shrink`` copies
this file into the exported directory, whose ``config.json`` names it in ``auto_map``, so

    AutoModelForQuestionAnswering.from_pretrained(directory, trust_remote_code=True)

(or ``LxmertShrunkForQuestionAnswering.from_pretrained(directory)`` with this file importable) builds the
narrower layers and loads the exported weights with no lxsweep installed. lxsweep uses the same code to
shrink a model in memory (``apply_shrink``), so the two cannot drift apart.

``config.shrunk`` says what was removed::

    {"attention": [{"attention": "lxmert.encoder.layer.0.attention.self",
                "output": "lxmert.encoder.layer.0.attention.output.dense", "keep": [0, 2]}, ...],
     "feed_forward": [{"inter": "lxmert.encoder.layer.0.intermediate.dense",
                  "output": "lxmert.encoder.layer.0.output.dense", "keep": [3, 5, ...]}, ...]}

A removed head's query/key/value rows and output columns go; a removed neuron's row of the widening layer
(and its bias) and column of the narrowing one go. The model computes exactly what the masked model with
those weights zero computes: a head whose output columns are zero adds nothing, whatever its biases.
"""
from __future__ import annotations

import warnings

import torch
from transformers import LxmertForQuestionAnswering
from transformers.pytorch_utils import prune_linear_layer


def _set(model: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    owner, _, name = path.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, name, module)


def apply_shrink(model: torch.nn.Module, shrunk: dict) -> torch.nn.Module:
    """Remove the heads and neurons ``shrunk`` does not keep, in place (see the module docstring); returns it."""
    with warnings.catch_warnings():  # a block that loses every unit becomes a zero-width layer: torch warns
        warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
        return _apply(model, shrunk)


def _apply(model: torch.nn.Module, shrunk: dict) -> torch.nn.Module:
    for block in shrunk.get("attention", []):
        att = model.get_submodule(block["attention"])
        size = att.attention_head_size
        keep = sorted(int(h) for h in block["keep"])
        rows = torch.tensor([h * size + i for h in keep for i in range(size)], dtype=torch.long)
        for name in ("query", "key", "value"):
            setattr(att, name, prune_linear_layer(getattr(att, name), rows, dim=0))
        att.num_attention_heads = len(keep)
        att.head_size = len(keep) * size  # transformers' eager attention reads it; the SDPA path reads the two above
        _set(model, block["output"], prune_linear_layer(model.get_submodule(block["output"]), rows, dim=1))
    for block in shrunk.get("feed_forward", []):
        keep = torch.tensor(sorted(int(j) for j in block["keep"]), dtype=torch.long)
        _set(model, block["inter"], prune_linear_layer(model.get_submodule(block["inter"]), keep, dim=0))
        _set(model, block["output"], prune_linear_layer(model.get_submodule(block["output"]), keep, dim=1))
    return model


class LxmertShrunkForQuestionAnswering(LxmertForQuestionAnswering):
    """``LxmertForQuestionAnswering`` with the layers ``config.shrunk`` narrows built narrow."""

    def __init__(self, config):
        super().__init__(config)
        apply_shrink(self, getattr(config, "shrunk", None) or {})
