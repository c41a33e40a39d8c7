"""Experiment files: defaults, overrides, the hash, and one clear error line per mistake."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lxsweep.config import ConfigError, from_dict, from_record, load_experiment
from lxsweep.plan import Plan

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_experiments_load_and_plan():
    from lxsweep.plan import Plan

    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert {f.stem for f in files} >= {"smoke", "paper", "demo", "oneshot", "rewind-step", "ablation-scope"}
    for path in files:
        exp = load_experiment(path, check=path.stem not in ("paper", "paper-code"))  # their data lives on the cluster
        assert Plan(exp).fine_tunes >= 1 + exp.num_levels
    paper = load_experiment(ROOT / "experiments" / "paper.yaml", check=False)
    assert paper.model.pretrained == "unc-nlp/lxmert-base-uncased" and paper.data.source == "vqa"
    assert (paper.pruning.rate, paper.pruning.levels, paper.seeds) == (0.1, 22, [0, 1, 2])
    assert 0.9 <= paper.sparsity(22) < 0.91  # the paper's range ends at 90%
    # random (no chain) at exactly the levels that first reach the paper's points 10, 20, ..., 90%
    first = [next(k for k in range(1, 23) if paper.sparsity(k) >= p / 10 - 1e-9) for p in range(1, 10)]
    assert paper.levels_of("random") == first == [1, 3, 4, 5, 7, 9, 12, 16, 22]
    assert paper.levels_of("high") == list(range(1, 13)) and paper.levels_of("low") == list(range(1, 23))
    assert Plan(paper).fine_tunes == 3 * (1 + 22 + 12 + 9)
    assert paper.model.answer_table and paper.resources.fine_tune_basis.startswith("estimate: ")
    t = paper.training
    assert (t.batch_size, t.lr, t.epochs, t.warmup, t.weight_decay, t.grad_clip) == (32, 5e-5, 4, 0.1, 0.01, 5.0)
    assert paper.data.max_tokens == 20 and paper.pruning.subnetworks == ["low", "high", "random"]
    demo = load_experiment(ROOT / "experiments" / "demo.yaml")
    assert demo.levels_of("high") == [1] and demo.levels_of("reinit") == [2, 14] and demo.levels_of("scratch") == [0]
    assert demo.levels_of("low") == list(range(1, 21)) and demo.sparsity(20) > 0.988 and demo.levels_of("random") == [1, 4, 6, 14]
    assert demo.levels_of("layer_random") == [2, 14] and demo.levels_of("probe") == [0]
    # docs/results/demo/PREREGISTRATION.md's grid: the second run's 87 trials, layer_random at two levels, the probe
    assert Plan(demo).fine_tunes == 3 * (1 + 20 + 4 + 1 + 2 + 2 + 1 + 1) == 96
    s = demo.data.synthetic
    assert (s.pretrain_kinds, s.pretrain_attributes) == (["exist", "count", "spatial", "attribute"], ["color"])
    assert (s.kinds, s.attributes, s.test_questions) == (["attribute"], ["shape", "size"], 4000)  # design D3


def test_levels_of_is_checked_and_selects_only():
    base = {"pruning": {"subnetworks": ["low", "high"], "levels": 3}}
    with pytest.raises(ConfigError, match=r"pruning.levels_of.hgh: unknown subnetwork 'hgh'"):
        from_dict({"pruning": {**base["pruning"], "levels_of": {"hgh": [1]}}})
    # A known subnetwork the run leaves out: its selection is ignored (smoke.yaml's high, with only low asked for).
    assert Plan(from_dict({"pruning": {**base["pruning"], "subnetworks": ["low"], "levels_of": {"high": [1]}}})).fine_tunes == 4
    with pytest.raises(ConfigError, match=r"pruning.levels_of.high: \[4\] is out of range — expected a non-empty list of levels among 1..3"):
        from_dict({"pruning": {**base["pruning"], "levels_of": {"high": [4]}}})
    chosen = from_dict({"pruning": {**base["pruning"], "levels_of": {"high": [1]}}})
    assert chosen.hash == from_dict(base).hash  # a selection, not a result: same store
    assert sorted(k.name for k in Plan(chosen).trials if k.subnetwork == "high") == ["high-L1-s0"]


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


# Regression pins (open_lth style): changing one of these orphans every existing store with that setting.
PINNED = [
    ({}, "44136fa355"),
    ({"training": {"lr": 1e-4}}, "f5c5eb8a44"),
    ({"pruning": {"rate": 0.2}}, "89c4d8a216"),
    ({"rewind": {"to": "step", "step": 5}}, "e2db26a7ab"),
    ({"pruning": {"scope": ["language"]}}, "23dc1a4d30"),
    ({"model": {"config": {"hidden_size": 32}}}, "9c26f166d1"),
    ({"pruning": {"schedule": "oneshot"}}, "7d2ba079bc"),
    ({"data": {"max_tokens": 12}, "training": {"precision": "bf16", "epochs": 3}}, "2d4efe3461"),
    ({"pruning": {"sparsities": [0.3, 0.5, 0.7], "rate": 0.2}}, "de321fd297"),  # explicit sparsities: rate unused
    ({"model": {"pretrained": "unc-nlp/lxmert-base-uncased"},  # real data: the synthetic task's knobs are unused
      "data": {"source": "vqa", "path": "/data/vqa", "synthetic": {"seed": 7}}}, "f1dc0c70a2"),
    ({"model": {"answer_table": "/data/all_ans.json"}}, "c49d44952f"),  # LXMERT's answer-head start
]


@pytest.mark.parametrize("raw,expected", PINNED, ids=[str(r) for r, _ in PINNED])
def test_hash_is_pinned(raw, expected):
    assert from_dict(raw).hash == expected


def test_hash_covers_results_only():
    base = from_dict({})
    same = from_dict({"seeds": [0, 1, 2], "pruning": {"levels": 3, "subnetworks": ["low"]},
                      "tracking": {"backend": "none"}, "resources": {"gpus_per_worker": 1.0, "allow_mixed": True, "fine_tune_hours": 0.7,
                                                  "fine_tune_basis": "estimate: a guess"},
                      "storage": "s3://b/x", "name": "other", "data": {"loader_workers": 4},
                      "training": {"eval_batch_size": 64, "lr": 5e-5}})  # lr written out at its default
    assert same.hash == base.hash  # grid selection, tracking, resources, storage, name, throughput, defaults
    hashes = {from_dict(raw).hash for raw, _ in PINNED}
    assert len(hashes) == len(PINNED)


def test_adding_a_defaulted_option_keeps_every_hash():
    """A software update that adds options (here a new training knob and a new section) orphans no store."""
    from lxsweep.config import Experiment, TrainingConfig, _build

    @dataclasses.dataclass
    class Distillation:
        teacher: str | None = None
        temperature: float = 2.0

    NewTraining = dataclasses.make_dataclass(
        "TrainingConfig", [("label_smoothing", float, dataclasses.field(default=0.0))], bases=(TrainingConfig,))
    NewExperiment = dataclasses.make_dataclass("Experiment", [
        ("training", NewTraining, dataclasses.field(default_factory=NewTraining)),
        ("distillation", Distillation, dataclasses.field(default_factory=Distillation)),
    ], bases=(Experiment,))
    for raw, expected in PINNED:
        upgraded = _build(NewExperiment, raw, "<test>", "")
        assert upgraded.training.label_smoothing == 0.0 and upgraded.hash == expected, raw
    # ...while setting the new option does change the hash.
    assert _build(NewExperiment, {"training": {"label_smoothing": 0.1}}, "<test>", "").hash != PINNED[0][1]
    assert _build(NewExperiment, {"distillation": {"temperature": 4.0}}, "<test>", "").hash != PINNED[0][1]


def test_old_tracking_key_says_what_to_write(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("tracking:\n  wandb: offline\n")
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "plan", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tracking.wandb was replaced by tracking.backend" in lines[0]
    assert "backend: none" in lines[0] and str(path) in lines[0]
    from lxsweep.preflight import check_tracking

    with pytest.raises(ConfigError, match="unknown backend 'mlflow'"):
        check_tracking(from_dict({"tracking": {"backend": "mlflow"}}))


def test_status_and_report_on_an_old_store_use_its_recorded_hash(tmp_path):
    """A store written before the hash scheme (and the tracking key) changed still opens under its own name."""
    store = tmp_path / "demo-0123456789"
    shutil.copytree(ROOT / "docs" / "results" / "demo" / "second-run" / "demo-6c9e05ebd7", store, ignore=shutil.ignore_patterns("report"))
    raw = from_dict({"name": "demo", "seeds": [0, 1, 2]}).to_dict()
    raw["tracking"] = {"wandb": "offline", "project": "lxsweep", "entity": None}  # the old key
    (store / "experiment.yaml").write_text(yaml.safe_dump({**raw, "hash": "0123456789"}, sort_keys=False))
    status = subprocess.run([sys.executable, "-m", "lxsweep.cli", "status", str(store)], capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("demo (0123456789): ")
    report = subprocess.run([sys.executable, "-m", "lxsweep.cli", "report", str(store)], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert (store / "report" / "results.csv").is_file()
    exp = from_record(yaml.safe_load((store / "experiment.yaml").read_text()))
    assert exp.hash == "0123456789" and exp.tracking.backend == "wandb" and exp.tracking.mode == "offline"
    assert exp.record()["hash"] == "0123456789"


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
    ("basis without hours", "resources:\n  fine_tune_basis: measured on one A100\n",
     "resources.fine_tune_basis: given without resources.fine_tune_hours"),
]


@pytest.mark.parametrize("label,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_experiment_gives_one_clear_line(tmp_path, capsys, label, text, expected):
    from lxsweep.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and expected in str(err.value)
    # The command line prints exactly that one line, no traceback, and exits 2 before any work.
    assert main(["launch", str(path)]) == 2
    err_text = capsys.readouterr().err
    lines = err_text.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err_text
    assert str(path) in lines[0]


def test_the_installed_command_prints_one_line(tmp_path):
    """The same through the real entry point: a fresh process, its stderr and exit status."""
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochz: 3\n")
    proc = subprocess.run([sys.executable, "-m", "lxsweep.cli", "launch", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "training.epochz: unknown key" in proc.stderr


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


def test_two_checkouts_at_different_paths_name_every_store_alike(tmp_path):
    """The hash sees a model directory relative to the experiment file, not where the project lives."""
    names = {}
    for where in ("one", "deeper/two"):
        shutil.copytree(ROOT / "experiments", tmp_path / where / "experiments")
        names[where] = {p.name: load_experiment(p, check=False).store_name
                        for p in sorted((tmp_path / where / "experiments").glob("*.yaml"))}
    assert names["one"] == names["deeper/two"] and len(names["one"]) >= 5
    smoke = load_experiment(tmp_path / "one" / "experiments" / "smoke.yaml", check=False)
    assert smoke.model.pretrained == str((tmp_path / "one" / "experiments" / "checkpoints" / "tiny-lxmert-d3"))
    assert smoke.legacy_hash != smoke.hash  # the old scheme hashed that absolute path


def test_a_store_named_by_the_old_path_hash_is_renamed_once(tmp_path):
    from lxsweep.config import migrate_store, read_experiment, write_experiment
    from lxsweep.store import Store, metrics_path

    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    exp = load_experiment(tmp_path / "experiments" / "smoke.yaml", [f"storage={tmp_path / 'runs'}"], check=False)
    old = Store(str(tmp_path / "runs" / f"{exp.name}-{exp.legacy_hash}"))
    write_experiment(old, dataclasses.replace(exp, recorded_hash=exp.legacy_hash))
    old.write_json(metrics_path("dense-L0-s0"), {"accuracy": 0.5})
    lines: list[str] = []
    root = migrate_store(exp, log=lines.append)
    assert root == str(tmp_path / "runs" / exp.store_name) and not Path(old.root).exists()
    assert len(lines) == 1 and "renamed the store" in lines[0]
    moved = Store(root)
    assert moved.read_json(metrics_path("dense-L0-s0")) == {"accuracy": 0.5}  # finished trials kept
    assert read_experiment(moved).hash == exp.hash
    assert migrate_store(exp, log=lines.append) is None and len(lines) == 1  # once
    # Both present: nothing moves, one line says which is used.
    write_experiment(old, dataclasses.replace(exp, recorded_hash=exp.legacy_hash))
    assert migrate_store(exp, log=lines.append) is None and Path(old.root).exists() and "both exist" in lines[-1]


def test_merge_keys_share_a_section_and_an_explicit_key_overrides(tmp_path):
    path = tmp_path / "merged.yaml"
    path.write_text("x-recipe: &recipe\n  lr: 1.0e-4\n  warmup: 0.2\n"
                    "training:\n  <<: *recipe\n  warmup: 0.05\n"
                    "model:\n  pretraining:\n    <<: *recipe\n")
    exp = load_experiment(path, check=False)
    assert (exp.training.lr, exp.training.warmup) == (1e-4, 0.05)  # the explicit key wins over the merged one
    assert (exp.model.pretraining.lr, exp.model.pretraining.warmup) == (1e-4, 0.2)
    path.write_text("x-recipe: &recipe\n  epochs: 3\nmodel:\n  pretraining:\n    <<: *recipe\n")
    with pytest.raises(ConfigError, match="model.pretraining.epochs"):  # merged keys are checked like written ones
        load_experiment(path, check=False)


def test_an_offending_value_is_echoed_at_most_a_few_hundred_characters():
    with pytest.raises(ConfigError) as err:
        from_dict({"training": {"precision": ["x" * 10_000]}})
    assert len(str(err.value)) < 500 and "characters)" in str(err.value)
