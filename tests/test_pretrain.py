"""The embedded rewind point: LXMERT's pretraining objectives, cached, loaded like a hub checkpoint."""
from __future__ import annotations

import torch
import pytest

from lxsweep import model as lxmodel
from lxsweep import pretrain
from lxsweep.config import PRETRAINING_OBJECTIVES, from_dict
from lxsweep.data.source import load_dataset
from lxsweep.data.synthetic import write_tokenizer
from lxsweep.store import Store

TINY_MODEL = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "l_layers": 1, "x_layers": 1, "r_layers": 1}


def _experiment(tmp_path, objectives=PRETRAINING_OBJECTIVES, steps=8):
    return from_dict({
        "storage": str(tmp_path / "runs"),
        "model": {"config": TINY_MODEL, "pretraining": {"steps": steps, "batch_size": 16, "lr": 1e-3, "objectives": list(objectives)}},
        "data": {"max_tokens": 12, "synthetic": {"train_questions": 60, "valid_questions": 30, "pretrain_questions": 240}},
        "tracking": {"backend": "none"},
    })


@pytest.fixture(scope="module")
def pretraining_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    exp = _experiment(tmp)
    store = Store.for_experiment(exp)
    write_tokenizer(tmp / "tok")
    return exp, store, load_dataset(exp, store, "pretrain"), lxmodel.load_tokenizer(str(tmp / "tok"))


@pytest.mark.parametrize("objective", PRETRAINING_OBJECTIVES)
def test_each_objective_lowers_its_loss(objective, pretraining_data, tmp_path):
    """Trained alone for a few steps on a fixed batch, every objective's own loss goes down."""
    _, _, data, tokenizer = pretraining_data
    exp = _experiment(tmp_path, [objective])
    split = data.train
    config = pretrain.pretraining_config(exp, tokenizer.vocab_size, split.features.shape[-1], data.num_answers,
                                         int(split.object_labels.max()) + 1, int(split.attr_labels.max()) + 1)
    model = pretrain.build_pretraining_model(config, seed=0)
    tokens = pretrain.tokenize(tokenizer, split.questions, exp.data.max_tokens)
    special = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    batches = pretrain.PretrainingBatches(split, tokens, {objective}, 0.3, tokenizer.vocab_size,
                                          tokenizer.convert_tokens_to_ids("[MASK]"), special)
    batch = batches(torch.arange(64), torch.Generator().manual_seed(1))
    model.eval()  # no dropout: the loss of one fixed batch is comparable before and after
    with torch.no_grad():
        before = float(model(**batch).loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(25):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = float(model(**batch).loss)
    assert after < 0.95 * before, f"{objective}: {before:.4f} -> {after:.4f}"


def test_masking_follows_bert_and_lxmert(pretraining_data):
    """Half the rows are masked (only real words and some regions), the other half is left whole for
    matching and answering; mismatched pairs get no answer target."""
    exp, _, data, tokenizer = pretraining_data
    split = data.train
    tokens = pretrain.tokenize(tokenizer, split.questions, exp.data.max_tokens)
    special = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    batches = pretrain.PretrainingBatches(split, tokens, set(PRETRAINING_OBJECTIVES), 0.15, tokenizer.vocab_size,
                                          tokenizer.convert_tokens_to_ids("[MASK]"), special)
    rows = torch.arange(200)
    b = batches(rows, torch.Generator().manual_seed(0))
    masked_half, whole_half = slice(0, 100), slice(100, 200)
    original = tokens["input_ids"][rows]
    chosen = b["labels"] != -100
    assert chosen[masked_half].any() and not chosen[whole_half].any()
    assert not torch.isin(original[chosen], torch.tensor(sorted(special))).any()
    assert torch.equal(b["labels"][chosen], original[chosen])  # the targets are the original words
    words = b["attention_mask"][masked_half].sum() - 2 * 100  # minus [CLS] and [SEP]
    assert 0.05 < chosen[masked_half].sum() / words < 0.3
    regions = b["obj_labels"]["obj"][1].bool()
    assert regions[masked_half].any() and not regions[whole_half].any()
    assert torch.all(b["visual_feats"][regions] == 0) and not torch.all(b["visual_feats"][~regions] == 0)
    matched = b["matched_label"]
    assert torch.all(matched[masked_half] == -100) and 0.3 < matched[whole_half].float().mean() < 0.7
    assert torch.all(b["ans"][masked_half] == -100) and torch.all(b["ans"][whole_half][matched[whole_half] == 0] == -100)
    assert torch.all(b["ans"][whole_half][matched[whole_half] == 1] >= 0)


def test_rewind_point_is_cached_and_loads_like_a_hub_checkpoint(tmp_path):
    exp = _experiment(tmp_path, steps=4)
    store = Store.for_experiment(exp)
    logs: list[str] = []
    path = pretrain.rewind_point(exp, store, log=logs.append)
    assert any("pretrained the rewind point" in line for line in logs)
    assert store.exists(f"{pretrain.pretrained_name(exp)}/config.json")
    assert pretrain.rewind_point(exp, store, log=logs.append) == path and len(logs) == 1  # cached: no second run
    qa = lxmodel.load_model(path, num_answers=7, seed=0)
    from transformers import LxmertForPreTraining

    full = LxmertForPreTraining.from_pretrained(path)
    for name, tensor in qa.lxmert.state_dict().items():
        assert torch.equal(tensor, full.lxmert.state_dict()[name]), name  # every encoder weight is the pretrained one
    assert qa.answer_head.logit_fc[-1].out_features == 7
    # a different recipe is a different rewind point
    other = _experiment(tmp_path, steps=5)
    assert pretrain.pretrained_name(other) != pretrain.pretrained_name(exp)
