"""The rewind point's answer head: seeded, or LXMERT's start from the pretraining QA head (model.answer_table)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LxmertConfig, LxmertForPreTraining

from lxsweep import model as lxmodel
from lxsweep.cli import main
from lxsweep.config import ConfigError, load_experiment

# The pretraining head's answers in row order, as LXMERT's all_ans.json writes them.
TABLE = ["man", "2", "gray", "cat", "red", "yes"]
# Fine-tuning labels: shared ones only after LXMERT's conversion ("a man", "two", "grey", "Red."), two not shared.
ANSWERS = ["yes", "no", "a man", "two", "grey", "cats", "Red."]
EXPECTED_ROW = {0: 5, 2: 0, 3: 1, 4: 2, 6: 4}  # label -> table row; labels 1 and 5 start at zero


def write_table(path: Path, answers: list[str]) -> Path:
    path.write_text(json.dumps([{"ans": a, "dsets": ["vqa"]} for a in answers], indent=4))
    return path


@pytest.fixture(scope="module")
def pretraining_dir(tmp_path_factory) -> Path:
    """A tiny saved LxmertForPreTraining whose QA head has one row per TABLE answer (like the hub checkpoint's 9500)."""
    cfg = LxmertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, l_layers=1, x_layers=1,
                       r_layers=1, vocab_size=30, visual_feat_dim=8, visual_pos_dim=4, num_qa_labels=len(TABLE),
                       num_object_labels=5, num_attr_labels=4)
    torch.manual_seed(0)
    model = LxmertForPreTraining(cfg)
    with torch.no_grad():  # distinct non-zero biases, so a copied row is told apart from a zeroed one
        model.answer_head.logit_fc[3].bias.copy_(torch.arange(1.0, len(TABLE) + 1))
    out = tmp_path_factory.mktemp("pretraining") / "tiny-lxmert-pretraining"
    model.save_pretrained(out)
    return out


def test_convert_answer_follows_lxmert():
    cases = {"The Man.": "man", "a man": "man", "an apple": "apple", "Two": "2", "ten": "10", "grey": "gray",
             "the woman": "woman", "a the cat": "cat", "yes.": "yes", ".": "", "": "", "one dog": "one dog"}
    assert {a: lxmodel.convert_answer(a) for a in cases} == cases


def test_answer_head_starts_from_the_pretraining_qa_head(pretraining_dir):
    pre = LxmertForPreTraining.from_pretrained(pretraining_dir)
    table = lxmodel.read_answer_table(write_table(pretraining_dir.parent / "all_ans.json", TABLE))
    assert table == TABLE
    lines: list[str] = []
    model = lxmodel.load_model(str(pretraining_dir), len(ANSWERS), seed=0, answer_table=table, answers=ANSWERS,
                               log=lines.append)
    head, src = model.answer_head.logit_fc, pre.answer_head.logit_fc
    for i in (0, 2):  # the hidden layer and its LayerNorm as pretrained
        assert torch.equal(head[i].weight, src[i].weight) and torch.equal(head[i].bias, src[i].bias)
    assert head[3].weight.shape == (len(ANSWERS), 32) and model.config.num_qa_labels == len(ANSWERS)
    for label in range(len(ANSWERS)):
        row = EXPECTED_ROW.get(label)
        want_w = src[3].weight[row] if row is not None else torch.zeros(32)
        want_b = src[3].bias[row] if row is not None else torch.tensor(0.0)
        assert torch.equal(head[3].weight[label], want_w) and torch.equal(head[3].bias[label], want_b), ANSWERS[label]
    assert lines == ["answer head: 5 of 7 answers from the pretraining QA head, 2 zero"]
    pre_state = pre.state_dict()
    assert all(torch.equal(t, pre_state[n]) for n, t in model.state_dict().items() if n.startswith("lxmert."))
    # No seed in it: every seed's trials start from the same head, as LXMERT's recipe has it.
    other = lxmodel.load_model(str(pretraining_dir), len(ANSWERS), seed=1, answer_table=table, answers=ANSWERS)
    assert all(torch.equal(t, other.state_dict()[n]) for n, t in model.state_dict().items())
    # Without a table the head is fresh and seeded (the default), the rest of the checkpoint the same.
    seeded = lxmodel.load_model(str(pretraining_dir), len(ANSWERS), seed=0)
    assert not torch.equal(seeded.answer_head.logit_fc[0].weight, src[0].weight)
    assert torch.count_nonzero(seeded.answer_head.logit_fc[3].bias) == 0


def test_a_table_that_does_not_fit_the_checkpoint_is_refused(pretraining_dir, tmp_path):
    with pytest.raises(lxmodel.AnswerTableError, match="lists 5 answers but the checkpoint's answer head has 6 rows"):
        lxmodel.load_model(str(pretraining_dir), len(ANSWERS), 0, answer_table=TABLE[:5], answers=ANSWERS)
    headless = LxmertForPreTraining.from_pretrained(pretraining_dir, task_qa=False)  # pretrained without QA
    assert not any(n.startswith("answer_head.") for n in headless.state_dict())
    headless.save_pretrained(tmp_path / "headless")
    with pytest.raises(lxmodel.AnswerTableError, match="carries no pretrained answer head"):
        lxmodel.load_model(str(tmp_path / "headless"), len(ANSWERS), 0, answer_table=TABLE, answers=ANSWERS)


BAD_TABLES = [
    ("missing", None, "is not a file"),
    ("not json", "[{\"ans\": ", "not valid JSON (line 1"),
    ("not a list", "{\"ans\": \"yes\"}", "expected a non-empty JSON list"),
    ("bad entry", "[{\"ans\": \"yes\"}, {\"answer\": \"no\"}]", "entry 1 is"),
    ("duplicate", "[\"yes\", \"no\", \"yes\"]", "answer 'yes' is listed twice (entries 0 and 2)"),
    ("wrong size", json.dumps(TABLE[:4]), "lists 4 answers but"),
]


@pytest.mark.parametrize("label,text,expected", BAD_TABLES, ids=[b[0] for b in BAD_TABLES])
def test_a_bad_answer_table_is_one_line_before_any_work(tmp_path, capsys, pretraining_dir, label, text, expected):
    table = tmp_path / "all_ans.json"
    if text is not None:
        table.write_text(text)
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(f"name: head\nstorage: {tmp_path / 'runs'}\nmodel:\n  pretrained: {pretraining_dir}\n"
                        f"  answer_table: all_ans.json\ntracking:\n  backend: none\n")  # relative: next to the file
    assert main(["plan", str(exp_file)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"lxsweep: error: {exp_file}: model.answer_table: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no store made


def test_a_good_answer_table_passes_the_checks(tmp_path, capsys, pretraining_dir):
    write_table(tmp_path / "all_ans.json", TABLE)
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(f"name: head\nstorage: {tmp_path / 'runs'}\nmodel:\n  pretrained: {pretraining_dir}\n"
                        f"  answer_table: all_ans.json\ntracking:\n  backend: none\n")
    assert main(["plan", str(exp_file)]) == 0
    assert (f"checked: answer table {tmp_path / 'all_ans.json'}: 6 answers, one per row of {pretraining_dir}'s "
            f"answer head") in capsys.readouterr().out


def test_every_trial_starts_its_head_from_the_table(tmp_path, smoke_file, tiny_overrides):
    """Wired into the trial: the embedded rewind point's QA head, its rows permuted by the table, for dense and a
    pruned trial alike."""
    from lxsweep.data.source import load_dataset
    from lxsweep.plan import TrialKey
    from lxsweep.pretrain import rewind_point
    from lxsweep.store import Store
    from lxsweep.trial import initial_model

    base = load_experiment(smoke_file, tiny_overrides)
    store = Store.for_experiment(base)
    answers = load_dataset(base, store).answers
    pre = LxmertForPreTraining.from_pretrained(rewind_point(base, store, log=lambda s: None))
    table = write_table(tmp_path / "all_ans.json", answers[::-1])  # row r of the head = answer n-1-r
    exp = load_experiment(smoke_file, [*tiny_overrides, f"model.answer_table={table}"])
    assert exp.hash != base.hash and exp.model.answer_table == str(table)
    assert Store.for_experiment(exp).root != store.root
    n, src = len(answers), pre.answer_head.logit_fc[3]
    for trial in ("dense-L0-s0", "random-L1-s0"):
        model, _, _ = initial_model(exp, TrialKey.parse(trial), store, n, log=lambda s: None, answers=answers)
        assert torch.equal(model.answer_head.logit_fc[3].weight, src.weight.flip(0)), trial
        assert torch.equal(model.answer_head.logit_fc[3].bias, src.bias.flip(0)), trial
    with pytest.raises(ValueError, match="needs the .* fine-tuning answers"):
        initial_model(exp, TrialKey.parse("dense-L0-s0"), store, n, log=lambda s: None)
    with pytest.raises(ConfigError, match="model.answer_table: 's3://b/x' is not a file path"):
        load_experiment(smoke_file, [*tiny_overrides, "model.answer_table=s3://b/x"])
