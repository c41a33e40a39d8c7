"""Experiment files: defaults, overrides, the hash, and one clear error line per mistake."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lxsweep.config import ConfigError, from_dict, load_experiment

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_experiments_load_and_plan():
    from lxsweep.plan import Plan

    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert {f.stem for f in files} >= {"smoke", "paper", "demo", "oneshot", "reinit", "rewind-step", "ablation-scope"}
    for path in files:
        exp = load_experiment(path, check=path.stem != "paper")  # paper's data lives on the cluster
        assert Plan(exp).fine_tunes >= 1 + exp.num_levels
    paper = load_experiment(ROOT / "experiments" / "paper.yaml", check=False)
    assert paper.model.pretrained == "unc-nlp/lxmert-base-uncased" and paper.data.source == "vqa"
    assert (paper.pruning.rate, paper.pruning.levels, paper.seeds) == (0.1, 10, [0, 1, 2])
    t = paper.training
    assert (t.batch_size, t.lr, t.epochs, t.warmup, t.weight_decay, t.grad_clip) == (32, 5e-5, 4, 0.1, 0.01, 5.0)
    assert paper.data.max_tokens == 20 and paper.pruning.subnetworks == ["low", "high", "random"]
    assert load_experiment(ROOT / "experiments" / "reinit.yaml").hash == load_experiment(ROOT / "experiments" / "demo.yaml").hash


def test_defaults_and_overrides(smoke_file):
    exp = load_experiment(smoke_file, ["training.epochs=7", "pruning.subnetworks=[low, random]", "storage=/tmp/x"])
    assert exp.training.epochs == 7
    assert exp.pruning.subnetworks == ["low", "random"]
    assert exp.storage == "/tmp/x"
    assert exp.training.weight_decay == 0.01  # a default the file does not name


def test_sparsity_schedule():
    exp = from_dict({"pruning": {"rate": 0.1, "levels": 10}})
    assert exp.sparsity(0) == 0.0
    assert exp.sparsity(1) == pytest.approx(0.1)
    assert exp.sparsity(2) == pytest.approx(0.19)
    assert exp.sparsity(10) == pytest.approx(1 - 0.9**10)
    explicit = from_dict({"pruning": {"sparsities": [0.3, 0.5, 0.7]}})
    assert explicit.num_levels == 3 and explicit.sparsity(2) == 0.5


def test_hash_is_pinned_and_covers_results_only():
    base = from_dict({})
    # Regression pin (open_lth style): changing this means every existing store is orphaned.
    assert base.hash == from_dict({}).hash
    assert base.hash == "c44018ff6a"
    same = from_dict({"seeds": [0, 1, 2], "pruning": {"levels": 3, "subnetworks": ["low"]},
                      "tracking": {"wandb": "disabled"}, "resources": {"gpus_per_worker": 1.0},
                      "storage": "s3://b/x", "name": "other"})
    assert same.hash == base.hash  # grid selection, tracking, resources, storage and name don't change results
    for change in ({"training": {"lr": 1e-4}}, {"pruning": {"rate": 0.2}}, {"rewind": {"to": "step", "step": 5}},
                   {"pruning": {"scope": ["language"]}}, {"data": {"max_tokens": 12}},
                   {"model": {"config": {"hidden_size": 32}}}, {"pruning": {"schedule": "oneshot"}}):
        assert from_dict(change).hash != base.hash, change


BAD = [
    ("unknown key", "training:\n  epochz: 3\n", "training.epochz: unknown key"),
    ("wrong type", "training:\n  epochs: three\n", "training.epochs: expected an integer"),
    ("rate out of range", "pruning:\n  rate: 1.5\n", "pruning.rate: 1.5 is out of range"),
    ("sparsity out of range", "pruning:\n  sparsities: [0.2, 1.2]\n", "pruning.sparsities[1]: 1.2 is out of range"),
    ("unknown subnetwork", "pruning:\n  subnetworks: [low, medium]\n", "pruning.subnetworks[1]: unknown subnetwork 'medium'"),
    ("plugin not importable", "plugins: [no_such_plugin]\n", "plugins[0]: cannot import 'no_such_plugin'"),
    ("missing data path", "model:\n  pretrained: unc-nlp/lxmert-base-uncased\ndata:\n  source: vqa\n  path: /nonexistent/vqa\n",
     "data.path: '/nonexistent/vqa' does not exist"),
    ("missing pretrained path", "model:\n  pretrained: ./no/such/model\n", "model.pretrained: local directory './no/such/model' does not exist"),
    ("bad yaml", "training: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize("label,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_experiment_gives_one_clear_line(tmp_path, label, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and expected in str(err.value)
    # The command line prints exactly that one line, no traceback, and exits non-zero before any work.
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "launch", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr
    assert str(path) in lines[0]


def test_bad_override_names_the_key(smoke_file):
    with pytest.raises(ConfigError, match=r"training\.lr: expected a number"):
        load_experiment(smoke_file, ["training.lr=fast"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_experiment(smoke_file, ["training.lr"])


def test_missing_file():
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment("experiments/nope.yaml")


def test_exponent_floats_without_a_dot(smoke_file):
    # YAML 1.1 reads "5e-5" as a string; a learning rate written that way must still work.
    assert load_experiment(smoke_file, ["training.lr=5e-5"]).training.lr == 5e-5
