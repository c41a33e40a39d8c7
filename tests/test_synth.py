"""The synthetic task as a real VQA v2 dataset: `lxsweep synth` -> prepare-vqa -> the store trials read."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from lxsweep.cli import main
from lxsweep.config import load_experiment
from lxsweep.data.prepared import load_vqa_store
from lxsweep.data.source import load_dataset, synthetic_store_name
from lxsweep.data.synth import SPLITS, write_synthetic
from lxsweep.data.synthetic import ATTRIBUTE_NAMES, OBJECT_NAMES, generate_split
from lxsweep.store import Store

SMALL = ["data.synthetic.train_questions=60", "data.synthetic.valid_questions=30",
         "data.synthetic.pretrain_questions=45", "data.synthetic.annotator_noise=0.2"]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def synth_and_prepare(smoke_file: Path, out: Path, overrides: list[str], capsys) -> tuple[Path, str]:
    """Run `lxsweep synth`, then the prepare-vqa command it prints; (prepared store, synth's stdout)."""
    assert main(["synth", str(smoke_file), "--out", str(out), *sets(overrides)]) == 0
    printed = capsys.readouterr().out
    command = shlex.split(printed.splitlines()[-1])
    assert command[:2] == ["lxsweep", "prepare-vqa"]
    assert main(command[1:]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return Path(command[command.index("--out") + 1]), printed


def test_synthetic_files_round_trip_through_prepare_vqa(smoke_file, tmp_path, capsys):
    exp = load_experiment(smoke_file, SMALL)
    cfg = exp.data.synthetic
    store, printed = synth_and_prepare(smoke_file, tmp_path / "synth", SMALL, capsys)
    assert "prepare-vqa" in (tmp_path / "synth" / "README.txt").read_text()
    assert (tmp_path / "synth" / "objects_vocab.txt").read_text().splitlines() == list(OBJECT_NAMES)
    assert (tmp_path / "synth" / "attributes_vocab.txt").read_text().splitlines() == list(ATTRIBUTE_NAMES)
    image_ids: set[int] = set()
    for split, (count, seed, kinds, attributes) in SPLITS.items():
        if count(cfg) == 0:  # the smoke task has no test split
            assert not (tmp_path / "synth" / f"v2_OpenEnded_synthetic_{split}_questions.json").exists()
            continue
        raw = generate_split(cfg, count(cfg), seed(cfg), kinds=tuple(kinds(cfg)), attributes=tuple(attributes(cfg)))
        ds = load_vqa_store(store, split, split)
        s = ds.train
        assert s.questions == raw["questions"] and s.answers == raw["answers"]
        assert s.answer_types == raw["answer_types"] and s.question_kinds == raw["question_kinds"]
        rows, raw_rows = s.image_index, raw["image_index"]
        np.testing.assert_allclose(s.boxes[rows], raw["boxes"][raw_rows], atol=1e-6)  # pixels of 640x480 and back
        np.testing.assert_allclose(np.asarray(s.features[rows], dtype=np.float32), raw["features"][raw_rows],
                                   rtol=2 ** -10, atol=2 ** -14)  # float16 in the store
        np.testing.assert_array_equal(s.object_labels[rows], raw["object_labels"][raw_rows])
        np.testing.assert_array_equal(s.attr_labels[rows], raw["attr_labels"][raw_rows])
        # the official files themselves
        questions = json.loads((tmp_path / "synth" / f"v2_OpenEnded_synthetic_{split}_questions.json").read_text())
        annotations = json.loads((tmp_path / "synth" / f"v2_synthetic_{split}_annotations.json").read_text())
        assert {"info", "task_type", "data_type", "data_subtype", "license", "questions"} <= set(questions)
        assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == split
        ann = annotations["annotations"][0]
        assert set(ann) == {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"}
        assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
        assert all(a["answer_confidence"] == "yes" for a in ann["answers"])
        assert s.question_ids.tolist() == [q["question_id"] for q in questions["questions"]]
        ids = {q["image_id"] for q in questions["questions"]}
        assert not ids & image_ids  # image ids are unique across splits
        image_ids |= ids
    # the fine-tune splits share one answer vocabulary covering every training answer
    ds = load_vqa_store(store, "train", "valid")
    assert (ds.train.target_labels[:, 0] >= 0).all()


def test_vqa_eval_scores_the_synthetic_files(smoke_file, tmp_path, capsys):
    write_synthetic(load_experiment(smoke_file, [*SMALL, "data.synthetic.annotator_noise=0"]).data.synthetic,
                    tmp_path / "synth")
    q = tmp_path / "synth" / "v2_OpenEnded_synthetic_valid_questions.json"
    a = tmp_path / "synth" / "v2_synthetic_valid_annotations.json"
    annotations = json.loads(a.read_text())["annotations"]
    results = {}
    for name, answer in (("perfect", lambda x: x["multiple_choice_answer"]), ("yes", lambda x: "yes")):
        predictions = tmp_path / f"{name}.json"
        predictions.write_text(json.dumps([{"question_id": x["question_id"], "answer": answer(x)} for x in annotations]))
        assert main(["vqa-eval", "--questions", str(q), "--annotations", str(a), "--predictions", str(predictions)]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert results["perfect"] == {"overall": 1.0, "yes/no": 1.0, "number": 1.0, "other": 1.0}
    yes_no = [x for x in annotations if x["answer_type"] == "yes/no"]
    share = sum(x["multiple_choice_answer"] == "yes" for x in yes_no) / len(yes_no)
    assert results["yes"]["yes/no"] == pytest.approx(share) and results["yes"]["number"] == 0.0


def test_synth_refuses_a_used_directory_and_real_data(smoke_file, tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert main(["synth", str(smoke_file), "--out", str(tmp_path / "used")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lxsweep: error: ") and err.count("\n") == 1 and "not an empty directory" in err
    assert main(["synth", str(smoke_file), "--out", str(tmp_path / "x"), "--set", "data.source=vqa",
                 "--set", f"data.path={tmp_path}"]) == 2
    assert "data.source is 'vqa'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_embedded_data_is_prepared_once_and_cached_in_the_store(smoke_file, tmp_path, capsys):
    exp = load_experiment(smoke_file, [*SMALL, f"storage={tmp_path / 'runs'}"])
    store = Store.for_experiment(exp)
    ds = load_dataset(exp, store)
    name = synthetic_store_name(exp.data.synthetic)
    manifest = Path(store.path(f"{name}/manifest.json"))
    assert manifest.is_file() and store.listdir("data") == [name.split("/")[1]]  # no temporary leftovers
    stamp = manifest.stat().st_mtime_ns
    again = load_dataset(exp, store)
    assert manifest.stat().st_mtime_ns == stamp  # read back, not rebuilt
    assert again.train.questions == ds.train.questions and again.answers == ds.answers
    # exactly what `lxsweep synth` + `lxsweep prepare-vqa` give
    prepared, _ = synth_and_prepare(smoke_file, tmp_path / "synth", SMALL, capsys)
    direct = load_vqa_store(prepared, "train", "valid")
    assert direct.answers == ds.answers and direct.valid.questions == ds.valid.questions
    np.testing.assert_array_equal(direct.train.features, ds.train.features)
    pre = load_dataset(exp, store, "pretrain")
    assert len(pre.train) == 45 and len(pre.valid) == 30 and pre.answers == ds.answers
    assert not set(pre.train.image_index.tolist()) & set(ds.train.image_index.tolist())  # disjoint scenes
    limited = load_dataset(load_experiment(smoke_file, [*SMALL, f"storage={tmp_path / 'runs'}",
                                                        "data.limit_train=7"]), store)
    assert len(limited.train) == 7
    other = load_experiment(smoke_file, [*SMALL, "data.synthetic.seed=7"]).data.synthetic
    assert synthetic_store_name(other) != name


def test_kinds_and_a_test_split_reach_training_and_the_baselines(smoke_file, tmp_path):
    from lxsweep.baselines import baselines

    exp = load_experiment(smoke_file, [*SMALL, f"storage={tmp_path / 'runs'}", "data.synthetic.test_questions=40",
                                       "data.synthetic.pretrain_kinds=[exist, count]",
                                       "data.synthetic.kinds=[attribute, spatial]"])
    store = Store.for_experiment(exp)
    ds, pre = load_dataset(exp, store), load_dataset(exp, store, "pretrain")
    assert len(ds.test) == 40 and set(ds.test.question_kinds) <= {"attribute", "spatial"}
    for split in (ds.train, ds.valid, ds.test):
        assert set(split.question_kinds) <= {"attribute", "spatial"}
    assert set(pre.train.question_kinds) | set(pre.valid.question_kinds) <= {"exist", "count"}
    assert pre.test is None  # pretraining never sees the test split
    # disjoint scenes: the test split's images are its own
    assert not set(ds.test.image_index.tolist()) & (set(ds.train.image_index.tolist()) | set(ds.valid.image_index.tolist()))
    b = baselines(ds)
    assert set(b) == {"majority", "blind", "test"} and set(b["test"]) == {"majority", "blind"}
    assert 0.0 <= b["test"]["blind"]["accuracy"] <= 1.0
    # a fine-tune split of every kind is the default: no test split there
    assert load_dataset(load_experiment(smoke_file, [*SMALL, f"storage={tmp_path / 'runs2'}"]),
                        Store.for_experiment(load_experiment(smoke_file, [*SMALL, f"storage={tmp_path / 'runs2'}"]))).test is None
