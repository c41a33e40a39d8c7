"""Kept weights, exported tickets, reproductions: what a user takes away from a finished sweep."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lxsweep import pruning
from lxsweep.config import load_experiment
from lxsweep.plan import TrialKey, keeps_weights
from lxsweep.store import Store, mask_path, metrics_path, weights_path
from lxsweep.trial import run_trial

K = TrialKey.parse
QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, request):
    """A small finished sweep: the dense trial and the first ticket, weights kept (the default)."""
    from conftest import ROOT, TINY

    tmp = tmp_path_factory.mktemp("sweep")
    exp = load_experiment(ROOT / "experiments" / "smoke.yaml", [*TINY, f"storage={tmp / 'runs'}"])
    store = Store.for_experiment(exp)
    from lxsweep.config import write_experiment

    write_experiment(store, exp)
    for name in ("dense-L0-s0", "low-L1-s0"):
        run_trial(exp, K(name), store, **QUIET)
    return exp, store


def test_trained_weights_are_kept_compact_with_pruned_entries_zero(sweep):
    exp, store = sweep
    metrics = store.read_json(metrics_path("low-L1-s0"))
    info = metrics["weights"]
    assert info["path"] == weights_path("low-L1-s0") and info["dtype"] == "float16"
    state = load_file(store.path(info["path"]))
    assert all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    mask = pruning.load_mask(store.path(mask_path("low-L1-s0")))
    removed = sum(int((~m).sum()) for m in mask.values())
    for name, m in mask.items():
        assert torch.count_nonzero(state[name][~m]) == 0, name
    assert info["zeros"] >= removed and info["zeros"] - removed < 1e-4 * removed + 2  # fp16 underflow aside
    assert info["bytes"] == Path(store.path(info["path"])).stat().st_size
    total = sum(t.numel() for t in state.values())
    assert info["bytes"] < 2.1 * total + 100_000  # two bytes a weight plus the header


def test_keep_weights_selects_trials_without_changing_the_hash(smoke_file, tiny_overrides):
    base = load_experiment(smoke_file, tiny_overrides)
    tickets = load_experiment(smoke_file, [*tiny_overrides, "training.keep_weights=tickets"])
    none = load_experiment(smoke_file, [*tiny_overrides, "training.keep_weights=none", "training.weights_dtype=bfloat16"])
    assert base.hash == tickets.hash == none.hash
    assert [keeps_weights(tickets, K(n)) for n in ("dense-L0-s0", "low-L2-s0", "high-L1-s0", "random-L1-s0")] \
        == [True, True, False, False]
    assert all(keeps_weights(base, K(n)) for n in ("high-L1-s0", "random-L1-s0"))
    assert not keeps_weights(none, K("dense-L0-s0"))
    store = Store.for_experiment(tickets)
    metrics = run_trial(tickets, K("random-L1-s0"), store, **QUIET)
    assert metrics["weights"] is None and not store.exists(weights_path("random-L1-s0"))


# A fresh interpreter with transformers only: the exported directory must stand on its own.
SCORE_WITHOUT_LXSWEEP = r"""
import json, sys
import numpy as np, torch
from transformers import AutoTokenizer, LxmertForQuestionAnswering
torch.set_num_threads(1)
out, inputs = sys.argv[1], np.load(sys.argv[2])
spec = json.loads(open(sys.argv[3]).read())
model = LxmertForQuestionAnswering.from_pretrained(out).eval()
tok = AutoTokenizer.from_pretrained(out)
enc = tok(spec["questions"], padding="max_length", truncation=True, max_length=model.config.lxsweep["max_tokens"],
          return_tensors="pt")
feats, boxes, image = (torch.from_numpy(inputs[k]) for k in ("features", "boxes", "image_index"))
answers = []
with torch.no_grad():
    for s in range(0, len(spec["questions"]), spec["batch"]):
        rows = slice(s, s + spec["batch"])
        logits = model(input_ids=enc["input_ids"][rows], attention_mask=enc["attention_mask"][rows],
                       token_type_ids=enc["token_type_ids"][rows], visual_feats=feats[image[rows]].float(),
                       visual_pos=boxes[image[rows]].float()).question_answering_score
        answers += [model.config.id2label[int(i)] for i in logits.argmax(-1)]
params = dict(model.named_parameters())
zeros = sum(int((params[n] == 0).sum()) for n in spec["prunable"])
print(json.dumps({"answers": answers, "zeros": zeros, "lxsweep_imported": "lxsweep" in sys.modules}))
"""


def test_export_loads_without_lxsweep_and_scores_the_recorded_accuracy(sweep, tmp_path, capsys):
    import numpy as np

    from lxsweep.cli import main
    from lxsweep.data.source import load_dataset
    from lxsweep.export import load_sparse
    from lxsweep.train import evaluation_metrics

    exp, store = sweep
    out = tmp_path / "ticket"
    assert main(["export", store.root, "--trial", "low-L1-s0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "size on disk: dense model.safetensors" in printed and "sparse sparse.safetensors" in printed
    metrics = store.read_json(metrics_path("low-L1-s0"))
    valid = load_dataset(exp, store).valid
    np.savez(tmp_path / "inputs.npz", features=np.asarray(valid.features, dtype=np.float32),
             boxes=np.asarray(valid.boxes, dtype=np.float32), image_index=valid.image_index)
    stored = load_file(store.path(weights_path("low-L1-s0")))
    spec = {"questions": valid.questions, "batch": exp.training.eval_batch_size,
            "prunable": pruning.prunable_names(stored, exp.pruning.scope)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-c", SCORE_WITHOUT_LXSWEEP, str(out), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "spec.json")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["lxsweep_imported"]
    scored = evaluation_metrics(valid, np.arange(len(valid)), result["answers"])
    assert scored["accuracy"] == metrics["accuracy"]
    assert result["zeros"] == metrics["weights"]["zeros"]
    mask = pruning.load_mask(store.path(mask_path("low-L1-s0")))
    assert result["zeros"] >= sum(int((~m).sum()) for m in mask.values())
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["0"] == load_dataset(exp, store).answers[0] and len(config["label2id"]) == config["num_qa_labels"]
    assert config["lxsweep"]["provenance"]["mask"]["from"] == "dense-L0-s0"
    assert config["lxsweep"]["metrics"]["accuracy"] == metrics["accuracy"]
    card = (out / "README.md").read_text()
    assert "dense-L0-s0 → low-L1-s0" in card and f"{metrics['accuracy']:.4f}" in card
    # The sparse form: smaller than the dense file, and back to the kept weights bit for bit.
    dense = load_sparse(out / "sparse.safetensors")
    assert dense.keys() == stored.keys()
    bits = lambda t: t.view(torch.uint8) if t.is_floating_point() else t  # -0.0 and +0.0 differ here
    for name, t in stored.items():
        assert dense[name].dtype == t.dtype and torch.equal(bits(dense[name]), bits(t)), name
    assert (out / "sparse.safetensors").stat().st_size < (out / "model.safetensors").stat().st_size


LOGITS_WITHOUT_LXSWEEP = r"""
import json, sys
import torch
from transformers import AutoModelForQuestionAnswering
torch.set_num_threads(1)
model = AutoModelForQuestionAnswering.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
inputs = torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(**inputs).question_answering_score
torch.save(logits, sys.argv[3])
print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "class": type(model).__name__,
                  "lxsweep_imported": any(m == "lxsweep" or m.startswith("lxsweep.") for m in sys.modules)}))
"""


def test_a_structured_ticket_exports_physically_smaller_with_the_same_logits(sweep, tmp_path, capsys):
    from lxsweep.cli import main
    from lxsweep.export import trial_model

    exp, store = sweep
    run_trial(exp, K("structured-L1-s0"), store, **QUIET)  # its mask rebuilt from dense-L0-s0's kept weights
    mask = pruning.load_mask(store.path(mask_path("structured-L1-s0")))
    out = tmp_path / "shrunk"
    assert main(["export", store.root, "--trial", "structured-L1-s0", "--out", str(out), "--shrink"]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    masked = trial_model(store, "structured-L1-s0", log=lambda s: None).model
    g = torch.Generator().manual_seed(0)
    n, t, boxes = 5, exp.data.max_tokens, exp.data.synthetic.num_boxes
    inputs = {"input_ids": torch.randint(0, masked.config.vocab_size, (n, t), generator=g),
              "attention_mask": torch.ones(n, t, dtype=torch.long), "token_type_ids": torch.zeros(n, t, dtype=torch.long),
              "visual_feats": torch.randn(n, boxes, masked.config.visual_feat_dim, generator=g),
              "visual_pos": torch.rand(n, boxes, 4, generator=g)}
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = masked(**inputs).question_answering_score
    proc = subprocess.run([sys.executable, "-c", LOGITS_WITHOUT_LXSWEEP, str(out), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "logits.pt")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not loaded["lxsweep_imported"] and loaded["class"] == "LxmertShrunkForQuestionAnswering"
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), expected, atol=1e-5, rtol=0)
    config = json.loads((out / "config.json").read_text())
    removed = config["lxsweep"]["shrunk"]
    assert removed["heads_removed"] > 0 and removed["neurons_removed"] > 0
    head = masked.config.hidden_size // masked.config.num_attention_heads
    gone = 4 * head * masked.config.hidden_size * removed["heads_removed"] + 2 * masked.config.hidden_size * removed["neurons_removed"]
    assert loaded["parameters"] == sum(p.numel() for p in masked.parameters()) - gone - (
        3 * head * removed["heads_removed"] + removed["neurons_removed"])  # and their biases
    assert sum(int((~m).sum()) for m in mask.values()) >= gone  # the rest of what the mask removed stays as zeros
    # An unstructured ticket removes no whole unit: one line, nothing written.
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "export", store.root, "--trial", "low-L1-s0",
                           "--out", str(tmp_path / "not-structured"), "--shrink"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "removes no whole attention head or feed-forward neuron" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "not-structured").exists()


def test_latency_times_each_ticket_as_deployed_and_the_report_draws_it(sweep, tmp_path, capsys):
    from lxsweep.cli import main
    from lxsweep.report import LATENCY_FIGURE, write_report

    exp, store = sweep
    if not store.exists(metrics_path("structured-L1-s0")):
        run_trial(exp, K("structured-L1-s0"), store, **QUIET)
    assert main(["latency", store.root, "--batch", "4", "--reps", "3"]) == 0
    assert "structured-L1-s0:" in capsys.readouterr().out
    (entry,) = store.read_json("latency.json").values()
    assert entry["batch"] == 4 and entry["device_type"] == "cpu"
    timed = entry["trials"]
    assert {"dense-L0-s0", "low-L1-s0", "structured-L1-s0"} <= set(timed)
    assert timed["low-L1-s0"]["form"] == "masked" and timed["structured-L1-s0"]["form"] == "shrunk"
    assert timed["structured-L1-s0"]["parameters"] < timed["low-L1-s0"]["parameters"] == timed["dense-L0-s0"]["parameters"]
    assert all(t["ms"] > 0 and t["vs_dense"] > 0 for t in timed.values())
    written = write_report(store, out=tmp_path / "report")
    assert str(tmp_path / "report" / LATENCY_FIGURE) in written
    # A damaged latency.json costs only its figure, with a warning naming it; nothing rewrites it.
    Path(store.path("latency.json")).write_text("{")
    capsys.readouterr()
    written = write_report(store, out=tmp_path / "again")
    assert not any(w.endswith(LATENCY_FIGURE) for w in written) and any(w.endswith("results.md") for w in written)
    assert f"skipped {store.path('latency.json')}" in capsys.readouterr().err
    assert Path(store.path("latency.json")).read_text() == "{"
    Path(store.path("latency.json")).unlink()


def test_export_errors_are_one_line(sweep, tmp_path):
    exp, store = sweep
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "export", store.root, "--trial", "low-L3-s0",
                           "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no finished trial 'low-L3-s0'" in proc.stderr and "low-L1-s0" in proc.stderr
    assert "Traceback" not in proc.stderr


def _files(root: Path, sweep_only: bool = False) -> dict[str, bytes]:
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return {k: v for k, v in files.items() if not k.startswith("reproductions/")} if sweep_only else files


def test_trial_on_a_finished_trial_reproduces_it_beside_the_sweep_and_compares(sweep, tmp_path, capsys):
    import shutil

    from conftest import ROOT, TINY
    from lxsweep.cli import main

    exp, store = sweep
    copy = tmp_path / "copy" / Path(store.root).name
    shutil.copytree(store.root, copy)
    before = _files(copy)
    args = ["trial", str(ROOT / "experiments" / "smoke.yaml"), "--level", "1", "--subnetwork", "low", "--seed", "0",
            *[a for o in [*TINY, f"storage={copy.parent}"] for a in ("--set", o)], "--check"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reproduced low-L1-s0: matches the sweep (metrics and weight digest identical)" in out
    after = _files(copy)
    (stamp,) = Store(str(copy)).listdir("reproductions/low-L1-s0")
    area = f"reproductions/low-L1-s0/{stamp}/"
    assert _files(copy, sweep_only=True) == before  # the sweep's own files, byte for byte
    assert f"{area}trials/low-L1-s0/metrics.json" in after and f"{area}weights/low-L1-s0.safetensors" in after
    again, swept = (pruning.load_mask(copy / d / "masks/low-L2-s0.safetensors") for d in (area, ""))
    assert all(torch.equal(again[n], swept[n]) for n in swept)  # the same child mask, in the reproduction area

    recorded = json.loads(before["trials/low-L1-s0/metrics.json"])
    (copy / "trials/low-L1-s0/metrics.json").write_text(json.dumps({**recorded, "accuracy_yesno": 0.123}))
    altered = _files(copy, sweep_only=True)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "reproduced low-L1-s0: DIFFERS from the sweep in 1 value(s):" in out
    assert f"accuracy_yesno: recorded 0.123, reproduced {recorded['accuracy_yesno']!r}" in out
    assert main(args[:-1]) == 0  # without --check a mismatch is reported, not an error
    assert _files(copy, sweep_only=True) == altered
    assert len(Store(str(copy)).listdir("reproductions/low-L1-s0")) == 3  # one area per reproduction


def test_predictions_for_a_questions_only_split_score_the_recorded_accuracy(sweep, tmp_path, capsys):
    from lxsweep.cli import main
    from lxsweep.data.prepared import read_manifest
    from lxsweep.data.synth import write_synthetic
    from lxsweep.metric import evaluate_files

    exp, store = sweep
    files = write_synthetic(exp.data.synthetic, tmp_path / "files")
    questions, annotations = files.splits["valid"]
    assert main(["prepare-vqa", "--out", str(tmp_path / "test"), "--test-split", "valid", str(questions),
                 "--features", *map(str, files.features), "--ans2label", str(files.ans2label),
                 "--num-boxes", str(files.num_boxes)]) == 0
    assert read_manifest(tmp_path / "test")["splits"]["valid"]["annotated"] is False
    results = tmp_path / "results.json"
    assert main(["predict", store.root, "--trial", "low-L1-s0", "--data", str(tmp_path / "test"), "--split", "valid",
                 "--out", str(results)]) == 0
    predictions = json.loads(results.read_text())
    asked = [q["question_id"] for q in json.loads(Path(questions).read_text())["questions"]]
    assert [p["question_id"] for p in predictions] == asked and all(isinstance(p["answer"], str) for p in predictions)
    # With the annotations the server keeps, the official metric gives the accuracy the trial recorded.
    recorded = store.read_json(metrics_path("low-L1-s0"))
    assert evaluate_files(questions, annotations, results)["overall"] == pytest.approx(recorded["accuracy"], abs=1e-12)
    # The exported directory answers the same.
    assert main(["export", store.root, "--trial", "low-L1-s0", "--out", str(tmp_path / "ticket")]) == 0
    assert main(["predict", "--model", str(tmp_path / "ticket"), "--data", str(tmp_path / "test"), "--split", "valid",
                 "--out", str(tmp_path / "exported.json")]) == 0
    assert json.loads((tmp_path / "exported.json").read_text()) == predictions
    capsys.readouterr()
    assert main(["predict", store.root, "--trial", "low-L1-s0", "--split", "nosuch", "--out", str(results)]) == 2
    assert "no split 'nosuch'" in capsys.readouterr().err
