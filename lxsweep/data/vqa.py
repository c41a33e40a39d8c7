"""Real VQA v2: official JSON files + LXMERT feature TSVs -> a memory-mapped store.

:func:`prepare_vqa` (``lxsweep prepare-vqa``) converts once; :func:`load_vqa_store`
opens the result as a :class:`~lxsweep.data.VQADataset` whose features are a
read-only memmap, so every trial on a node shares one page cache and none
loads 30 GB into RAM.

Store layout (one directory)::

    manifest.json       written last (temp file + rename): its presence means "complete"
    answers.json        label id -> answer
    features.f16.npy    float16 [num_images, num_boxes, feat_dim], zero rows pad short images
    boxes.npy           float32 [num_images, num_boxes, 4]: x1/w, y1/h, x2/w, y2/h in [0, 1]
    images.json         VQA image_id -> row of features/boxes
    <split>/question_ids.npy   int64 [N]
    <split>/image_index.npy    int64 [N] -> row of features/boxes
    <split>/target_labels.npy  int64 [N, K], -1 = padding (K >= 10)
    <split>/target_scores.npy  float32 [N, K], soft VQA scores
    <split>/questions.jsonl    one object per question row: text, types, the raw annotator answers

The feature TSV layout is LXMERT's (``src/utils.py load_obj_tsv``): ten
tab-separated fields per image, no header, arrays as base64 of raw
little-endian buffers.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import csv
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lxsweep.data import ANSWER_TYPES, VQADataset, VQASplit, pad_targets, soft_targets

FIELDNAMES = ("img_id", "img_h", "img_w", "objects_id", "objects_conf",
              "attrs_id", "attrs_conf", "num_boxes", "boxes", "features")
STORE_FORMAT = "lxsweep-vqa-store"
STORE_VERSION = 1
MANIFEST_FILE = "manifest.json"
FEATURES_FILE = "features.f16.npy"
BOXES_FILE = "boxes.npy"
ANSWERS_FILE = "answers.json"
IMAGES_FILE = "images.json"
QUESTIONS_FILE = "questions.jsonl"
_IN_PROGRESS_FILE = ".prepare-in-progress"
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TRAILING_NUMBER = re.compile(r"(\d+)$")
# (field, dtype, values per box; None = feature width, inferred)
_ARRAY_FIELDS = (("objects_id", "<i8", 1), ("objects_conf", "<f4", 1), ("attrs_id", "<i8", 1),
                 ("attrs_conf", "<f4", 1), ("boxes", "<f4", 4), ("features", "<f4", None))


class VQAInputError(ValueError):
    """A bad input file for prepare-vqa; the message names the file and the problem."""


class VQAStoreError(ValueError):
    """A missing, incomplete or inconsistent store; the message names the path and the problem."""


# ---------------------------------------------------------------- feature TSVs


@dataclass(frozen=True)
class FeatureRow:
    """One image of an LXMERT feature TSV, decoded (boxes in pixels)."""

    img_id: str  # e.g. "COCO_val2014_000000393225"
    image_id: int  # the VQA image_id: the number at the end of img_id
    img_h: int
    img_w: int
    objects_id: np.ndarray  # int64 [num_boxes]
    objects_conf: np.ndarray  # float32 [num_boxes]
    attrs_id: np.ndarray  # int64 [num_boxes]
    attrs_conf: np.ndarray  # float32 [num_boxes]
    boxes: np.ndarray  # float32 [num_boxes, 4]: x1, y1, x2, y2 in pixels
    features: np.ndarray  # float32 [num_boxes, feat_dim]

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)


def image_id_from_img_id(img_id: str) -> int:
    """VQA's integer image_id from a TSV img_id: ``"COCO_val2014_000000393225"`` -> 393225."""
    match = _TRAILING_NUMBER.search(img_id)
    if match is None:
        raise ValueError(f"img_id {img_id!r} does not end in an image number (expected e.g. COCO_val2014_000000393225)")
    return int(match.group(1))


def decode_feature_row(fields: Sequence[str]) -> FeatureRow:
    """Decode the ten TSV fields of one image exactly as LXMERT's ``load_obj_tsv`` does.

    Raises ValueError (without a file name: the caller adds it) on a wrong
    field count, a non-integer size, bad base64 or arrays of the wrong size.
    """
    if len(fields) != len(FIELDNAMES):
        raise ValueError(f"{len(fields)} tab-separated fields, expected {len(FIELDNAMES)} ({', '.join(FIELDNAMES)})")
    img_id = fields[0]
    img_h, img_w, num_boxes = (_parse_int(name, fields[FIELDNAMES.index(name)]) for name in ("img_h", "img_w", "num_boxes"))
    if img_h <= 0 or img_w <= 0:
        raise ValueError(f"image {img_id}: size {img_w}x{img_h} must be positive")
    if num_boxes <= 0:
        raise ValueError(f"image {img_id}: num_boxes is {num_boxes}, expected at least 1")
    image_id = image_id_from_img_id(img_id)
    arrays = {name: _decode_array(img_id, name, fields[FIELDNAMES.index(name)], dtype, num_boxes, per_box)
              for name, dtype, per_box in _ARRAY_FIELDS}
    return FeatureRow(img_id=img_id, image_id=image_id, img_h=img_h, img_w=img_w, **arrays)


def iter_feature_rows(path: str | Path) -> Iterator[FeatureRow]:
    """Stream the decoded images of one LXMERT feature TSV, one row in memory at a time.

    Errors are :class:`VQAInputError` naming the file and line.
    """
    path = Path(path)
    for line, fields in _read_tsv_fields(path):
        yield _decode_at(path, line, fields)


def normalize_boxes(boxes: np.ndarray, img_h: int, img_w: int) -> np.ndarray:
    """Pixel boxes (x1, y1, x2, y2) -> LXMERT's ``visual_pos``: x/img_w, y/img_h, clipped to [0, 1]."""
    out = np.array(boxes, dtype=np.float32, copy=True)
    out[..., (0, 2)] /= img_w
    out[..., (1, 3)] /= img_h
    # Detector boxes can overshoot the border by a rounding error; LXMERT asserts, we clip.
    return np.clip(out, 0.0, 1.0, out=out)


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} is {text[:40]!r}, expected an integer") from None


def _decode_array(img_id: str, name: str, text: str, dtype: str, num_boxes: int, per_box: int | None) -> np.ndarray:
    try:
        raw = base64.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image {img_id}: {name} is not valid base64 ({exc})") from None
    itemsize = np.dtype(dtype).itemsize
    if per_box is None:  # features: the width is whatever the detector produced
        if len(raw) == 0 or len(raw) % (itemsize * num_boxes):
            raise ValueError(f"image {img_id}: {name} has {len(raw)} bytes, not a positive multiple of "
                             f"num_boxes ({num_boxes}) x {itemsize}-byte values")
        per_box = len(raw) // (itemsize * num_boxes)
    expected = num_boxes * per_box * itemsize
    if len(raw) != expected:
        raise ValueError(f"image {img_id}: {name} has {len(raw)} bytes, expected {expected} "
                         f"(num_boxes {num_boxes} x {per_box} x {itemsize}-byte {np.dtype(dtype).name})")
    array = np.frombuffer(raw, dtype=dtype)
    return array.reshape((num_boxes, per_box) if name in ("boxes", "features") else (num_boxes,))


def _raise_csv_field_limit() -> None:
    # A features field is ~400 kB of base64; csv's default limit is 128 kB.
    try:
        csv.field_size_limit(sys.maxsize)
    except OverflowError:  # platforms whose C long is 32 bits
        csv.field_size_limit(2**31 - 1)


def _read_tsv_fields(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty row, the field count checked."""
    _raise_csv_field_limit()
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise VQAInputError(f"{path}: cannot open feature TSV ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle, delimiter="\t")
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise VQAInputError(f"{path}, line {reader.line_num}: not a readable TSV row ({exc})") from None
            if not fields:
                continue
            if len(fields) != len(FIELDNAMES):
                raise VQAInputError(f"{path}, line {reader.line_num}: {len(fields)} tab-separated fields, expected "
                                    f"{len(FIELDNAMES)} ({', '.join(FIELDNAMES)})")
            yield reader.line_num, fields


def _decode_at(path: Path, line: int, fields: list[str]) -> FeatureRow:
    try:
        return decode_feature_row(fields)
    except ValueError as exc:
        raise VQAInputError(f"{path}, line {line}: {exc}") from None


# ------------------------------------------------------- questions and answers


def load_answer_vocab(path: str | Path) -> list[str]:
    """Label id -> answer from LXMERT's ``trainval_ans2label.json`` (answer -> id).

    A JSON list (LXMERT's ``trainval_label2ans.json``) is accepted too. The
    ids must be exactly 0..n-1, each once.
    """
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, list):
        if not all(isinstance(a, str) for a in data) or len(set(data)) != len(data):
            raise VQAInputError(f"{path}: a label list must hold distinct answer strings")
        return list(data)
    if not isinstance(data, dict) or not data:
        raise VQAInputError(f"{path}: expected a non-empty JSON object answer -> label id "
                            f"(LXMERT's trainval_ans2label.json), got {type(data).__name__}")
    bad = [(a, i) for a, i in data.items() if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise VQAInputError(f"{path}: label ids must be integers; answer {bad[0][0]!r} has {bad[0][1]!r}")
    n = len(data)
    ids = Counter(data.values())
    missing = sorted(set(range(n)) - set(ids))
    if missing:
        repeated = sorted(i for i, c in ids.items() if c > 1)
        outside = sorted(i for i in ids if not 0 <= i < n)
        detail = f"missing {_first(missing)}" + (f"; repeated {_first(repeated)}" if repeated else "") + \
            (f"; out of range {_first(outside)}" if outside else "")
        raise VQAInputError(f"{path}: label ids must be exactly 0..{n - 1}, each once ({detail})")
    answers = [""] * n
    for answer, label in data.items():
        answers[label] = answer
    return answers


def build_answer_vocab(annotations: Iterable[Mapping[str, Any]], min_count: int = 9) -> list[str]:
    """Answers whose normalised ``multiple_choice_answer`` occurs at least ``min_count`` times.

    The bottom-up-attention / LXMERT practice; sorted by (-count, answer) so
    the label ids are deterministic.
    """
    from lxsweep.metric import normalize_answer

    counts = Counter(normalize_answer(a["multiple_choice_answer"]) for a in annotations)
    return sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))


def read_vqa_split(questions_json: str | Path, annotations_json: str | Path) -> list[dict[str, Any]]:
    """Join an official VQA v2 questions file with its annotations file, in question order.

    Each record: question_id, image_id, question, question_type, answer_type,
    multiple_choice_answer and answers (the annotators' raw answer strings).
    """
    qpath, apath = Path(questions_json), Path(annotations_json)
    questions = _json_list(qpath, "questions", "v2_OpenEnded_mscoco_*_questions.json")
    annotations = _json_list(apath, "annotations", "v2_mscoco_*_annotations.json")
    by_id: dict[int, dict[str, Any]] = {}
    for i, ann in enumerate(annotations):
        where = f"{apath}: annotations[{i}]"
        _require(ann, ("question_id", "image_id", "answer_type", "multiple_choice_answer", "answers"), where)
        if ann["answer_type"] not in ANSWER_TYPES:
            raise VQAInputError(f"{where}: answer_type {ann['answer_type']!r}, expected one of {', '.join(ANSWER_TYPES)}")
        answers = ann["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers):
            raise VQAInputError(f"{where}: 'answers' must be a non-empty list of {{\"answer\": str, ...}} objects")
        by_id[ann["question_id"]] = ann
    records: list[dict[str, Any]] = []
    seen: set[int] = set()
    unannotated: list[int] = []
    for i, q in enumerate(questions):
        _require(q, ("question_id", "image_id", "question"), f"{qpath}: questions[{i}]")
        qid = q["question_id"]
        if qid in seen:
            raise VQAInputError(f"{qpath}: question_id {qid} appears twice")
        seen.add(qid)
        ann = by_id.get(qid)
        if ann is None:
            unannotated.append(qid)
            continue
        if ann["image_id"] != q["image_id"]:
            raise VQAInputError(f"{apath}: question_id {qid} has image_id {ann['image_id']}, "
                                f"but {qpath} says {q['image_id']}")
        records.append({
            "question_id": int(qid), "image_id": int(q["image_id"]), "question": q["question"],
            "question_type": ann.get("question_type", ""), "answer_type": ann["answer_type"],
            "multiple_choice_answer": ann["multiple_choice_answer"],
            "answers": [a["answer"] for a in ann["answers"]],
        })
    if unannotated:
        raise VQAInputError(f"{qpath}: {len(unannotated)} questions have no annotation in {apath} "
                            f"(e.g. question_id {_first(unannotated)}); are these two files of the same split?")
    return records


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise VQAInputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise VQAInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise VQAInputError(f"{path}: not a UTF-8 JSON file") from None
    except OSError as exc:
        raise VQAInputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _json_list(path: Path, key: str, official_name: str) -> list[dict[str, Any]]:
    data = _read_json(path)
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise VQAInputError(f"{path}: expected a JSON object with a {key!r} list (like the official {official_name})")
    return items


def _require(item: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(item, dict):
        raise VQAInputError(f"{where}: expected an object, got {type(item).__name__}")
    for key in keys:
        if key not in item:
            raise VQAInputError(f"{where}: missing {key!r}")


def _first(values: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


# ------------------------------------------------------------------- prepare


def prepare_vqa(
    out_dir: str | Path,
    *,
    splits: Mapping[str, tuple[str | Path, str | Path]],
    feature_tsvs: Sequence[str | Path],
    ans2label: str | Path | None = None,
    min_count: int = 9,
    num_boxes: int = 36,
    limit: int | None = None,
    vocab_splits: Sequence[str] = ("train",),
    overwrite: bool = False,
) -> Path:
    """Convert official VQA v2 files and LXMERT feature TSVs into a store at ``out_dir``.

    ``splits`` maps a split name to its (questions JSON, annotations JSON).
    The answer vocabulary is ``ans2label`` or, without it, built from the full
    annotations of ``vocab_splits`` with :func:`build_answer_vocab`.
    ``limit`` keeps the first N questions of each split (a quick small store);
    only images some kept question refers to are stored. Questions whose image
    has no TSV row are dropped and counted in the manifest. An existing store
    is replaced only with ``overwrite``; an interrupted prepare is simply
    redone. Returns the store directory.
    """
    out = Path(out_dir)
    _check_arguments(splits, feature_tsvs, ans2label, min_count, num_boxes, limit, vocab_splits)
    _check_out_dir(out, overwrite)

    records = {name: read_vqa_split(q, a) for name, (q, a) in splits.items()}
    if ans2label is not None:
        answers = load_answer_vocab(ans2label)
        vocab_source: dict[str, Any] = {"source": "ans2label", "ans2label": str(Path(ans2label).resolve())}
    else:
        answers = build_answer_vocab((r for name in vocab_splits for r in records[name]), min_count)
        if not answers:
            raise VQAInputError(f"no answer occurs {min_count} or more times in split(s) {', '.join(vocab_splits)}; "
                                f"lower --min-count or pass --ans2label")
        vocab_source = {"source": "min_count", "min_count": min_count, "vocab_splits": list(vocab_splits)}
    if limit is not None:
        records = {name: recs[:limit] for name, recs in records.items()}
    needed = list(dict.fromkeys(r["image_id"] for recs in records.values() for r in recs))

    _claim_out_dir(out)
    rows, feat_dim = _write_features(out, needed, [Path(p) for p in feature_tsvs], num_boxes)

    label_of = {a: i for i, a in enumerate(answers)}
    split_info = {name: _write_split(out / name, name, recs, rows, label_of, splits[name]) for name, recs in records.items()}
    _write_json(out / ANSWERS_FILE, answers)
    _write_json(out / IMAGES_FILE, {str(image_id): row for image_id, row in rows.items()})
    manifest = {
        "format": STORE_FORMAT, "version": STORE_VERSION,
        "num_images": len(rows), "num_boxes": num_boxes, "feat_dim": feat_dim,
        "features": FEATURES_FILE, "features_dtype": "float16", "boxes": BOXES_FILE, "images": IMAGES_FILE,
        "answers": {"file": ANSWERS_FILE, "count": len(answers), **vocab_source},
        "splits": split_info,
        "feature_sources": [str(Path(p).resolve()) for p in feature_tsvs],
        "images_without_features": len(needed) - len(rows),
        "limit": limit,
    }
    (out / _IN_PROGRESS_FILE).unlink(missing_ok=True)
    _write_json(out / MANIFEST_FILE, manifest)  # last: from here on the store looks complete
    return out


def _check_arguments(splits: Mapping[str, Any], feature_tsvs: Sequence[Any], ans2label: Any, min_count: int,
                     num_boxes: int, limit: int | None, vocab_splits: Sequence[str]) -> None:
    if not splits:
        raise VQAInputError("no splits given (--split NAME QUESTIONS_JSON ANNOTATIONS_JSON)")
    for name in splits:
        if not _SPLIT_NAME.fullmatch(name):
            raise VQAInputError(f"split name {name!r}: use letters, digits, '_', '-' or '.' (it becomes a directory)")
    if not feature_tsvs:
        raise VQAInputError("no feature TSVs given (--features TSV [TSV ...])")
    if num_boxes < 1:
        raise VQAInputError(f"num_boxes is {num_boxes}, expected at least 1")
    if limit is not None and limit < 1:
        raise VQAInputError(f"limit is {limit}, expected at least 1")
    if ans2label is None:
        if min_count < 1:
            raise VQAInputError(f"min_count is {min_count}, expected at least 1")
        unknown = [s for s in vocab_splits if s not in splits]
        if unknown or not vocab_splits:
            raise VQAInputError(f"the answer vocabulary is built from split(s) {', '.join(vocab_splits) or '(none)'}, "
                                f"but the splits are {', '.join(splits)}; pass --ans2label or --vocab-split NAME")
    files = [p for pair in splits.values() for p in pair] + list(feature_tsvs) + ([ans2label] if ans2label else [])
    for path in map(Path, files):
        if not path.is_file():
            raise VQAInputError(f"{path}: " + ("is a directory, expected a file" if path.is_dir() else "file not found"))


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise VQAStoreError(f"{out}: exists and is not a directory")
    if not out.is_dir():
        return
    if (out / MANIFEST_FILE).exists():
        if not overwrite:
            raise VQAStoreError(f"{out}: already holds a prepared store; choose another directory or pass --overwrite")
    elif any(out.iterdir()) and not (out / _IN_PROGRESS_FILE).exists():
        raise VQAStoreError(f"{out}: exists, is not empty and is not a VQA store; choose an empty or new directory")


def _claim_out_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / _IN_PROGRESS_FILE).write_text("lxsweep prepare-vqa is writing this store; manifest.json appears when done\n")
    # An old store being overwritten must stop looking complete before any file changes.
    (out / MANIFEST_FILE).unlink(missing_ok=True)


def _write_features(out: Path, needed: list[int], tsvs: list[Path], num_boxes: int) -> tuple[dict[int, int], int]:
    """Stream the needed images' TSV rows into features.f16.npy and boxes.npy; image_id -> row, feat_dim."""
    from tqdm import tqdm

    wanted = set(needed)
    rows: dict[int, int] = {}
    seen_at: dict[int, str] = {}
    boxes = np.zeros((len(needed), num_boxes, 4), dtype=np.float32)  # 70 MB for all of COCO: fine in RAM
    features: np.memmap | None = None
    feat_dim = 0
    progress = tqdm(total=len(needed), unit="img", desc="features", disable=None)
    try:
        for tsv in tsvs:
            if len(rows) == len(needed):
                break  # everything found: the rest of the TSVs need not be read
            for line, fields in _read_tsv_fields(tsv):
                try:
                    image_id = image_id_from_img_id(fields[0])
                except ValueError as exc:
                    raise VQAInputError(f"{tsv}, line {line}: {exc}") from None
                if image_id not in wanted:
                    continue
                where = f"{tsv}, line {line}"
                if image_id in rows:
                    raise VQAInputError(f"{where}: image {fields[0]} was already read from {seen_at[image_id]}")
                row = _decode_at(tsv, line, fields)
                if row.num_boxes > num_boxes:
                    raise VQAInputError(f"{where}: image {row.img_id} has {row.num_boxes} boxes, more than "
                                        f"num_boxes={num_boxes} (raise --num-boxes)")
                if features is None:
                    feat_dim = row.features.shape[1]
                    features = np.lib.format.open_memmap(out / FEATURES_FILE, mode="w+", dtype=np.float16,
                                                         shape=(len(needed), num_boxes, feat_dim))
                elif row.features.shape[1] != feat_dim:
                    raise VQAInputError(f"{where}: image {row.img_id} has {row.features.shape[1]}-dim features, "
                                        f"earlier images {feat_dim}")
                with np.errstate(over="ignore"):
                    half = row.features.astype(np.float16)
                if not np.isfinite(half).all():
                    raise VQAInputError(f"{where}: image {row.img_id} has features that are not finite in float16 "
                                        f"(|value| > 65504 or NaN)")
                r = len(rows)
                features[r, :row.num_boxes] = half
                features[r, row.num_boxes:] = 0
                boxes[r, :row.num_boxes] = normalize_boxes(row.boxes, row.img_h, row.img_w)
                rows[image_id] = r
                seen_at[image_id] = where
                progress.update()
                if len(rows) == len(needed):
                    break
    finally:
        progress.close()
        if features is not None:
            features.flush()
            del features
    if not rows:
        example = needed[0] if needed else 0
        raise VQAInputError(f"none of the {len(needed)} images the questions refer to has a row in "
                            f"{', '.join(map(str, tsvs))} (e.g. image_id {example}, img_id like "
                            f"COCO_val2014_{example:012d}); are these the right feature files?")
    if len(rows) < len(needed):
        _truncate_npy_rows(out / FEATURES_FILE, len(rows))
    np.save(out / BOXES_FILE, boxes[:len(rows)])
    return rows, feat_dim


def _truncate_npy_rows(path: Path, num_rows: int) -> None:
    """Shrink an .npy file's first axis in place (rewrite its header, cut the tail).

    numpy pads the header so the first dimension can grow to 21 digits without
    moving the data, so the new header has the same length; checked anyway.
    """
    with open(path, "r+b") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
        data_offset = handle.tell()
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order,
                  "shape": (num_rows, *shape[1:])}
        handle.seek(0)
        if version == (1, 0):
            np.lib.format.write_array_header_1_0(handle, header)
        else:
            np.lib.format.write_array_header_2_0(handle, header)
        if handle.tell() != data_offset:
            raise RuntimeError(f"{path}: the rewritten .npy header moved the data; the file is corrupt, run prepare again")
        handle.truncate(data_offset + num_rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def _write_split(directory: Path, name: str, records: list[dict[str, Any]], rows: Mapping[int, int],
                 label_of: Mapping[str, int], sources: tuple[Any, Any]) -> dict[str, Any]:
    kept = [r for r in records if r["image_id"] in rows]
    dropped = len(records) - len(kept)
    if not kept:
        raise VQAInputError(f"split {name}: none of its {len(records)} questions has an image in the feature TSVs; "
                            f"is its TSV missing from --features?")
    if dropped:
        print(f"warning: split {name}: dropped {dropped} of {len(records)} questions whose image has no row "
              f"in the feature TSVs", file=sys.stderr)
    labels, scores = pad_targets([soft_targets(r["answers"], label_of) for r in kept])
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "question_ids.npy", np.array([r["question_id"] for r in kept], dtype=np.int64))
    np.save(directory / "image_index.npy", np.array([rows[r["image_id"]] for r in kept], dtype=np.int64))
    np.save(directory / "target_labels.npy", labels)
    np.save(directory / "target_scores.npy", scores)
    with open(directory / QUESTIONS_FILE, "w", encoding="utf-8") as handle:
        for r in kept:
            handle.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {
        "questions": len(kept),
        "dropped_without_features": dropped,
        "without_target": int((labels[:, 0] < 0).sum()),  # no annotator answer is in the vocabulary
        "target_width": labels.shape[1],
        "answer_types": dict(sorted(Counter(r["answer_type"] for r in kept).items())),
        "source": {"questions": str(Path(sources[0]).resolve()), "annotations": str(Path(sources[1]).resolve())},
    }


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON via a temp file + rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------- load


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the store at ``path``, or a :class:`VQAStoreError` saying what is wrong."""
    store = Path(path)
    if not store.exists():
        raise VQAStoreError(f"{store}: no such directory (make the store with `lxsweep prepare-vqa`)")
    if not store.is_dir():
        raise VQAStoreError(f"{store}: not a directory (a VQA store is the directory `lxsweep prepare-vqa --out` made)")
    manifest_path = store / MANIFEST_FILE
    if not manifest_path.exists():
        if (store / _IN_PROGRESS_FILE).exists():
            raise VQAStoreError(f"{store}: incomplete store (no {MANIFEST_FILE}): `lxsweep prepare-vqa` was "
                                f"interrupted or failed; run it again")
        raise VQAStoreError(f"{store}: no {MANIFEST_FILE}; not a store made by `lxsweep prepare-vqa`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VQAStoreError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise VQAStoreError(f"{manifest_path}: not a {STORE_FORMAT} manifest")
    if manifest.get("version") != STORE_VERSION:
        raise VQAStoreError(f"{manifest_path}: store format version {manifest.get('version')}, this lxsweep reads "
                            f"version {STORE_VERSION}; run `lxsweep prepare-vqa` again")
    return manifest


def load_vqa_store(path: str | Path, train_split: str = "train", valid_split: str = "minival",
                   mmap: bool = True) -> VQADataset:
    """Open a store made by :func:`prepare_vqa` as a VQADataset.

    With ``mmap`` the features and boxes are read-only ``np.memmap`` views
    shared by both splits: resident memory does not grow with the number of
    images, and processes on one node share the page cache.
    """
    store = Path(path)
    manifest = read_manifest(store)
    for split in (train_split, valid_split):
        if split not in manifest["splits"]:
            raise VQAStoreError(f"{store}: no split {split!r}; available: {', '.join(sorted(manifest['splits']))}")
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
    train = _load_split(store, train_split, manifest, features, boxes)
    valid = train if valid_split == train_split else _load_split(store, valid_split, manifest, features, boxes)
    return VQADataset(train=train, valid=valid, answers=answers)


def _load_npy(path: Path, mmap_mode: str | None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise VQAStoreError(f"{path}: missing from the store; run `lxsweep prepare-vqa` again") from None
    except (OSError, ValueError) as exc:
        raise VQAStoreError(f"{path}: unreadable ({exc}); run `lxsweep prepare-vqa` again") from None


def _load_split(store: Path, name: str, manifest: Mapping[str, Any], features: np.ndarray, boxes: np.ndarray) -> VQASplit:
    directory = store / name
    question_ids = _load_npy(directory / "question_ids.npy", None)
    image_index = _load_npy(directory / "image_index.npy", None)
    labels = _load_npy(directory / "target_labels.npy", None)
    scores = _load_npy(directory / "target_scores.npy", None)
    try:
        with open(directory / QUESTIONS_FILE, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle]
    except FileNotFoundError:
        raise VQAStoreError(f"{directory / QUESTIONS_FILE}: missing from the store; run `lxsweep prepare-vqa` again") from None
    except json.JSONDecodeError as exc:
        raise VQAStoreError(f"{directory / QUESTIONS_FILE}: unreadable ({exc})") from None
    n = manifest["splits"][name]["questions"]
    sizes = {"question_ids": len(question_ids), "image_index": len(image_index), "target_labels": len(labels),
             "target_scores": len(scores), QUESTIONS_FILE: len(records)}
    if any(size != n for size in sizes.values()) or labels.shape != scores.shape:
        raise VQAStoreError(f"{directory}: row counts {sizes} disagree with the manifest's {n}; run `lxsweep prepare-vqa` again")
    if n and (image_index.min() < 0 or image_index.max() >= len(features)):
        raise VQAStoreError(f"{directory / 'image_index.npy'}: rows outside the {len(features)} stored images")
    answer_types = [r["answer_type"] for r in records]
    return VQASplit(
        question_ids=question_ids, questions=[r["question"] for r in records], image_index=image_index,
        features=features, boxes=boxes, answers=[r["answers"] for r in records], answer_types=answer_types,
        question_kinds=list(answer_types),  # VQA v2's finest standard category is the answer type
        target_labels=labels, target_scores=scores,
    )


# ----------------------------------------------------------------------- CLI

PREPARE_DESCRIPTION = """\
Convert official VQA v2 question/annotation JSON files and LXMERT's Faster
R-CNN feature TSVs into a memory-mapped store (float16 features) that
`data.source: vqa` experiments read."""
PREPARE_EPILOG = """\
example:
  lxsweep prepare-vqa --out data/vqa \\
    --split train v2_OpenEnded_mscoco_train2014_questions.json v2_mscoco_train2014_annotations.json \\
    --split minival v2_OpenEnded_mscoco_val2014_questions.json v2_mscoco_val2014_annotations.json \\
    --features train2014_obj36.tsv val2014_obj36.tsv --ans2label trainval_ans2label.json

Split names are free: an experiment's data.train_split / data.valid_split
(default train / minival) choose two of them. Without --ans2label the answer
vocabulary is every normalised multiple_choice_answer of the --vocab-split
splits (default: train) given at least --min-count times. Add --limit 1000
for a quick small store.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_prepare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add prepare-vqa's options to ``parser`` (its own or the main CLI's subcommand parser)."""
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="store directory to write")
    parser.add_argument("--split", required=True, action="append", nargs=3, dest="splits",
                        metavar=("NAME", "QUESTIONS_JSON", "ANNOTATIONS_JSON"),
                        help="a split: its name and official VQA v2 questions and annotations files (repeat per split)")
    parser.add_argument("--features", required=True, nargs="+", type=Path, metavar="TSV",
                        help="LXMERT feature TSVs (e.g. train2014_obj36.tsv val2014_obj36.tsv)")
    parser.add_argument("--ans2label", type=Path, metavar="FILE",
                        help="LXMERT's trainval_ans2label.json; default: build the vocabulary from training answers")
    parser.add_argument("--min-count", type=_positive_int, default=9, metavar="N",
                        help="without --ans2label: keep answers given at least N times (default 9)")
    parser.add_argument("--vocab-split", action="append", dest="vocab_splits", metavar="NAME",
                        help="without --ans2label: split(s) the vocabulary is built from (default: train)")
    parser.add_argument("--num-boxes", type=_positive_int, default=36, metavar="N",
                        help="regions per image; images with fewer are zero-padded (default 36)")
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="keep only the first N questions of each split")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    return parser


def build_prepare_parser(prog: str = "lxsweep prepare-vqa") -> argparse.ArgumentParser:
    """The stand-alone parser of ``lxsweep prepare-vqa``."""
    parser = argparse.ArgumentParser(prog=prog, description=PREPARE_DESCRIPTION, epilog=PREPARE_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_prepare_arguments(parser)


def run_prepare(args: argparse.Namespace) -> int:
    """Run prepare-vqa from parsed arguments; print one error line and return 2 on bad input."""
    try:
        splits: dict[str, tuple[Path, Path]] = {}
        for name, questions, annotations in args.splits:
            if name in splits:
                raise VQAInputError(f"--split {name} is given twice")
            splits[name] = (Path(questions), Path(annotations))
        out = prepare_vqa(args.out, splits=splits, feature_tsvs=args.features, ans2label=args.ans2label,
                          min_count=args.min_count, num_boxes=args.num_boxes, limit=args.limit,
                          vocab_splits=tuple(args.vocab_splits or ("train",)), overwrite=args.overwrite)
        manifest = read_manifest(out)
    except (VQAInputError, VQAStoreError) as exc:
        print(f"lxsweep prepare-vqa: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. disk full while writing the store
        print(f"lxsweep prepare-vqa: error: {exc}", file=sys.stderr)
        return 2
    split_text = ", ".join(f"{name} {info['questions']} questions"
                           + (f" ({info['dropped_without_features']} dropped)" if info["dropped_without_features"] else "")
                           for name, info in manifest["splits"].items())
    print(f"wrote {out}: {manifest['num_images']} images x {manifest['num_boxes']} boxes x {manifest['feat_dim']} "
          f"(float16), {manifest['answers']['count']} answers; {split_text}")
    return 0


def prepare_vqa_main(argv: list[str] | None = None) -> int:
    """``lxsweep prepare-vqa`` as a function: parse ``argv`` and run; returns the exit code."""
    parser = build_prepare_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed by argparse)
        return int(exc.code or 0)
    return run_prepare(args)
