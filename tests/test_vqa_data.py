"""lxsweep.data: LXMERT TSVs, official JSON, answer targets, the prepare-vqa store and its CLI."""
from __future__ import annotations

import base64
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vqa_fixture import fixture_splits, write_vqa_fixture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from data_open import as_version_2  # noqa: E402  (the version-2 layout, as bench/data_open.py writes it)

from lxsweep.cli import main
from lxsweep.data import Coded, VQADataset, VQAInputError, VQAStoreError, pad_targets, soft_score, soft_targets
from lxsweep.data.prepare import prepare_vqa
from lxsweep.data.prepared import load_vqa_store
from lxsweep.data.tsv import (
    FIELDNAMES,
    decode_feature_row,
    encode_feature_row,
    image_id_from_img_id,
    iter_feature_rows,
    make_img_id,
    normalize_boxes,
    write_feature_tsv,
)
from lxsweep.data.vqa_json import build_answer_vocab, load_answer_vocab, read_vqa_split
from lxsweep.metric import normalize_answer

FEAT_DIM = 16  # small for speed; the 2048 default is exercised once


def lxmert_load_obj_tsv(fname: Path) -> list[dict]:
    """LXMERT's own loader (airsplay/lxmert src/utils.py load_obj_tsv), the reference decoder."""
    csv.field_size_limit(sys.maxsize)
    data = []
    with open(fname) as f:
        reader = csv.DictReader(f, FIELDNAMES, delimiter="\t")
        for item in reader:
            for key in ["img_h", "img_w", "num_boxes"]:
                item[key] = int(item[key])
            boxes = item["num_boxes"]
            decode_config = [
                ("objects_id", (boxes,), np.int64), ("objects_conf", (boxes,), np.float32),
                ("attrs_id", (boxes,), np.int64), ("attrs_conf", (boxes,), np.float32),
                ("boxes", (boxes, 4), np.float32), ("features", (boxes, -1), np.float32),
            ]
            for key, shape, dtype in decode_config:
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
            data.append(item)
    return data


def random_image(rng: np.random.Generator, n: int = 36, dim: int = FEAT_DIM) -> dict:
    return {
        "img_h": int(rng.integers(200, 700)), "img_w": int(rng.integers(200, 700)),
        "boxes": (rng.random((n, 4)) * 600).astype(np.float32),
        "features": rng.standard_normal((n, dim)).astype(np.float32),
        "objects_id": rng.integers(0, 1600, n), "objects_conf": rng.random(n).astype(np.float32),
        "attrs_id": rng.integers(0, 400, n), "attrs_conf": rng.random(n).astype(np.float32),
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``lxsweep prepare-vqa ARGV`` through the real command line; (exit code, stdout, stderr)."""
    try:
        code = main(["prepare-vqa", *map(str, argv)])
    except SystemExit as exc:  # --help (0) or an argparse usage error (2)
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_args(files: dict[str, Path], out: Path, *extra) -> list:
    return ["--out", out,
            "--split", "train", files["train_questions"], files["train_annotations"],
            "--split", "minival", files["minival_questions"], files["minival_annotations"],
            "--features", files["features"], *extra]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return write_vqa_fixture(tmp_path / "raw", feat_dim=FEAT_DIM)


# ------------------------------------------------------------------ TSV layout


def test_tsv_round_trip_matches_lxmert_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = {make_img_id("COCO_val2014", 393225): random_image(rng), make_img_id("COCO_train2014", 9): random_image(rng, n=10)}
    path = write_feature_tsv(tmp_path / "f.tsv", [
        encode_feature_row(img_id, im["img_h"], im["img_w"], im["boxes"], im["features"],
                           objects_id=im["objects_id"], objects_conf=im["objects_conf"],
                           attrs_id=im["attrs_id"], attrs_conf=im["attrs_conf"])
        for img_id, im in images.items()])
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == 2 and all(line.count(b"\t") == 9 for line in raw.splitlines())

    ours = list(iter_feature_rows(path))
    reference = lxmert_load_obj_tsv(path)
    assert [r.img_id for r in ours] == list(images) == [r["img_id"] for r in reference]
    assert [r.image_id for r in ours] == [393225, 9]
    for row, ref, im in zip(ours, reference, images.values()):
        assert (row.img_h, row.img_w, row.num_boxes) == (im["img_h"], im["img_w"], len(im["boxes"]))
        for key in ("objects_id", "objects_conf", "attrs_id", "attrs_conf", "boxes", "features"):
            got = getattr(row, key)
            assert got.dtype == ref[key].dtype and got.shape == ref[key].shape
            np.testing.assert_array_equal(got, ref[key])
            np.testing.assert_array_equal(got, im[key])


def test_decode_rejects_malformed_rows() -> None:
    rng = np.random.default_rng(2)
    im = random_image(rng, n=4)
    fields = encode_feature_row("COCO_val2014_000000000001", im["img_h"], im["img_w"], im["boxes"], im["features"])
    with pytest.raises(ValueError, match="9 tab-separated fields"):
        decode_feature_row(fields[:9])
    bad_count = list(fields)
    bad_count[7] = "5"  # says 5 boxes, arrays hold 4
    with pytest.raises(ValueError, match="objects_id has 32 bytes, expected 40"):
        decode_feature_row(bad_count)
    bad_features = list(fields)
    bad_features[9] = base64.b64encode(b"\0" * 10).decode()
    with pytest.raises(ValueError, match="features has 10 bytes"):
        decode_feature_row(bad_features)
    with pytest.raises(ValueError, match="img_h is 'tall'"):
        decode_feature_row([fields[0], "tall", *fields[2:]])


def test_image_id_from_img_id() -> None:
    assert image_id_from_img_id("COCO_val2014_000000393225") == 393225
    assert image_id_from_img_id("COCO_train2014_000000000009") == 9
    assert image_id_from_img_id("42") == 42
    with pytest.raises(ValueError, match="does not end in an image number"):
        image_id_from_img_id("COCO_val2014_x")


def test_normalize_boxes_divides_by_size_and_clips() -> None:
    boxes = np.array([[10, 20, 110, 220], [-3, 0, 640.5, 480]], dtype=np.float32)
    out = normalize_boxes(boxes, img_h=480, img_w=640)
    np.testing.assert_allclose(out[0], [10 / 640, 20 / 480, 110 / 640, 220 / 480], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 0.0, 1.0, 1.0])
    assert out.dtype == np.float32
    assert boxes[1, 0] == -3  # the input is left alone


# --------------------------------------------------------- answers and targets


def test_soft_scores_for_agreeing_annotators() -> None:
    assert [soft_score(c) for c in range(0, 7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    label_of = {"yes": 0, "2": 1, "red": 2, "dog": 3}
    # after normalisation: red x1, 2 x2 ("two" -> "2"), dog x3 (articles dropped), yes x4; "purple" is not in the vocabulary
    answers = ["Red", "two", "2", "the dog", "a dog", "dog", "yes", "Yes", "yes.", "YES", "purple"]
    assert soft_targets(answers, label_of) == [(0, 1.0), (1, 0.6), (2, 0.3), (3, 0.9)]
    assert soft_targets(["purple"] * 10, label_of) == []


def test_pad_targets_pads_and_widens() -> None:
    labels, scores = pad_targets([[(3, 1.0)], []])
    assert labels.shape == scores.shape == (2, 10) and labels.dtype == np.int64 and scores.dtype == np.float32
    assert labels[0, 0] == 3 and scores[0, 0] == 1.0 and (labels[0, 1:] == -1).all() and (labels[1] == -1).all()
    wide, _ = pad_targets([[(i, 0.3) for i in range(12)]])
    assert wide.shape == (1, 12)


def test_answer_vocab_from_ans2label(tmp_path: Path) -> None:
    path = tmp_path / "a2l.json"
    path.write_text(json.dumps({"no": 1, "yes": 0, "2": 2}))
    assert load_answer_vocab(path) == ["yes", "no", "2"]
    path.write_text(json.dumps(["yes", "no"]))  # LXMERT's label2ans list
    assert load_answer_vocab(path) == ["yes", "no"]
    path.write_text(json.dumps({"yes": 0, "no": 2}))
    with pytest.raises(VQAInputError, match=r"a2l.json: label ids must be exactly 0..1, each once \(missing 1; out of range 2\)"):
        load_answer_vocab(path)
    path.write_text(json.dumps({"yes": 0, "no": 0}))
    with pytest.raises(VQAInputError, match="missing 1; repeated 0"):
        load_answer_vocab(path)
    path.write_text(json.dumps({"yes": "0"}))
    with pytest.raises(VQAInputError, match="label ids must be integers"):
        load_answer_vocab(path)


def test_answer_vocab_from_min_count() -> None:
    def ann(answer: str) -> dict:
        return {"multiple_choice_answer": answer}

    annotations = [ann("Yes")] * 5 + [ann("yes")] * 5 + [ann("two")] * 3 + [ann("2")] * 6 + \
        [ann("red")] * 9 + [ann("blue")] * 9 + [ann("green")] * 8
    # yes 10, 2 9 ("two" normalises to "2"), blue/red 9 (ties alphabetical), green 8 < 9
    assert build_answer_vocab(annotations, min_count=9) == ["yes", "2", "blue", "red"]
    assert build_answer_vocab(annotations, min_count=8)[-1] == "green"


def test_read_vqa_split_joins_questions_and_annotations(files: dict[str, Path]) -> None:
    records = read_vqa_split(files["train_questions"], files["train_annotations"])
    questions = json.loads(files["train_questions"].read_text())["questions"]
    assert [r["question_id"] for r in records] == [q["question_id"] for q in questions]
    assert {r["answer_type"] for r in records} == {"yes/no", "number", "other"}
    assert all(len(r["answers"]) == 10 and r["image_id"] * 1000 <= r["question_id"] for r in records)


# --------------------------------------------------------------- the store


def test_prepare_and_load_end_to_end(files: dict[str, Path], tmp_path: Path) -> None:
    out = prepare_vqa(tmp_path / "store", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                      ans2label=files["ans2label"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_images"] == 6 and manifest["num_boxes"] == 36 and manifest["feat_dim"] == FEAT_DIM
    assert {n: s["questions"] for n, s in manifest["splits"].items()} == {"train": 9, "minival": 9}
    assert manifest["answers"]["source"] == "ans2label"

    ds = load_vqa_store(out)
    assert isinstance(ds, VQADataset)
    assert ds.answers == load_answer_vocab(files["ans2label"])
    assert isinstance(ds.train.features, np.memmap) and ds.train.features.dtype == np.float16
    assert ds.valid.features is ds.train.features  # one mapping shared by both splits
    assert ds.train.features.shape == (6, 36, FEAT_DIM) and ds.train.boxes.shape == (6, 36, 4)

    images = json.loads((out / "images.json").read_text())
    label_of = {a: i for i, a in enumerate(ds.answers)}
    tsv = {row.image_id: row for row in iter_feature_rows(files["features"])}
    for name, split in (("train", ds.train), ("minival", ds.valid)):
        records = read_vqa_split(*fixture_splits(files)[name])
        assert split.question_ids.tolist() == [r["question_id"] for r in records]
        assert split.questions == [r["question"] for r in records]
        assert split.answers == [r["answers"] for r in records]
        assert split.answer_types == [r["answer_type"] for r in records]
        assert split.question_kinds == [r["question_type"] for r in records]  # the official perQuestionType
        for i, r in enumerate(records):
            row = split.image_index[i]
            assert images[str(r["image_id"])] == row
            image = tsv[r["image_id"]]
            stored = np.asarray(split.features[row], dtype=np.float32)
            np.testing.assert_allclose(stored, image.features, rtol=2 ** -10, atol=1e-7)  # fp16 precision
            np.testing.assert_array_equal(split.features[row], image.features.astype(np.float16))
            np.testing.assert_array_equal(split.boxes[row], normalize_boxes(image.boxes, image.img_h, image.img_w))
            np.testing.assert_array_equal(split.object_labels[row], image.objects_id)
            np.testing.assert_array_equal(split.attr_labels[row], image.attrs_id)
            expected = soft_targets(r["answers"], label_of)
            got = [(int(lab), float(s)) for lab, s in zip(split.target_labels[i], split.target_scores[i]) if lab >= 0]
            assert got == [(lab, pytest.approx(s)) for lab, s in expected]
    assert (ds.train.target_labels >= 0).any(axis=1).all()

    in_ram = load_vqa_store(out, mmap=False)
    assert not isinstance(in_ram.train.features, np.memmap)
    np.testing.assert_array_equal(in_ram.train.features, ds.train.features)


def test_prepare_with_default_2048_features(tmp_path: Path) -> None:
    files = write_vqa_fixture(tmp_path / "raw")
    out = prepare_vqa(tmp_path / "store", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                      ans2label=files["ans2label"])
    ds = load_vqa_store(out)
    assert ds.train.features.shape == (6, 36, 2048)
    first = next(iter_feature_rows(files["features"]))
    np.testing.assert_array_equal(ds.train.features[0], first.features.astype(np.float16))


def test_vocab_from_training_answers(files: dict[str, Path], tmp_path: Path) -> None:
    out = prepare_vqa(tmp_path / "store", splits=fixture_splits(files), feature_tsvs=[files["features"]], min_count=2)
    ds = load_vqa_store(out)
    records = read_vqa_split(files["train_questions"], files["train_annotations"])
    assert ds.answers == build_answer_vocab(records, min_count=2) and ds.answers
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["answers"] == {"file": "answers.json", "count": len(ds.answers), "source": "min_count",
                                   "min_count": 2, "vocab_splits": ["train"]}
    mc = {normalize_answer(r["multiple_choice_answer"]) for r in records}
    assert set(ds.answers) <= mc


def test_questions_without_features_are_dropped_and_counted(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    lines = files["features"].read_bytes().splitlines(keepends=True)
    files["features"].write_bytes(b"".join(lines[:1] + lines[2:]))  # remove the second train image
    code, out_text, err = run_cli(cli_args(files, tmp_path / "store", "--ans2label", files["ans2label"]), capsys)
    assert code == 0, err
    assert "warning: split train: dropped 3 of 9 questions" in err
    assert "train 6 questions (3 dropped)" in out_text
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["dropped_without_features"] == 3
    assert manifest["splits"]["minival"]["dropped_without_features"] == 0
    assert manifest["num_images"] == 5 and manifest["images_without_features"] == 1
    ds = load_vqa_store(tmp_path / "store")
    assert ds.train.features.shape == (5, 36, FEAT_DIM) and len(ds.train) == 6
    # the features file was cut to the images found: header + 5 rows, nothing more
    header = (tmp_path / "store" / "features.f16.npy").stat().st_size - 5 * 36 * FEAT_DIM * 2
    assert header == ds.train.features.offset
    np.testing.assert_array_equal(ds.valid.features[ds.valid.image_index[-1]],
                                  list(iter_feature_rows(files["features"]))[-1].features.astype(np.float16))


def test_short_images_are_zero_padded_and_limit_keeps_first_questions(files: dict[str, Path], tmp_path: Path) -> None:
    rows = list(iter_feature_rows(files["features"]))
    short = rows[0]
    write_feature_tsv(files["features"], [
        encode_feature_row(r.img_id, r.img_h, r.img_w, r.boxes[:20] if r is short else r.boxes,
                           r.features[:20] if r is short else r.features) for r in rows])
    out = prepare_vqa(tmp_path / "store", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                      ans2label=files["ans2label"], limit=4)
    ds = load_vqa_store(out)
    assert len(ds.train) == len(ds.valid) == 4
    assert ds.train.features.shape[0] == 4  # 2 train + 2 minival images referenced by the first 4 questions each
    row = json.loads((out / "images.json").read_text())[str(short.image_id)]
    np.testing.assert_array_equal(ds.train.features[row, :20], short.features[:20].astype(np.float16))
    assert not ds.train.features[row, 20:].any() and not ds.train.boxes[row, 20:].any()
    assert json.loads((out / "manifest.json").read_text())["limit"] == 4


def test_load_errors_name_the_store(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(VQAStoreError, match="nowhere: no such directory"):
        load_vqa_store(tmp_path / "nowhere")
    out = prepare_vqa(tmp_path / "store", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                      ans2label=files["ans2label"])
    with pytest.raises(VQAStoreError, match=r"store: no split 'test' — use one of minival, train"):
        load_vqa_store(out, valid_split="test")
    (out / "manifest.json").unlink()
    with pytest.raises(VQAStoreError, match="store: no manifest.json"):
        load_vqa_store(out)


def store_bytes(store: Path) -> dict[str, bytes]:
    return {str(f.relative_to(store)): f.read_bytes() for f in sorted(store.rglob("*")) if f.is_file()}


def test_failed_overwrite_leaves_the_previous_store_intact(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "store"
    assert run_cli(cli_args(files, out, "--ans2label", files["ans2label"], "--limit", "1"), capsys)[0] == 0
    before = store_bytes(out)
    good_tsv = files["features"].read_bytes()
    lines = good_tsv.splitlines(keepends=True)
    files["features"].write_bytes(b"".join(lines[:-1] + [b"COCO_val2014_000000000001\t1\t2\r\n"]))  # last line broken
    code, _, err = run_cli(cli_args(files, out, "--ans2label", files["ans2label"], "--overwrite"), capsys)
    assert code == 2 and f"{files['features']}, line 6: 3 tab-separated fields, expected 10" in err
    assert store_bytes(out) == before  # not a byte changed, and it still loads
    assert len(load_vqa_store(out).train) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "store"]  # no temporary directory left behind
    files["features"].write_bytes(good_tsv)
    assert run_cli(cli_args(files, out, "--ans2label", files["ans2label"], "--overwrite"), capsys)[0] == 0
    assert len(load_vqa_store(out).train) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "store"]


def test_version_1_and_2_stores_still_open_with_the_same_questions(files: dict[str, Path], tmp_path: Path) -> None:
    out = prepare_vqa(tmp_path / "store", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                      ans2label=files["ans2label"])
    now = load_vqa_store(out)
    assert isinstance(now.valid.answers, Coded) and isinstance(now.valid.answer_types, Coded)
    as_version_2(out)  # the layout bench/data_open.py compares against
    old = load_vqa_store(out)
    for a, b in ((now.train, old.train), (now.valid, old.valid)):
        assert isinstance(b.answers, list)
        assert (b.questions, b.answers, b.answer_types, b.question_kinds) == (
            a.questions, list(a.answers), list(a.answer_types), list(a.question_kinds))
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("objects_id", "attrs_id"):
        (out / manifest.pop(key)).unlink()
    (out / "manifest.json").write_text(json.dumps({**manifest, "version": 1}))
    ds = load_vqa_store(out)
    assert ds.train.object_labels is None and ds.train.attr_labels is None and len(ds.train) == 9
    (out / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(VQAStoreError, match="store format version 99, this lxsweep reads versions 1, 2, 3"):
        load_vqa_store(out)


def test_coded_columns_read_like_lists_and_damage_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    out = prepare_vqa(tmp_path / "store", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                      ans2label=files["ans2label"])
    split = load_vqa_store(out).train
    records = read_vqa_split(*fixture_splits(files)["train"])
    rows = np.array([3, 0, 3])
    sub = split.subset(rows)
    assert isinstance(sub.answers, Coded)
    assert sub.answers == [records[i]["answers"] for i in rows] and sub.answer_types[-1] == records[3]["answer_type"]
    assert split.answers[1:3] == [records[1]["answers"], records[2]["answers"]]
    assert split.question_kinds != [r["question_type"] for r in records[:-1]]  # one row short: not equal
    codes = np.load(out / "train" / "answer_types.npy")
    codes[0] = 7  # the fixture has 3 answer types
    np.save(out / "train" / "answer_types.npy", codes)
    with pytest.raises(VQAStoreError, match=r"train/answer_types.npy: int16 \(9,\) codes do not index the 3 "
                                            r"answer_type values"):
        load_vqa_store(out)
    (out / "train" / "answer_types.npy").unlink()
    with pytest.raises(VQAStoreError, match=r"train/answer_types.npy: missing from the store"):
        load_vqa_store(out)


# ---------------------------------------------------------------------- CLI


def test_cli_help_has_an_example(capsys) -> None:
    code, out_text, _ = run_cli(["--help"], capsys)
    assert code == 0
    assert "example:" in out_text and "lxsweep prepare-vqa --out" in out_text and "--split" in out_text


def corrupt_questions_missing(files: dict[str, Path]) -> Path:
    files["train_questions"].unlink()
    return files["train_questions"]


def corrupt_annotations_json(files: dict[str, Path]) -> Path:
    files["minival_annotations"].write_text('{"annotations": [')
    return files["minival_annotations"]


def corrupt_questions_shape(files: dict[str, Path]) -> Path:
    files["train_questions"].write_text('{"question": []}')
    return files["train_questions"]


def corrupt_tsv_fields(files: dict[str, Path]) -> Path:
    lines = files["features"].read_text().splitlines()
    files["features"].write_text("\n".join([lines[0], "\t".join(lines[1].split("\t")[:8])] + lines[2:]) + "\n")
    return files["features"]


def corrupt_tsv_base64(files: dict[str, Path]) -> Path:
    rows = [line.split("\t") for line in files["features"].read_text().splitlines()]
    rows[2][9] = rows[2][9][:-8]
    files["features"].write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return files["features"]


def corrupt_tsv_missing(files: dict[str, Path]) -> Path:
    files["features"].unlink()
    return files["features"]


def corrupt_ans2label(files: dict[str, Path]) -> Path:
    files["ans2label"].write_text(json.dumps({"yes": 0, "no": 5}))
    return files["ans2label"]


def corrupt_unannotated(files: dict[str, Path]) -> Path:
    data = json.loads(files["train_annotations"].read_text())
    data["annotations"] = data["annotations"][1:]
    files["train_annotations"].write_text(json.dumps(data))
    return files["train_questions"]


def corrupt_answer_type(files: dict[str, Path]) -> Path:
    data = json.loads(files["train_annotations"].read_text())
    data["annotations"][4]["answer_type"] = "color"
    files["train_annotations"].write_text(json.dumps(data))
    return files["train_annotations"]


def corrupt_annotated_twice(files: dict[str, Path]) -> Path:
    data = json.loads(files["train_annotations"].read_text())
    data["annotations"][2] = {**data["annotations"][2], "question_id": data["annotations"][1]["question_id"]}
    files["train_annotations"].write_text(json.dumps(data))
    return files["train_annotations"]


def corrupt_orphan_annotation(files: dict[str, Path]) -> Path:
    data = json.loads(files["train_questions"].read_text())
    data["questions"] = data["questions"][:-1]
    files["train_questions"].write_text(json.dumps(data))
    return files["train_annotations"]


@pytest.mark.parametrize("corrupt, problem", [
    (corrupt_questions_missing, "file not found"),
    (corrupt_annotations_json, "not valid JSON (Expecting value at line 1 column 18)"),
    (corrupt_questions_shape, "expected a JSON object with a 'questions' list"),
    (corrupt_tsv_fields, "line 2: 8 tab-separated fields, expected 10 (img_id, img_h"),
    (corrupt_tsv_base64, "line 3: image COCO_train2014_000000115838: features has 2298 bytes, not a positive multiple"),
    (corrupt_tsv_missing, "file not found"),
    (corrupt_ans2label, "label ids must be exactly 0..1, each once"),
    (corrupt_unannotated, "1 questions have no annotation in"),
    (corrupt_answer_type, "annotations[4]: answer_type 'color', expected one of yes/no, number, other"),
    (corrupt_annotated_twice, "annotations[2]: question_id 100000001 is annotated twice"),
    (corrupt_orphan_annotation, "1 annotations are for questions not in"),
])
def test_cli_bad_input_is_one_error_line(files: dict[str, Path], tmp_path: Path, capsys, corrupt, problem) -> None:
    named = corrupt(files)
    code, _, err = run_cli(cli_args(files, tmp_path / "store", "--ans2label", files["ans2label"]), capsys)
    assert code == 2
    assert err.startswith("lxsweep: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(named) in err and problem in err
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_cli_more_boxes_than_num_boxes_names_the_image(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(cli_args(files, tmp_path / "store", "--ans2label", files["ans2label"], "--num-boxes", "30"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{files['features']}, line 1: image COCO_train2014_000000100000 has 36 boxes, more than num_boxes=30" in err


def test_cli_refuses_to_clobber(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "store"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(cli_args(files, out), capsys)
    assert code == 2 and f"{out}: exists, is not empty and is not a VQA store" in err
    (out / "notes.txt").unlink()
    assert run_cli(cli_args(files, out, "--min-count", "2"), capsys)[0] == 0
    code, _, err = run_cli(cli_args(files, out, "--min-count", "2"), capsys)
    assert code == 2 and "already holds a prepared store" in err and "--overwrite" in err
    assert run_cli(cli_args(files, out, "--min-count", "2", "--overwrite"), capsys)[0] == 0


def test_cli_usage_errors(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["--split", "train", files["train_questions"], files["train_annotations"],
                            "--features", files["features"]], capsys)
    assert code == 2 and "--out" in err
    code, _, err = run_cli(cli_args(files, tmp_path / "s", "--min-count", "0"), capsys)
    assert code == 2 and "--min-count" in err
    code, _, err = run_cli(cli_args(files, tmp_path / "s", "--vocab-split", "val"), capsys)
    assert code == 2 and "built from split(s) val, but the splits are train, minival" in err
    args = cli_args(files, tmp_path / "s")
    code, _, err = run_cli(args + ["--split", "train", files["train_questions"], files["train_annotations"]], capsys)
    assert code == 2 and "--split train is given twice" in err
    code, _, err = run_cli(["--out", tmp_path / "s", "--split", "train", files["train_questions"],
                            files["train_annotations"], "--features", files["features"], "--min-count", "2"], capsys)
    assert code == 0  # one split is enough to prepare
    code, _, err = run_cli(["--out", tmp_path / "t", "--split", "minival", files["minival_questions"],
                            files["minival_annotations"], "--features", files["features"]], capsys)
    assert code == 2 and "pass --ans2label or --vocab-split NAME" in err
