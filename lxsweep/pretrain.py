"""The embedded task's rewind point: a tiny LXMERT pretrained with LXMERT's own objectives.

The paper rewinds every subnetwork to *pretrained* LXMERT. The embedded
default has no published checkpoint, so lxsweep makes one the way LXMERT was
made, with the objectives of transformers' ``LxmertForPreTraining`` on a split
of the synthetic task that no trial trains or validates on:

=========  ==========================================================================
objective  what the model predicts
=========  ==========================================================================
``mlm``    masked question words (15%, BERT's 80/10/10 rule), with the image in view
``obj``    the detector object class of masked regions (TSV ``objects_id``)
``attr``   the detector attribute class of masked regions (TSV ``attrs_id``)
``feat``   the features of masked regions (smooth-L1 regression)
``itm``    whether the question belongs to the image (half the pairs get another image)
``qa``     the answer, on matched pairs only (LXMERT pretrains on VQA questions too)
=========  ==========================================================================

One departure from LXMERT, measured: in a batch, half of the questions are
masked (for the four masked objectives) and the other half is left whole (for
matching and answering). With every objective on the same masked inputs, a
tiny LXMERT never got past the question-only baseline within 10,000 steps:
with six-word questions a masked word or region is often exactly what the
answer depends on (docs/results/demo/README.md).

The result is saved with ``save_pretrained`` (model, tokenizer) under
``pretrained-<hash>/`` in the store, where the hash covers exactly what makes
it (model shape, pretraining recipe, synthetic task); every trial then loads
it with ``LxmertForQuestionAnswering.from_pretrained`` like
``unc-nlp/lxmert-base-uncased``, and its pretraining heads are dropped.
Deterministic: a pure function of the experiment, on any machine with the same
thread count.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from transformers import LxmertConfig, LxmertForPreTraining

from lxsweep import model as lxmodel
from lxsweep import optim
from lxsweep.config import Experiment, canonical_hash
from lxsweep.data import VQASplit
from lxsweep.data.loader import per_image, region_tensors, tokenize
from lxsweep.store import Store, pretrained_dir

_IGNORE = -100  # CrossEntropyLoss's ignore_index: positions without a target
_MASK_TOKEN = "[MASK]"


def pretrained_name(exp: Experiment) -> str:
    """Store directory of the embedded task's pretrained model: a hash of what makes it."""
    from lxsweep.data.source import synthetic_store_name

    # The prepared data's name hashes the task settings and the generator's code: new data, new model.
    what = {"config": exp.model.config, "pretraining": dataclasses.asdict(exp.model.pretraining),
            "data": synthetic_store_name(exp.data.synthetic), "max_tokens": exp.data.max_tokens}
    return pretrained_dir(canonical_hash(what))


def rewind_point(exp: Experiment, store: Store, log: Callable[[str], None] = print) -> str:
    """Model directory (or hub name) every trial starts from; pretrains the embedded one once.

    A real experiment names its checkpoint (``model.pretrained``); the
    embedded default pretrains a tiny LXMERT once per store and caches it.
    """
    if exp.model.pretrained:
        return exp.model.pretrained
    name = pretrained_name(exp)
    if not store.exists(f"{name}/config.json"):
        with tempfile.TemporaryDirectory(prefix="lxsweep-pretrain-") as tmp:
            pretrain(exp, store, Path(tmp), log)
            store.upload_dir(tmp, name, last="config.json")  # its presence means complete
    return str(store.local_dir(name))


# -- the model -----------------------------------------------------------------


def pretraining_config(exp: Experiment, vocab_size: int, feat_dim: int, num_answers: int,
                       num_objects: int, num_attrs: int) -> LxmertConfig:
    """A tiny ``LxmertConfig`` from ``model.config`` with the heads the chosen objectives need."""
    on = set(exp.model.pretraining.objectives)
    return LxmertConfig(**{
        "vocab_size": vocab_size, "visual_feat_dim": feat_dim, "visual_pos_dim": 4, **exp.model.config,
        "num_qa_labels": num_answers, "num_object_labels": num_objects, "num_attr_labels": num_attrs,
        "task_mask_lm": "mlm" in on, "task_matched": "itm" in on, "task_qa": "qa" in on,
        "task_obj_predict": bool(on & {"obj", "attr", "feat"}),
        "visual_obj_loss": "obj" in on, "visual_attr_loss": "attr" in on, "visual_feat_loss": "feat" in on,
    })


def build_pretraining_model(config: LxmertConfig, seed: int) -> LxmertForPreTraining:
    """``LxmertForPreTraining`` with BERT-style weights drawn from ``seed`` (transformers' own init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LxmertForPreTraining(config)


# -- batches -------------------------------------------------------------------


class PretrainingBatches:
    """Builds the model inputs and labels of each objective for rows of a split.

    Every random choice (masked words, masked regions, mismatched images) comes
    from the generator passed in, so a pretraining run is reproducible.
    """

    def __init__(self, split: VQASplit, tokens: dict[str, torch.Tensor], objectives: set[str], mask_prob: float,
                 vocab_size: int, mask_token_id: int, special_ids: set[int]):
        if objectives & {"obj", "attr"} and (split.object_labels is None or split.attr_labels is None):
            raise ValueError("masked object/attribute prediction needs detector labels (objects_id/attrs_id) in the data")
        self.split, self.tokens, self.objectives, self.mask_prob = split, tokens, objectives, mask_prob
        self.vocab_size, self.mask_token_id = vocab_size, mask_token_id
        self.special = torch.tensor(sorted(special_ids))
        self.answers = torch.from_numpy(_top_answer(split))
        self.num_images = len(split.features)

    def __call__(self, rows: torch.Tensor, gen: torch.Generator) -> dict:
        """Inputs and labels for ``rows``. With both kinds of objectives on, the first half of the rows
        is masked (mlm/obj/attr/feat) and the second half is left whole for matching and answering."""
        n = len(rows)
        masking = self.objectives & {"mlm", "obj", "attr", "feat"}
        whole = self.objectives & {"itm", "qa"}
        cut = n // 2 if masking and whole else (n if masking else 0)
        masked_rows = torch.arange(n) < cut  # rows whose words and regions may be masked
        images = torch.from_numpy(np.asarray(self.split.image_index[rows.numpy()], dtype=np.int64))
        matched = torch.ones(n, dtype=torch.long)
        if "itm" in self.objectives:
            other = torch.randint(self.num_images, (n,), generator=gen)
            swap = (torch.rand(n, generator=gen) < 0.5) & (other != images) & ~masked_rows
            images = torch.where(swap, other, images)
            matched = (~swap).long()
        ids = self.tokens["input_ids"][rows].clone()
        batch = {"input_ids": ids, "attention_mask": self.tokens["attention_mask"][rows],
                 "token_type_ids": self.tokens["token_type_ids"][rows]}
        take = per_image(images.numpy())
        feats, batch["visual_pos"] = region_tensors(self.split, take)
        if "mlm" in self.objectives:
            batch["labels"] = self._mask_words(ids, batch["attention_mask"] * masked_rows.unsqueeze(1), gen)
        if self.objectives & {"obj", "attr", "feat"}:
            masked = ((torch.rand(feats.shape[:2], generator=gen) < self.mask_prob) & masked_rows.unsqueeze(1)).float()
            labels = {}
            if "obj" in self.objectives:
                labels["obj"] = (torch.from_numpy(take(self.split.object_labels)).long(), masked)
            if "attr" in self.objectives:
                labels["attr"] = (torch.from_numpy(take(self.split.attr_labels)).long(), masked)
            if "feat" in self.objectives:
                labels["feat"] = (feats.clone(), masked)
            feats = feats * (1.0 - masked).unsqueeze(-1)  # LXMERT zeroes a masked region's feature
            batch["obj_labels"] = labels
        batch["visual_feats"] = feats
        ignore = torch.full((n,), _IGNORE)
        if "itm" in self.objectives:
            batch["matched_label"] = torch.where(masked_rows, ignore, matched)
        if "qa" in self.objectives:
            batch["ans"] = torch.where(matched.bool() & ~masked_rows, self.answers[rows], ignore)
        return batch

    def _mask_words(self, ids: torch.Tensor, attention: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """BERT's masking, in place on ``ids``: 15% of words, 80% [MASK], 10% random word, 10% kept."""
        word = (attention == 1) & ~torch.isin(ids, self.special)
        chosen = word & (torch.rand(ids.shape, generator=gen) < self.mask_prob)
        labels = torch.where(chosen, ids, torch.full_like(ids, _IGNORE))
        roll = torch.rand(ids.shape, generator=gen)
        ids[chosen & (roll < 0.8)] = self.mask_token_id
        random_word = chosen & (roll >= 0.8) & (roll < 0.9)
        ids[random_word] = torch.randint(self.vocab_size, (int(random_word.sum()),), generator=gen)
        return labels


def _top_answer(split: VQASplit) -> np.ndarray:
    """Each question's best-scored answer label (LXMERT's pretraining QA is single-label), -100 if none."""
    best = split.target_scores.argmax(axis=1)
    labels = split.target_labels[np.arange(len(best)), best]
    return np.where(labels >= 0, labels, _IGNORE).astype(np.int64)


# -- the loop ------------------------------------------------------------------


def pretrain(exp: Experiment, store: Store, out: Path, log: Callable[[str], None] = print) -> dict:
    """Pretrain the tiny LXMERT of ``exp`` and ``save_pretrained`` it (with its tokenizer) into ``out``.

    Returns the pretraining record (losses, held-out QA accuracy, time), also
    written to ``out/pretraining.json``.
    """
    from lxsweep.data.source import load_dataset
    from lxsweep.data.synthetic import write_tokenizer

    p = exp.model.pretraining
    t0 = time.time()
    write_tokenizer(out)
    tokenizer = lxmodel.load_tokenizer(str(out))
    data = load_dataset(exp, store, "pretrain")
    train = data.train
    config = pretraining_config(exp, tokenizer.vocab_size, train.features.shape[-1], data.num_answers,
                                int(train.object_labels.max()) + 1, int(train.attr_labels.max()) + 1)
    seed = exp.data.synthetic.seed
    model = build_pretraining_model(config, seed)
    threads = torch.get_num_threads()
    # The trials' thread count (resources.cpus_per_worker): the result does not depend on the machine's
    # core count, and on a shared CPU more threads than free cores spin and run many times slower.
    torch.set_num_threads(max(1, int(exp.resources.cpus_per_worker)))
    try:
        history = run_pretraining(model, train, tokenizer, exp, seed, log)
        accuracy = qa_accuracy(model, data.valid, tokenizer, exp.data.max_tokens) if "qa" in p.objectives else None
    finally:
        torch.set_num_threads(threads)
    record = {"steps": p.steps, "objectives": list(p.objectives), "final_loss": history[-1]["loss"],
              "history": history, "heldout_qa_accuracy": accuracy, "seconds": round(time.time() - t0, 1),
              "questions": len(train), "parameters": sum(x.numel() for x in model.parameters())}
    model.save_pretrained(str(out))
    (out / "pretraining.json").write_text(json.dumps(record, indent=1) + "\n")
    acc = f", held-out QA accuracy {accuracy:.3f}" if accuracy is not None else ""
    log(f"pretrained the rewind point: {p.steps} steps of {'+'.join(p.objectives)} on {len(train)} "
        f"questions, loss {history[0]['loss']:.2f} -> {history[-1]['loss']:.2f}{acc} ({record['seconds']:.0f}s)")
    return record


def run_pretraining(model: LxmertForPreTraining, split: VQASplit, tokenizer, exp: Experiment, seed: int,
                    log: Callable[[str], None] = print, steps: Optional[int] = None) -> list[dict]:
    """AdamW with linear warmup and decay over ``steps`` batches; the loss is the sum of the objectives'."""
    p = exp.model.pretraining
    steps = p.steps if steps is None else steps
    tokens = tokenize(tokenizer, split.questions, exp.data.max_tokens)
    special = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    batches = PretrainingBatches(split, tokens, set(p.objectives), p.mask_prob, tokenizer.vocab_size,
                                 tokenizer.convert_tokens_to_ids(_MASK_TOKEN), special)
    lxmodel.use_sdpa_attention(model)
    optimizer = optim.adamw(model, p.lr, weight_decay=0.01)
    scheduler = optim.warmup_then_decay(optimizer, steps, max(1, int(p.warmup * steps)))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    model.train()
    history, running, every = [], 0.0, max(1, steps // 20)
    for step in range(1, steps + 1):
        rows = torch.randint(len(split), (p.batch_size,), generator=gen)
        loss = model(**batches(rows, gen)).loss
        loss.backward()
        optim.clip_gradients(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += float(loss.detach())
        if step % every == 0 or step == steps:
            count = every if step % every == 0 else step % every
            history.append({"step": step, "loss": round(running / count, 5)})
            running = 0.0
            if step % (every * 5) == 0:
                log(f"pretraining step {step}/{steps}: loss {history[-1]['loss']:.3f}")
    return history


@torch.no_grad()
def qa_accuracy(model: LxmertForPreTraining, split: VQASplit, tokenizer, max_tokens: int) -> float:
    """Fraction of held-out questions whose top answer is the pretraining QA head's prediction."""
    model.eval()
    tokens = tokenize(tokenizer, split.questions, max_tokens)
    truth = _top_answer(split)
    correct = 0
    for start in range(0, len(split), 256):
        rows = np.arange(start, min(start + 256, len(split)))
        img = np.asarray(split.image_index[rows])
        out = model(input_ids=tokens["input_ids"][rows], attention_mask=tokens["attention_mask"][rows],
                    token_type_ids=tokens["token_type_ids"][rows],
                    visual_feats=torch.from_numpy(np.asarray(split.features[img])).float(),
                    visual_pos=torch.from_numpy(np.asarray(split.boxes[img], dtype=np.float32)))
        correct += int((out.question_answering_score.argmax(1).numpy() == truth[rows]).sum())
    model.train()
    return correct / max(1, len(split))
