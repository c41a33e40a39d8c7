"""One trial end to end on one machine: masks enforced, deterministic, real formats, controls."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lxsweep import pruning
from lxsweep.config import load_experiment
from lxsweep.data.source import load_dataset
from lxsweep.plan import TrialKey
from lxsweep.store import Store, mask_path
from lxsweep.train import Fit, runtime
from lxsweep.trial import initial_model, run_trial

K = TrialKey.parse


def _load_mask(store: Store, name: str) -> pruning.Mask:
    return pruning.load_mask(store.path(mask_path(name)))


def assert_exact(mask: pruning.Mask, target: float) -> None:
    total = sum(m.numel() for m in mask.values())
    removed = total - sum(int(m.sum()) for m in mask.values())
    assert removed == pruning.removed_count(target, total)


@pytest.fixture
def exp(smoke_file, tiny_overrides):
    return load_experiment(smoke_file, tiny_overrides)


def test_pruned_weights_stay_exactly_zero_with_adamw_weight_decay(exp):
    store = Store.for_experiment(exp)
    data = load_dataset(exp, store)
    model, tok, _ = initial_model(exp, K("dense-L0-s0"), store, data.num_answers, log=lambda s: None)
    params = pruning.prunable_parameters(model, exp.pruning.scope)
    mask = pruning.random_mask({n: p.shape for n, p in params.items()}, 0.5, seed=0, level=1)
    assert exp.training.weight_decay > 0
    key = K("random-L1-s0")
    fit = Fit(exp, runtime(exp), model, mask, data, tok, epochs=1, name=key.name,
              shuffle_seed=lambda epoch: key.seed_for(f"data{epoch}"))
    fit.run(log=lambda s: None)
    for name, p in pruning.prunable_parameters(fit.model, exp.pruning.scope).items():
        assert torch.count_nonzero(p.detach()[~mask[name]]) == 0, name
        assert torch.count_nonzero(p.detach()[mask[name]]) > 0.99 * int(mask[name].sum()), name
    assert fit.history[-1]["sparsity"] >= 0.5


def test_chain_writes_nested_masks_and_metrics(exp):
    store = Store.for_experiment(exp)
    dense = run_trial(exp, K("dense-L0-s0"), store, log=lambda s: None)
    assert dense["child_masks"] == ["low-L1-s0", "high-L1-s0"]
    low1 = run_trial(exp, K("low-L1-s0"), store, log=lambda s: None)
    m1, m2 = _load_mask(store, "low-L1-s0"), _load_mask(store, "low-L2-s0")
    for name in m1:
        assert not (m2[name] & ~m1[name]).any(), f"low(2) keeps a weight low(1) pruned in {name}"
    assert_exact(m1, exp.sparsity(1))
    assert_exact(m2, exp.sparsity(2))
    assert low1["sparsity"] == pytest.approx(exp.sparsity(1), abs=1e-4)
    assert 0 < low1["sparsity_all"] < low1["sparsity"]  # embeddings and the head are never pruned
    on_disk = json.loads(Path(store.path("trials/low-L1-s0/metrics.json")).read_text())
    assert on_disk["accuracy"] == low1["accuracy"] and len(on_disk["history"]) == exp.training.epochs
    for key in ("accuracy_yesno", "accuracy_number", "accuracy_other", "accuracy_count", "accuracy_spatial"):
        assert 0.0 <= on_disk[key] <= 1.0  # per answer type and per question kind


def test_same_trial_twice_is_identical(exp, tmp_path):
    a = run_trial(exp, K("dense-L0-s0"), Store(str(tmp_path / "a")), log=lambda s: None)
    b = run_trial(exp, K("dense-L0-s0"), Store(str(tmp_path / "b")), log=lambda s: None)
    strip = lambda m: {k: v for k, v in m.items() if "_at" not in k and k not in ("duration_s", "timeline")}  # times
    ha = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in a["history"]]
    hb = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in b["history"]]
    assert ha == hb
    assert strip({**a, "history": None}) == strip({**b, "history": None})


def test_reinit_uses_the_ticket_mask_with_fresh_weights(smoke_file, tiny_overrides):
    exp = load_experiment(smoke_file, [*tiny_overrides, "pruning.subnetworks=[low, reinit]"])
    store = Store.for_experiment(exp)
    run_trial(exp, K("dense-L0-s0"), store, log=lambda s: None)
    n = load_dataset(exp, store).num_answers
    low, _, low_mask = initial_model(exp, K("low-L1-s0"), store, n, log=lambda s: None)
    re_, _, re_mask = initial_model(exp, K("reinit-L1-s0"), store, n, log=lambda s: None)
    assert low_mask.keys() == re_mask.keys() and all(torch.equal(low_mask[k], re_mask[k]) for k in low_mask)
    lw, rw = dict(low.named_parameters()), dict(re_.named_parameters())
    name = next(iter(low_mask))
    assert not torch.allclose(lw[name], rw[name])  # not the rewind point
    assert not torch.allclose(lw["lxmert.embeddings.word_embeddings.weight"], rw["lxmert.embeddings.word_embeddings.weight"])
    metrics = run_trial(exp, K("reinit-L1-s0"), store, log=lambda s: None)
    assert metrics["sparsity"] == pytest.approx(exp.sparsity(1), abs=1e-4)


def test_scratch_trains_the_dense_model_from_fresh_weights(smoke_file, tiny_overrides):
    exp = load_experiment(smoke_file, [*tiny_overrides, "pruning.subnetworks=[scratch]", "rewind.to=step", "rewind.step=3"])
    store = Store.for_experiment(exp)
    n = load_dataset(exp, store).num_answers
    dense, _, _ = initial_model(exp, K("dense-L0-s0"), store, n, log=lambda s: None)
    scratch, _, mask = initial_model(exp, K("scratch-L0-s0"), store, n, log=lambda s: None)
    assert mask is None
    d, s = dict(dense.named_parameters()), dict(scratch.named_parameters())
    same = [name for name, p in d.items() if p.ndim == 2 and torch.equal(p, s[name])]  # every matrix is fresh
    assert not same, same
    metrics = run_trial(exp, K("scratch-L0-s0"), store, log=lambda s: None)
    assert metrics["sparsity"] == 0.0 and metrics["child_masks"] == [] and metrics["level"] == 0
    assert not store.exists("rewind/dense-s0-step3.safetensors")  # only the dense trial writes the rewind point


def test_oneshot_masks_come_from_the_dense_weights(smoke_file, tiny_overrides):
    exp = load_experiment(smoke_file, [*tiny_overrides, "pruning.schedule=oneshot", "pruning.subnetworks=[low]"])
    store = Store.for_experiment(exp)
    dense = run_trial(exp, K("dense-L0-s0"), store, log=lambda s: None)
    assert dense["child_masks"] == [f"low-L{k}-s0" for k in (1, 2, 3)]
    masks = [_load_mask(store, f"low-L{k}-s0") for k in (1, 2, 3)]
    for k, m in enumerate(masks, start=1):
        assert_exact(m, exp.sparsity(k))
        meta = pruning.read_mask_metadata(store.path(mask_path(f"low-L{k}-s0")))
        assert json.loads(meta["from"]) == "dense-L0-s0"
    # One threshold family over the same weights: deeper levels are nested in shallower ones.
    for name in masks[0]:
        assert not (masks[2][name] & ~masks[0][name]).any()
    low3 = run_trial(exp, K("low-L3-s0"), store, log=lambda s: None)  # needs no low-L2 trial
    assert low3["sparsity"] == pytest.approx(exp.sparsity(3), abs=1e-4)


def test_rewind_to_a_step_of_the_dense_run(smoke_file, tiny_overrides):
    exp = load_experiment(smoke_file, [*tiny_overrides, "rewind.to=step", "rewind.step=5"])
    store = Store.for_experiment(exp)
    run_trial(exp, K("dense-L0-s0"), store, log=lambda s: None)
    assert store.exists("rewind/dense-s0-step5.safetensors")
    from safetensors.torch import load_file

    saved = load_file(store.path("rewind/dense-s0-step5.safetensors"))
    n = load_dataset(exp, store).num_answers
    model, _, mask = initial_model(exp, K("random-L1-s0"), store, n, log=lambda s: None)
    assert mask  # the rewound weights are masked when training starts (MaskEnforcer)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), saved[name]), name


def test_scope_ablation_leaves_other_groups_dense(smoke_file, tiny_overrides):
    exp = load_experiment(smoke_file, [*tiny_overrides, "pruning.scope=[language]", "pruning.subnetworks=[random]"])
    store = Store.for_experiment(exp)
    run_trial(exp, K("random-L2-s0"), store, log=lambda s: None)
    mask = _load_mask(store, "random-L2-s0")
    assert mask and all(n.startswith("lxmert.encoder.layer.") for n in mask)
    assert_exact(mask, exp.sparsity(2))


def test_real_formats_prepare_vqa_and_saved_model(tmp_path):
    """Official JSON + LXMERT's TSV -> prepare-vqa -> a trial on a save_pretrained tiny LXMERT loaded by path."""
    from transformers import BertTokenizer, LxmertConfig, LxmertForQuestionAnswering

    from lxsweep.cli import main
    from vqa_fixture import write_vqa_fixture

    files = write_vqa_fixture(tmp_path / "raw", num_images=8, questions_per_image=4, feat_dim=2048)
    rc = main(["prepare-vqa", "--out", str(tmp_path / "vqa"),
               "--split", "train", str(files["train_questions"]), str(files["train_annotations"]),
               "--split", "minival", str(files["minival_questions"]), str(files["minival_annotations"]),
               "--features", str(files["features"]), "--ans2label", str(files["ans2label"])])
    assert rc == 0
    words = set()
    for split in ("train", "minival"):
        for q in json.loads(Path(files[f"{split}_questions"]).read_text())["questions"]:
            words.update(re.findall(r"\w+|[^\w\s]", q["question"].lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    cfg = LxmertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, l_layers=1, x_layers=1,
                       r_layers=1, visual_feat_dim=2048, vocab_size=len(vocab), num_qa_labels=5)
    model_dir = tmp_path / "tiny-lxmert"
    LxmertForQuestionAnswering(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    exp_file = tmp_path / "vqa.yaml"
    exp_file.write_text(
        f"name: vqa-test\nstorage: {tmp_path / 'runs'}\nmodel:\n  pretrained: {model_dir}\n"
        f"data:\n  source: vqa\n  path: {tmp_path / 'vqa'}\n  valid_split: minival\n"
        "training:\n  epochs: 1\n  batch_size: 4\npruning:\n  levels: 1\ntracking:\n  backend: none\n")
    exp = load_experiment(exp_file)
    store = Store.for_experiment(exp)
    dense = run_trial(exp, K("dense-L0-s0"), store, log=lambda s: None)
    low = run_trial(exp, K("low-L1-s0"), store, log=lambda s: None)
    assert 0.0 <= dense["accuracy"] <= 1.0 and {"accuracy_yesno", "accuracy_number", "accuracy_other"} <= set(dense)
    assert_exact(_load_mask(store, "low-L1-s0"), 0.1)
    assert low["sparsity"] == pytest.approx(0.1, abs=1e-4)
    assert not any(k.startswith("accuracy_kind") for k in dense)


def test_trial_command_runs_the_missing_chain_prefix(smoke_file, tiny_overrides):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "trial", str(smoke_file), "--level", "2",
                           "--subnetwork", "low", "--seed", "0", *sets], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "running it first: dense-L0-s0, low-L1-s0" in out
    assert re.search(r"result low-L2-s0: accuracy 0\.\d+", out)
    assert "metrics:" in out
    bad = subprocess.run([sys.executable, "-m", "lxsweep.cli", "trial", str(smoke_file), "--level", "9",
                          "--subnetwork", "low", "--seed", "0", *sets], capture_output=True, text=True)
    assert bad.returncode == 2 and "level 9 is outside 0..3" in bad.stderr and "Traceback" not in bad.stderr


def test_raising_levels_continues_a_finished_chain(smoke_file, tiny_overrides):
    """A chain's last trial writes its next mask, so `pruning.levels` can be raised after the sweep ends;
    a store that lacks that mask (made before) rebuilds it from the parent's kept weights."""
    one = load_experiment(smoke_file, [*tiny_overrides, "pruning.levels=1", "pruning.subnetworks=[low]"])
    two = load_experiment(smoke_file, [*tiny_overrides, "pruning.levels=2", "pruning.subnetworks=[low]"])
    assert one.hash == two.hash  # levels select trials; they do not change any trial's result
    store = Store.for_experiment(one)
    run_trial(one, K("dense-L0-s0"), store, log=lambda s: None)
    low1 = run_trial(one, K("low-L1-s0"), store, log=lambda s: None)
    assert low1["child_masks"] == ["low-L2-s0"]
    written = _load_mask(store, "low-L2-s0")
    assert_exact(written, two.sparsity(2))

    Path(store.path(mask_path("low-L2-s0"))).unlink()  # as in a store from before the change
    low2 = run_trial(two, K("low-L2-s0"), store, log=lambda s: None)
    rebuilt = _load_mask(store, "low-L2-s0")
    assert_exact(rebuilt, two.sparsity(2))
    same = sum(int((rebuilt[n] == written[n]).sum()) for n in written)
    assert same >= 0.999 * sum(m.numel() for m in written.values())  # float16 ranking may break a tie differently
    assert low2["sparsity"] == pytest.approx(two.sparsity(2), abs=1e-4)


def test_probe_trains_only_a_fresh_head_and_a_test_split_gives_the_reported_numbers(smoke_file, tiny_overrides):
    from safetensors.torch import load_file

    from lxsweep.store import weights_path

    exp = load_experiment(smoke_file, [*tiny_overrides, "pruning.subnetworks=[probe]", "training.probe_steps=5",
                                       "data.synthetic.test_questions=50"])
    store = Store.for_experiment(exp)
    data = load_dataset(exp, store)
    start, _, mask = initial_model(exp, K("probe-L0-s0"), store, data.num_answers, log=lambda s: None)
    assert mask is None
    metrics = run_trial(exp, K("probe-L0-s0"), store, log=lambda s: None)
    assert metrics["steps"] == 5 and metrics["epochs"] == 1  # stops after probe_steps, inside the first epoch
    assert metrics["evaluated_on"] == "test" and metrics["evaluated_questions"] == 50
    assert set(metrics["valid"]) == {k for k in metrics["history"][-1] if k.startswith("accuracy")}
    trained = load_file(store.path(weights_path("probe-L0-s0")))
    before = {n: p.detach().to(trained[n].dtype) for n, p in start.state_dict().items() if n in trained}
    changed = sorted(n for n in before if not torch.equal(before[n], trained[n]))
    assert changed and all(n.startswith("answer_head.") for n in changed), changed  # the encoder stayed frozen
    dense = run_trial(exp, K("dense-L0-s0"), store, log=lambda s: None)
    assert dense["steps"] == exp.training.epochs * -(-len(data.train) // exp.training.batch_size)
