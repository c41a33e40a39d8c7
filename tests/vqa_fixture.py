"""Small VQA v2 inputs in the exact real formats, for tests and benchmarks (not part of the package).

:func:`write_vqa_fixture` writes official-layout questions and annotations
JSON (two splits, ten annotators, all three answer types, answers that need
normalising and some outside the vocabulary), an LXMERT feature TSV and an
LXMERT-style ``ans2label`` JSON: everything ``lxsweep prepare-vqa`` reads.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lxsweep.data.tsv import encode_feature_row, make_img_id, write_feature_tsv

# (answer type, question_type, question template, answers in vocabulary, raw spellings)
_KINDS = (
    ("yes/no", "is there a", "Is there a {obj} in the picture?", ("yes", "no"), {"yes": ("Yes", "yes."), "no": ("No", "no.")}),
    ("number", "how many", "How many {obj}s are there?", ("1", "2", "3", "4"),
     {"1": ("one",), "2": ("two", "2."), "3": ("three",), "4": ("four",)}),
    ("other", "what color is the", "What color is the {obj}?", ("red", "blue", "green", "white"),
     {"red": ("Red", "a red"), "blue": ("Blue",), "green": ("the green",), "white": ("White",)}),
)
_OBJECTS = ("dog", "cat", "car", "bus", "kite", "plate")
_OUT_OF_VOCAB = ("maybe", "10", "purple", "none of them")  # answers some annotator gives that the vocabulary lacks
FIXTURE_ANSWERS = ("yes", "no", "2", "1", "3", "4", "red", "blue", "green", "white", "black")


def fixture_splits(files: dict[str, Path]) -> dict[str, tuple[Path, Path]]:
    """The ``splits`` argument of ``prepare_vqa`` for a fixture's files."""
    return {name: (files[f"{name}_questions"], files[f"{name}_annotations"]) for name in ("train", "minival")}


def write_vqa_fixture(directory: str | Path, *, num_images: int = 6, questions_per_image: int = 3,
                      num_boxes: int = 36, feat_dim: int = 2048, seed: int = 0) -> dict[str, Path]:
    """Write a tiny VQA v2 in the real file formats under ``directory``.

    The first half of the images (rounded up) are train2014 images, the rest
    val2014; questions cycle through the three answer types. Returns the paths
    under the keys ``train_questions``, ``train_annotations``,
    ``minival_questions``, ``minival_annotations``, ``features`` (one TSV with
    every image) and ``ans2label``.
    """
    if num_images < 2 or questions_per_image < 1:
        raise ValueError("a fixture needs at least 2 images (one per split) and 1 question per image")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_train = (num_images + 1) // 2
    splits: dict[str, tuple[list[dict], list[dict], str]] = {
        "train": ([], [], "train2014"), "minival": ([], [], "val2014")}
    tsv_rows = []
    counter = 0
    for i in range(num_images):
        name = "train" if i < num_train else "minival"
        questions, annotations, subset = splits[name]
        image_id = 100_000 + 7919 * i  # COCO-like, distinct, not consecutive
        img_h, img_w = int(rng.integers(240, 641)), int(rng.integers(240, 641))
        x1 = rng.uniform(0, img_w * 0.7, num_boxes)
        y1 = rng.uniform(0, img_h * 0.7, num_boxes)
        boxes = np.stack([x1, y1, x1 + rng.uniform(1, img_w - x1), y1 + rng.uniform(1, img_h - y1)], axis=1)
        features = (rng.gamma(1.0, 1.5, (num_boxes, feat_dim)) * (rng.random((num_boxes, feat_dim)) < 0.6))
        tsv_rows.append(encode_feature_row(
            make_img_id(f"COCO_{subset}", image_id), img_h, img_w, boxes.astype(np.float32), features.astype(np.float32),
            objects_id=rng.integers(0, 1600, num_boxes), objects_conf=rng.random(num_boxes),
            attrs_id=rng.integers(0, 400, num_boxes), attrs_conf=rng.random(num_boxes)))
        for k in range(questions_per_image):
            answer_type, question_type, template, truths, spellings = _KINDS[counter % len(_KINDS)]
            counter += 1
            obj = _OBJECTS[int(rng.integers(len(_OBJECTS)))]
            question_id = image_id * 1000 + k  # VQA v2's own convention
            raw = _annotator_answers(rng, truths, spellings)
            questions.append({"image_id": image_id, "question": template.format(obj=obj), "question_id": question_id})
            annotations.append({
                "question_type": question_type, "multiple_choice_answer": Counter(raw).most_common(1)[0][0],
                "answers": [{"answer": a, "answer_confidence": str(rng.choice(["yes", "yes", "maybe", "no"])),
                             "answer_id": j + 1} for j, a in enumerate(raw)],
                "image_id": image_id, "answer_type": answer_type, "question_id": question_id,
            })
    files: dict[str, Path] = {}
    for name, (questions, annotations, subset) in splits.items():
        files[f"{name}_questions"] = _dump(directory / f"v2_OpenEnded_mscoco_{subset}_questions.json", {
            "info": {"description": "lxsweep VQA v2 fixture"}, "task_type": "Open-Ended", "data_type": "mscoco",
            "license": {"name": "test fixture"}, "data_subtype": subset, "questions": questions})
        files[f"{name}_annotations"] = _dump(directory / f"v2_mscoco_{subset}_annotations.json", {
            "info": {"description": "lxsweep VQA v2 fixture"}, "license": {"name": "test fixture"},
            "data_subtype": subset, "annotations": annotations, "data_type": "mscoco"})
    files["features"] = write_feature_tsv(directory / "fixture_obj36.tsv", tsv_rows)
    files["ans2label"] = _dump(directory / "trainval_ans2label.json", {a: i for i, a in enumerate(FIXTURE_ANSWERS)})
    return files


def _annotator_answers(rng: np.random.Generator, truths: Sequence[str], spellings: dict[str, Sequence[str]]) -> list[str]:
    """Ten answers: a majority answer, a plausible second one, the odd out-of-vocabulary one, mixed spellings."""
    first, second = rng.choice(len(truths), 2, replace=False)
    agree = int(rng.integers(4, 11))  # how many give the majority answer
    answers = []
    for j in range(10):
        if j < agree:
            truth = truths[first]
        elif rng.random() < 0.25:
            answers.append(str(rng.choice(_OUT_OF_VOCAB)))
            continue
        else:
            truth = truths[second]
        options = (truth, *spellings.get(truth, ()))
        answers.append(options[int(rng.integers(len(options)))])
    return [answers[int(j)] for j in rng.permutation(10)]


def _dump(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path
