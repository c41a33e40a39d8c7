"""LXMERT for VQA: loading the rewind point, seeding the answer head, re-initialising.

The real path and the tiny path are the same code: a model directory (a hub
name such as ``unc-nlp/lxmert-base-uncased`` or a local ``save_pretrained``
directory) is loaded with ``from_pretrained``; the answer head is sized to the
answer vocabulary and initialised from the trial's seed.
"""
from __future__ import annotations


import torch
import transformers
from transformers import AutoTokenizer, LxmertConfig, LxmertForQuestionAnswering

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def load_tokenizer(name_or_dir: str):
    """The question tokenizer saved with (or named like) the model."""
    return AutoTokenizer.from_pretrained(name_or_dir)


def load_model(name_or_dir: str, num_answers: int, seed: int) -> LxmertForQuestionAnswering:
    """Pretrained LXMERT with a fresh ``num_answers``-way answer head seeded by ``seed``.

    Every trial of a seed starts from exactly these weights (the rewind point).
    """
    model = LxmertForQuestionAnswering.from_pretrained(
        name_or_dir, num_qa_labels=num_answers, ignore_mismatched_sizes=True
    )
    init_answer_head(model, seed)
    return model


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
