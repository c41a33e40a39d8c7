"""LXMERT for VQA: loading the rewind point, starting the answer head, re-initialising.

The real path and the tiny path are the same code: a model directory (a hub
name such as ``unc-nlp/lxmert-base-uncased`` or a local ``save_pretrained``
directory) is loaded with ``from_pretrained``; the answer head is sized to the
answer vocabulary and either initialised from the trial's seed or, given the
pretraining answer table (``model.answer_table``), started from the
checkpoint's own question-answering head as LXMERT's ``load_lxmert_qa`` does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import transformers
from transformers import AutoTokenizer, LxmertConfig, LxmertForQuestionAnswering
from transformers.models.lxmert import modeling_lxmert

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def load_tokenizer(name_or_dir: str):
    """The question tokenizer saved with (or named like) the model."""
    return AutoTokenizer.from_pretrained(name_or_dir)


def load_model(name_or_dir: str, num_answers: int, seed: int,
               answer_table: Optional[Sequence[str]] = None,
               answers: Optional[Sequence[str]] = None,
               log: Callable[[str], None] = lambda line: None) -> LxmertForQuestionAnswering:
    """Pretrained LXMERT with a ``num_answers``-way answer head: the rewind point.

    Without ``answer_table`` the whole head is fresh, seeded by ``seed``. With
    it (the checkpoint's pretraining answers in row order, from
    :func:`read_answer_table`) and ``answers`` (the fine-tuning labels in
    order) the head starts from the checkpoint's: see :func:`lxmert_qa_head`;
    ``seed`` is then unused. Every trial of a seed starts from exactly these weights.
    """
    if answer_table is None:
        model = LxmertForQuestionAnswering.from_pretrained(
            name_or_dir, num_qa_labels=num_answers, ignore_mismatched_sizes=True
        )
        init_answer_head(model, seed)
        return model
    if answers is None or len(answers) != num_answers:
        raise ValueError(f"an answer table needs the {num_answers} fine-tuning answers in label order")
    # The checkpoint's own head size: its QA head arrives whole, then is cut down to the VQA answers.
    model, info = LxmertForQuestionAnswering.from_pretrained(name_or_dir, output_loading_info=True)
    missing = sorted(n for n in info["missing_keys"] if n.startswith("answer_head."))
    if missing:
        raise AnswerTableError(f"{name_or_dir} carries no pretrained answer head ({missing[0]} is missing), so there "
                               f"is nothing to start from — drop model.answer_table for a seeded head")
    found = lxmert_qa_head(model, answer_table, answers)
    log(f"answer head: {found} of {num_answers} answers from the pretraining QA head, {num_answers - found} zero")
    return model


# LXMERT's AnswerTable.ANS_CONVERT (src/pretrain/qa_answer_table.py), looked up after the prefix rules.
ANSWER_CONVERT = {
    "a man": "man", "the man": "man", "a woman": "woman", "the woman": "woman",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
    "grey": "gray",
}


class AnswerTableError(ValueError):
    """An answer table that cannot be read, or does not fit the checkpoint; the message says why."""


def convert_answer(answer: str) -> str:
    """LXMERT's ``AnswerTable.convert_ans``: the form a fine-tuning answer is looked up in the pretraining table.

    Lower-case; drop one trailing ``.``; drop a leading ``a ``, then ``an ``,
    then ``the `` (each once, in that order); then :data:`ANSWER_CONVERT`.
    """
    if not answer:
        return ""
    answer = answer.lower()
    if answer[-1] == ".":
        answer = answer[:-1].strip()
    for article in ("a ", "an ", "the "):
        if answer.startswith(article):
            answer = answer[len(article):].strip()
    return ANSWER_CONVERT.get(answer, answer)


def read_answer_table(path: str | Path) -> list[str]:
    """The pretraining QA head's answers in row order, from a file like LXMERT's ``data/lxmert/all_ans.json``.

    That file is a JSON list of ``{"ans": str, "dsets": [...]}`` objects; row
    i of the checkpoint's head is entry i (LXMERT reads it with no dataset
    filter). A JSON list of plain strings is read the same way. Raises
    :class:`AnswerTableError` naming the file and what is wrong with it.
    """
    try:
        raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnswerTableError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise AnswerTableError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise AnswerTableError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(raw, list) or not raw:
        raise AnswerTableError(f'{path}: expected a non-empty JSON list of {{"ans": "...", "dsets": [...]}} objects')
    answers, seen = [], {}
    for i, item in enumerate(raw):
        answer = item.get("ans") if isinstance(item, dict) else item
        if not isinstance(answer, str):
            raise AnswerTableError(f'{path}: entry {i} is {str(item)[:60]}, not an {{"ans": "..."}} object or a string')
        if answer in seen:  # LXMERT's AnswerTable asserts every answer once: a row index must name one answer
            raise AnswerTableError(f"{path}: answer {answer!r} is listed twice (entries {seen[answer]} and {i})")
        seen[answer] = i
        answers.append(answer)
    return answers


def lxmert_qa_head(model: LxmertForQuestionAnswering, table: Sequence[str], answers: Sequence[str]) -> int:
    """Cut the pretraining QA head (one output row per ``table`` answer) down to ``answers``, as LXMERT does.

    The semantics of ``load_lxmert_qa`` (LXMERT's ``src/pretrain/qa_answer_table.py``):
    ``logit_fc.0`` and ``logit_fc.2`` stay as pretrained; output row (weight
    and bias) ``i`` is the table's row of ``convert_answer(answers[i])`` where
    the table has it, else zero. Returns how many answers were found.
    """
    out = model.answer_head.logit_fc[3]
    if out.out_features != len(table):
        raise AnswerTableError(f"the answer table lists {len(table)} answers but the checkpoint's answer head has "
                               f"{out.out_features} rows — use the table the checkpoint was pretrained with (LXMERT's all_ans.json: 9500)")
    row_of = {answer: row for row, answer in enumerate(table)}
    pairs = [(label, row_of[c]) for label, a in enumerate(answers) if (c := convert_answer(a)) in row_of]
    new = torch.nn.Linear(out.in_features, len(answers), device="meta").to_empty(device=out.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.bias.zero_()
        if pairs:
            labels, rows = (torch.tensor(x, device=out.weight.device) for x in zip(*pairs))
            new.weight[labels] = out.weight[rows]
            new.bias[labels] = out.bias[rows]
    model.answer_head.logit_fc[3] = new
    model.num_qa_labels = model.config.num_qa_labels = len(answers)
    return len(pairs)


def build_tiny(config: dict, num_answers: int, vocab_size: int, visual_feat_dim: int, seed: int) -> LxmertForQuestionAnswering:
    """A randomly initialised LXMERT from ``LxmertConfig`` keyword arguments."""
    cfg = LxmertConfig(
        **{"vocab_size": vocab_size, "visual_feat_dim": visual_feat_dim, "visual_pos_dim": 4, **config},
        num_qa_labels=num_answers,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LxmertForQuestionAnswering(cfg)


def _init_weights(module: torch.nn.Module, std: float, generator: torch.Generator) -> None:
    """BERT-style init (normal(0, std) weights, zero biases, unit LayerNorm) from an explicit generator.

    Written out here because transformers' own ``_init_weights`` skips
    parameters it marks as already initialised by ``from_pretrained``.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
                if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()


def init_answer_head(model: LxmertForQuestionAnswering, seed: int) -> None:
    """Re-initialise the answer head deterministically from ``seed``."""
    _init_weights(model.answer_head, model.config.initializer_range, torch.Generator().manual_seed(seed))


def reinitialize(model: LxmertForQuestionAnswering, seed: int) -> None:
    """Fresh random weights everywhere (the LTH reinitialisation control)."""
    _init_weights(model, model.config.initializer_range, torch.Generator().manual_seed(seed))


# -- attention -----------------------------------------------------------------


class SdpaAttention(modeling_lxmert.LxmertAttention):
    """LXMERT's attention through ``torch.nn.functional.scaled_dot_product_attention``.

    The same function as transformers' eager ``LxmertAttention`` (softmax of the
    scaled scores plus the additive mask, dropout on the probabilities, times the
    values) and the same parameters, so checkpoints and state dicts are
    unchanged; one fused kernel instead of materialising the probabilities
    (memory-efficient attention on GPU; on CPU torch 2.13's softmax over short
    rows is ~20x slower per element than over long ones, docs/PERFORMANCE.md).
    Asked for the probabilities (``output_attentions``), it falls back to the eager code.
    """

    def forward(self, hidden_states, context, attention_mask=None, output_attentions=False):
        if output_attentions:
            return super().forward(hidden_states, context, attention_mask, output_attentions)
        heads, size = self.num_attention_heads, self.attention_head_size
        q = self.query(hidden_states).unflatten(-1, (heads, size)).transpose(1, 2)
        k = self.key(context).unflatten(-1, (heads, size)).transpose(1, 2)
        v = self.value(context).unflatten(-1, (heads, size)).transpose(1, 2)
        if attention_mask is not None:
            attention_mask = attention_mask.to(q.dtype)  # the additive mask follows autocast's dtype
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.dropout.p if self.training else 0.0)
        return (out.transpose(1, 2).flatten(-2),)


def use_sdpa_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every LXMERT attention module of ``model`` to :class:`SdpaAttention`, in place; returns it."""
    for module in model.modules():
        if type(module) is modeling_lxmert.LxmertAttention:
            module.__class__ = SdpaAttention
    return model
