"""A prepared VQA store: its layout, and opening it as a :class:`~lxsweep.data.VQADataset`.

``lxsweep prepare-vqa`` (:mod:`lxsweep.data.prepare`) writes it once;
:func:`load_vqa_store` opens it with the features as a read-only memmap, so
every trial on a node shares one page cache and none loads 30 GB into RAM.

Layout (one directory)::

    manifest.json       written last: its presence means "complete"
    answers.json        label id -> answer
    features.f16.npy    float16 [num_images, num_boxes, feat_dim], zero rows pad short images
    boxes.npy           float32 [num_images, num_boxes, 4]: x1/w, y1/h, x2/w, y2/h in [0, 1]
    objects_id.npy      int64 [num_images, num_boxes]: the TSV's objects_id, -1 on padding boxes (version 2)
    attrs_id.npy        int64 [num_images, num_boxes]: the TSV's attrs_id, -1 on padding boxes (version 2)
    images.json         VQA image_id -> row of features/boxes
    <split>/question_ids.npy   int64 [N]
    <split>/image_index.npy    int64 [N] -> row of features/boxes
    <split>/target_labels.npy  int64 [N, K], -1 = padding (K >= 10)
    <split>/target_scores.npy  float32 [N, K], soft VQA scores
    <split>/questions.json     {"question": [text per row], "answers" | "answer_type" | "question_type": [distinct values]}
    <split>/answers.npy        int32 [N, A]: the annotators' raw answers as codes into "answers", -1 = padding
    <split>/answer_types.npy   int16 [N]: codes into "answer_type"
    <split>/question_types.npy int16 [N]: codes into "question_type" (the official perQuestionType)

The question columns open as :class:`~lxsweep.data.Coded` (version 3): the
full VQA v2 (658k questions, 6.6M annotator answers) opens in a trial in well
under a second instead of parsing a JSON record per question. Version 2
stores (``<split>/questions.jsonl``, one record per question) and version 1
stores (no objects_id/attrs_id: ``object_labels`` and ``attr_labels`` None)
still open.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lxsweep.data import Coded, VQADataset, VQASplit, VQAStoreError

STORE_FORMAT = "lxsweep-vqa-store"
STORE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MANIFEST_FILE = "manifest.json"
FEATURES_FILE = "features.f16.npy"
BOXES_FILE = "boxes.npy"
OBJECTS_FILE = "objects_id.npy"
ATTRS_FILE = "attrs_id.npy"
ANSWERS_FILE = "answers.json"
IMAGES_FILE = "images.json"
QUESTIONS_FILE = "questions.json"  # version 3; with the coded columns below
RECORDS_FILE = "questions.jsonl"   # versions 1-2: one record per question
COLUMNS = {"answers": ("answers.npy", 2), "answer_type": ("answer_types.npy", 1),
           "question_type": ("question_types.npy", 1)}  # column -> (codes file, dimensions)



def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the store at ``path``, or a :class:`VQAStoreError` saying what is wrong."""
    store = Path(path)
    if not store.exists():
        raise VQAStoreError(f"{store}: no such directory (make the store with `lxsweep prepare-vqa`)")
    if not store.is_dir():
        raise VQAStoreError(f"{store}: not a directory (a VQA store is the directory `lxsweep prepare-vqa --out` made)")
    manifest_path = store / MANIFEST_FILE
    if not manifest_path.exists():
        raise VQAStoreError(f"{store}: no {MANIFEST_FILE}, so it is not a store made by `lxsweep prepare-vqa` — point at one, or build it with `lxsweep prepare-vqa`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VQAStoreError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise VQAStoreError(f"{manifest_path}: not a {STORE_FORMAT} manifest")
    if manifest.get("version") not in READABLE_VERSIONS:
        raise VQAStoreError(f"{manifest_path}: store format version {manifest.get('version')}, this lxsweep reads "
                            f"versions {', '.join(map(str, READABLE_VERSIONS))}; run `lxsweep prepare-vqa` again")
    return manifest


def load_vqa_store(path: str | Path, train_split: str = "train", valid_split: str = "minival",
                   mmap: bool = True, test_split: Optional[str] = None) -> VQADataset:
    """Open a store made by :func:`prepare_vqa` as a VQADataset (with ``test_split``, its ``test`` too).

    With ``mmap`` the features and boxes are read-only ``np.memmap`` views
    shared by both splits: resident memory does not grow with the number of
    images, and processes on one node share the page cache.
    """
    store = Path(path)
    manifest = read_manifest(store)
    for split in (train_split, valid_split, *([test_split] if test_split else [])):
        if split not in manifest["splits"]:
            raise VQAStoreError(f"{store}: no split {split!r} — use one of {', '.join(sorted(manifest['splits']))}")
    mode = "r" if mmap else None
    features = _load_npy(store / manifest["features"], mode)
    boxes = _load_npy(store / manifest["boxes"], mode)
    n, nb, fd = manifest["num_images"], manifest["num_boxes"], manifest["feat_dim"]
    if features.shape != (n, nb, fd) or features.dtype != np.float16:
        raise VQAStoreError(f"{store / manifest['features']}: {features.dtype} {features.shape}, manifest says float16 "
                            f"{(n, nb, fd)}; run `lxsweep prepare-vqa` again")
    if boxes.shape != (n, nb, 4):
        raise VQAStoreError(f"{store / manifest['boxes']}: shape {boxes.shape}, manifest says {(n, nb, 4)}")
    try:
        answers = json.loads((store / manifest["answers"]["file"]).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VQAStoreError(f"{store / manifest['answers']['file']}: unreadable answer list ({exc})") from None
    if len(answers) != manifest["answers"]["count"]:
        raise VQAStoreError(f"{store / manifest['answers']['file']}: {len(answers)} answers, manifest says "
                            f"{manifest['answers']['count']}")
    labels = {name: _load_box_labels(store, manifest, name) for name in ("objects_id", "attrs_id")}
    images = (features, boxes, labels["objects_id"], labels["attrs_id"])
    train = _load_split(store, train_split, manifest, images)
    valid = train if valid_split == train_split else _load_split(store, valid_split, manifest, images)
    test = _load_split(store, test_split, manifest, images) if test_split else None
    return VQADataset(train=train, valid=valid, answers=answers, test=test)


def _load_npy(path: Path, mmap_mode: str | None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise VQAStoreError(f"{path}: missing from the store — run `lxsweep prepare-vqa` again") from None
    except (OSError, ValueError) as exc:
        raise VQAStoreError(f"{path}: unreadable ({exc}) — run `lxsweep prepare-vqa` again") from None


def _load_box_labels(store: Path, manifest: Mapping[str, Any], name: str) -> np.ndarray | None:
    """The per-box class ids ``name`` (objects_id / attrs_id), or None in a version-1 store."""
    if name not in manifest:
        return None
    labels = _load_npy(store / manifest[name], None)
    expected = (manifest["num_images"], manifest["num_boxes"])
    if labels.shape != expected or labels.dtype != np.int64:
        raise VQAStoreError(f"{store / manifest[name]}: {labels.dtype} {labels.shape}, manifest says int64 {expected} "
                            f"— run `lxsweep prepare-vqa` again")
    return labels


def _load_split(store: Path, name: str, manifest: Mapping[str, Any],
                images: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]) -> VQASplit:
    features, boxes, object_labels, attr_labels = images
    directory = store / name
    question_ids = _load_npy(directory / "question_ids.npy", None)
    image_index = _load_npy(directory / "image_index.npy", None)
    labels = _load_npy(directory / "target_labels.npy", None)
    scores = _load_npy(directory / "target_scores.npy", None)
    if manifest["version"] >= 3:
        questions, answers, answer_types, kinds = _read_columns(directory)
        rows = {QUESTIONS_FILE: len(questions), **{file: len(column) for (file, _), column in
                                                  zip(COLUMNS.values(), (answers, answer_types, kinds))}}
    else:
        questions, answers, answer_types, kinds = _read_records(directory)
        rows = {RECORDS_FILE: len(questions)}
    n = manifest["splits"][name]["questions"]
    sizes = {"question_ids": len(question_ids), "image_index": len(image_index), "target_labels": len(labels),
             "target_scores": len(scores), **rows}
    if any(size != n for size in sizes.values()) or labels.shape != scores.shape:
        raise VQAStoreError(f"{directory}: row counts {sizes} disagree with the manifest's {n} — run `lxsweep prepare-vqa` again")
    if n and (image_index.min() < 0 or image_index.max() >= len(features)):
        raise VQAStoreError(f"{directory / 'image_index.npy'}: rows outside the {len(features)} stored images")
    return VQASplit(
        question_ids=question_ids, questions=questions, image_index=image_index,
        features=features, boxes=boxes, answers=answers, answer_types=answer_types, question_kinds=kinds,
        target_labels=labels, target_scores=scores, object_labels=object_labels, attr_labels=attr_labels,
    )


def _read_columns(directory: Path) -> tuple[list[str], Coded, Coded, Coded]:
    """A version-3 split's question text and its coded answer, answer-type and question-type columns."""
    path = directory / QUESTIONS_FILE
    try:
        text = json.loads(path.read_text(encoding="utf-8"))
        questions = text["question"]
        columns = {}
        for column, (file, ndim) in COLUMNS.items():
            values, codes = text[column], _load_npy(directory / file, None)
            if codes.ndim != ndim or codes.dtype.kind != "i" or (codes.size and (
                    codes.max() >= len(values) or codes.min() < (-1 if ndim == 2 else 0))):
                raise VQAStoreError(f"{directory / file}: {codes.dtype} {codes.shape} codes do not index the "
                                    f"{len(values)} {column} values of {path} — run `lxsweep prepare-vqa` again")
            columns[column] = Coded(values, codes)
    except FileNotFoundError:
        raise VQAStoreError(f"{path}: missing from the store — run `lxsweep prepare-vqa` again") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise VQAStoreError(f"{path}: unreadable ({type(exc).__name__}: {exc}) — run `lxsweep prepare-vqa` "
                            f"again") from None
    return questions, columns["answers"], columns["answer_type"], columns["question_type"]


def _read_records(directory: Path) -> tuple[list[str], list, list, list]:
    """A version-1/2 split's questions, one JSON record per line."""
    questions, answers, answer_types, kinds = [], [], [], []
    intern = sys.intern  # answers, answer types and question types repeat: one string object each, not millions
    try:
        with open(directory / RECORDS_FILE, encoding="utf-8") as handle:
            for line in handle:  # one record at a time: the parsed dicts never pile up
                r = json.loads(line)
                questions.append(r["question"])
                answers.append([intern(a) for a in r["answers"]])
                answer_types.append(intern(r["answer_type"]))
                # The official evaluator's perQuestionType; a file without question_type falls back to the answer type.
                kinds.append(intern(r.get("question_type") or r["answer_type"]))
    except FileNotFoundError:
        raise VQAStoreError(f"{directory / RECORDS_FILE}: missing from the store — run `lxsweep prepare-vqa` again") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VQAStoreError(f"{directory / RECORDS_FILE}: unreadable ({type(exc).__name__}: {exc}) — run "
                            f"`lxsweep prepare-vqa` again") from None
    return questions, answers, answer_types, kinds


def encode_column(rows: Iterable, nested: bool = False) -> tuple[list[str], np.ndarray]:
    """(distinct values in first-seen order, codes): the inverse of :class:`Coded`; ``nested`` rows are lists."""
    index: dict[str, int] = {}
    rows = list(rows)
    if not nested:
        codes = [index.setdefault(v, len(index)) for v in rows]
        return list(index), np.array(codes, dtype=np.int16 if len(index) <= np.iinfo(np.int16).max else np.int32)
    codes = np.full((len(rows), max((len(r) for r in rows), default=0)), -1, dtype=np.int32)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            codes[i, j] = index.setdefault(v, len(index))
    return list(index), codes
