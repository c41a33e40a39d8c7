"""``lxsweep prepare-vqa``: official VQA v2 JSON + LXMERT feature TSVs -> a prepared store.

One pass over the TSVs (only the images some question refers to are kept),
features converted to float16 into a memory-mappable ``.npy``; the layout is
described in :mod:`lxsweep.data.prepared`, which opens the result.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lxsweep.data import VQAInputError, VQAStoreError, pad_targets, soft_targets
from lxsweep.data.prepared import (ANSWERS_FILE, ATTRS_FILE, BOXES_FILE, COLUMNS, FEATURES_FILE, IMAGES_FILE,
                                   MANIFEST_FILE, OBJECTS_FILE, QUESTIONS_FILE, STORE_FORMAT, STORE_VERSION,
                                   encode_column)
from lxsweep.data.tsv import decode_tsv_row, image_id_from_img_id, normalize_boxes, read_tsv_fields
from lxsweep.data.vqa_json import (ANSWERS_PER_QUESTION, build_answer_vocab, load_answer_vocab, read_vqa_split,
                                   write_json)
from lxsweep.staging import sha256_file

_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")



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
    answers_per_question: int = ANSWERS_PER_QUESTION,
) -> Path:
    """Convert official VQA v2 files and LXMERT feature TSVs into a store at ``out_dir``.

    ``splits`` maps a split name to its (questions JSON, annotations JSON);
    annotations ``None`` is a questions-only (test) split, for predictions.
    The answer vocabulary is ``ans2label`` or, without it, built from the full
    annotations of ``vocab_splits`` with :func:`build_answer_vocab`.
    ``limit`` keeps the first N questions of each split (a quick small store);
    only images some kept question refers to are stored. Questions whose image
    has no TSV row are dropped and counted in the manifest. An existing store
    is replaced only with ``overwrite``, and never left broken: the new
    store is built in a temporary directory beside ``out_dir`` and swapped in
    only when complete. Returns the store directory.
    """
    out = Path(out_dir)
    _check_arguments(splits, feature_tsvs, ans2label, min_count, num_boxes, limit, vocab_splits)
    _check_out_dir(out, overwrite)
    records = {name: read_vqa_split(q, a, answers_per_question) for name, (q, a) in splits.items()}
    if ans2label is not None:
        answers = load_answer_vocab(ans2label)
        vocab_source: dict[str, Any] = {"source": "ans2label", "ans2label": str(Path(ans2label).resolve())}
    else:
        answers = build_answer_vocab((r for name in vocab_splits for r in records[name]), min_count)
        if not answers:
            raise VQAInputError(f"no answer occurs {min_count} or more times in split(s) {', '.join(vocab_splits)} "
                                f"— lower --min-count or pass --ans2label")
        vocab_source = {"source": "min_count", "min_count": min_count, "vocab_splits": list(vocab_splits)}
    if limit is not None:
        records = {name: recs[:limit] for name, recs in records.items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside out_dir (same filesystem, so the final rename is atomic) and swapped in only when
    # complete: a failure, even with overwrite, leaves the previous store exactly as it was.
    build = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.prepare-"))
    try:
        _build_store(build, records, answers, {"answers": vocab_source, "limit": limit, "sources": splits},
                     [Path(p) for p in feature_tsvs], num_boxes)
        _swap_in(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out


def _build_store(out: Path, records: Mapping[str, list[dict[str, Any]]], answers: list[str], about: Mapping[str, Any],
                 feature_tsvs: list[Path], num_boxes: int) -> None:
    """Write a complete store into the empty directory ``out``, the manifest last.

    ``about`` holds what the manifest records of the inputs: ``answers`` (the
    vocabulary's source), ``limit`` and ``sources`` (split -> its two JSON files).
    """
    needed = list(dict.fromkeys(r["image_id"] for recs in records.values() for r in recs))
    rows, feat_dim = _write_features(out, needed, feature_tsvs, num_boxes)

    label_of = {a: i for i, a in enumerate(answers)}
    split_info = {name: _write_split(out / name, name, recs, rows, label_of, about["sources"][name]) for name, recs in records.items()}
    write_json(out / ANSWERS_FILE, answers, indent=1)
    write_json(out / IMAGES_FILE, {str(image_id): row for image_id, row in rows.items()}, indent=1)
    manifest = {
        "format": STORE_FORMAT, "version": STORE_VERSION,
        "num_images": len(rows), "num_boxes": num_boxes, "feat_dim": feat_dim,
        "features": FEATURES_FILE, "features_dtype": "float16", "boxes": BOXES_FILE, "images": IMAGES_FILE,
        "objects_id": OBJECTS_FILE, "attrs_id": ATTRS_FILE,
        "answers": {"file": ANSWERS_FILE, "count": len(answers), **about["answers"]},
        "splits": split_info,
        "feature_sources": [str(Path(p).resolve()) for p in feature_tsvs],
        "images_without_features": len(needed) - len(rows),
        "limit": about["limit"],
        # every file with its size and checksum: what a node-local copy must hold (lxsweep.staging)
        "files": {f.relative_to(out).as_posix(): {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
                  for f in sorted(out.rglob("*")) if f.is_file()},
    }
    write_json(out / MANIFEST_FILE, manifest, indent=1)  # last: from here on the store looks complete


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
    if ans2label is None:
        unannotated = [s for s in vocab_splits if s in splits and splits[s][1] is None]
        if unannotated:
            raise VQAInputError(f"split(s) {', '.join(unannotated)} have no annotations to build the answer "
                                f"vocabulary from; pass --ans2label or --vocab-split NAME of an annotated split")
    files = [p for pair in splits.values() for p in pair if p is not None] + list(feature_tsvs) + ([ans2label] if ans2label else [])
    for path in map(Path, files):
        if not path.is_file():
            raise VQAInputError(f"{path}: " + ("is a directory, expected a file" if path.is_dir() else "file not found"))
    seen: dict[Path, str] = {}
    for what, path in ([("a feature TSV", p) for p in feature_tsvs]
                       + [(f"split {name}'s questions", q) for name, (q, _) in splits.items()]):
        real = Path(path).resolve()
        if real in seen:
            raise VQAInputError(f"{path}: given twice (as {seen[real]} and as {what}) — pass each feature TSV once "
                                f"and give every split its own questions file (the same questions in two splits "
                                f"would evaluate on the training questions)")
        seen[real] = what


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise VQAStoreError(f"{out}: exists and is not a directory — choose a new or empty directory for --out")
    if not out.is_dir():
        return
    if (out / MANIFEST_FILE).exists():
        if not overwrite:
            raise VQAStoreError(f"{out}: already holds a prepared store — choose another directory or pass --overwrite")
    elif any(out.iterdir()):
        raise VQAStoreError(f"{out}: exists, is not empty and is not a VQA store — choose an empty or new directory")


def _swap_in(build: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty, or an old store) by the complete store ``build``."""
    if not out.exists():
        os.rename(build, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, old / "store")
    try:
        os.rename(build, out)
    except BaseException:
        os.rename(old / "store", out)  # put the previous store back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_features(out: Path, needed: list[int], tsvs: list[Path], num_boxes: int) -> tuple[dict[int, int], int]:
    """Stream the needed images' TSV rows into features.f16.npy and boxes.npy; image_id -> row, feat_dim."""
    from tqdm import tqdm

    wanted = set(needed)
    rows: dict[int, int] = {}
    seen_at: dict[int, str] = {}
    boxes = np.zeros((len(needed), num_boxes, 4), dtype=np.float32)  # 70 MB for all of COCO: fine in RAM
    labels = {name: np.full((len(needed), num_boxes), -1, dtype=np.int64) for name in ("objects_id", "attrs_id")}
    features: np.memmap | None = None
    feat_dim = 0
    progress = tqdm(total=len(needed), unit="img", desc="features", disable=None)
    try:
        for tsv in tsvs:
            if len(rows) == len(needed):
                break  # everything found: the rest of the TSVs need not be read
            for line, fields in read_tsv_fields(tsv):
                try:
                    image_id = image_id_from_img_id(fields[0])
                except ValueError as exc:
                    raise VQAInputError(f"{tsv}, line {line}: {exc}") from None
                if image_id not in wanted:
                    continue
                where = f"{tsv}, line {line}"
                if image_id in rows:
                    raise VQAInputError(f"{where}: image {fields[0]} was already read from {seen_at[image_id]}")
                row = decode_tsv_row(tsv, line, fields)
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
                labels["objects_id"][r, :row.num_boxes] = row.objects_id
                labels["attrs_id"][r, :row.num_boxes] = row.attrs_id
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
    np.save(out / OBJECTS_FILE, labels["objects_id"][:len(rows)])
    np.save(out / ATTRS_FILE, labels["attrs_id"][:len(rows)])
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
            raise RuntimeError(f"{path}: the rewritten .npy header moved the data, so the file is corrupt — run `lxsweep prepare-vqa` again")
        handle.truncate(data_offset + num_rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def write_question_columns(directory: Path, questions: list[str], answers: list[list[str]],
                           answer_types: list[str], question_types: list[str]) -> None:
    """A split's question columns in the store's version-3 layout (lxsweep/data/prepared.py)."""
    text: dict[str, Any] = {"question": questions}
    for (column, (file, ndim)), rows in zip(COLUMNS.items(), (answers, answer_types, question_types)):
        text[column], codes = encode_column(rows, nested=ndim == 2)
        np.save(directory / file, codes)
    (directory / QUESTIONS_FILE).write_text(json.dumps(text, ensure_ascii=False), encoding="utf-8")


def _write_split(directory: Path, name: str, records: list[dict[str, Any]], rows: Mapping[int, int],
                 label_of: Mapping[str, int], sources: tuple[Any, Any]) -> dict[str, Any]:
    kept = [r for r in records if r["image_id"] in rows]
    dropped = len(records) - len(kept)
    if not kept:
        raise VQAInputError(f"split {name}: none of its {len(records)} questions has an image in the feature TSVs "
                            f"— add the TSV holding its images to --features")
    if dropped:
        print(f"warning: split {name}: dropped {dropped} of {len(records)} questions whose image has no row "
              f"in the feature TSVs", file=sys.stderr)
    labels, scores = pad_targets([soft_targets(r["answers"], label_of) for r in kept])
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "question_ids.npy", np.array([r["question_id"] for r in kept], dtype=np.int64))
    np.save(directory / "image_index.npy", np.array([rows[r["image_id"]] for r in kept], dtype=np.int64))
    np.save(directory / "target_labels.npy", labels)
    np.save(directory / "target_scores.npy", scores)
    write_question_columns(directory, [r["question"] for r in kept], [r["answers"] for r in kept],
                           [r["answer_type"] for r in kept],
                           # the official evaluator's perQuestionType; files without one fall back to the answer type
                           [r.get("question_type") or r["answer_type"] for r in kept])
    return {
        "questions": len(kept),
        "dropped_without_features": dropped,
        "without_target": int((labels[:, 0] < 0).sum()),  # no annotator answer is in the vocabulary
        "target_width": labels.shape[1],
        "answer_types": dict(sorted(Counter(r["answer_type"] for r in kept).items())),
        "source": {"questions": str(Path(sources[0]).resolve()),
                   "annotations": str(Path(sources[1]).resolve()) if sources[1] is not None else None},
        "annotated": sources[1] is not None,
    }
