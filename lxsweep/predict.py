"""Predictions in the official VQA results format, for any prepared split (the test server's too).

``lxsweep predict`` answers every question of a split of a prepared store
(``lxsweep prepare-vqa``; a ``--test-split`` has questions but no
annotations) with a finished trial's kept weights or an exported directory,
and writes ``[{"question_id": int, "answer": str}]``: what the VQA evaluation
server takes, and what ``lxsweep vqa-eval`` scores where annotations exist.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lxsweep.data import VQASplit
from lxsweep.data.loader import make_loader, tokenize


@torch.no_grad()
def predict_split(model: torch.nn.Module, tokenizer, answers: list[str], split: VQASplit, max_tokens: int,
                  batch_size: int = 256) -> list[dict]:
    """The model's answer to every question of ``split``, in the split's order, as official results."""
    from lxsweep.train import Runtime, forward

    rt = Runtime(torch.device("cuda" if torch.cuda.is_available() else "cpu"))  # fp32 either way
    loader = make_loader(split, tokenize(tokenizer, split.questions, max_tokens), batch_size, rt, shuffle_seed=None)
    model.to(rt.device).eval()
    out: list[dict] = []
    for batch in loader:
        rows = batch.pop("rows")
        batch = {k: v.to(rt.device) for k, v in batch.items()}
        for row, label in zip(rows.tolist(), forward(model, batch, rt).argmax(dim=1).tolist()):
            out.append({"question_id": int(split.question_ids[row]), "answer": answers[label]})
    return out


def write_results(results: list[dict], path: str | Path) -> Path:
    """Write official results JSON (a list of ``{"question_id", "answer"}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path
