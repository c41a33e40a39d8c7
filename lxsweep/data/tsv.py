"""LXMERT feature TSVs: one image per row, encoded and decoded.

The layout is LXMERT's (``src/utils.py load_obj_tsv``) as bottom-up
attention's ``generate_tsv.py`` writes it: ten tab-separated fields per image,
no header, arrays as base64 of raw little-endian buffers (ids int64,
confidences float32, boxes float32 [n, 4] in pixels, features float32 [n, d]).
:func:`decode_feature_row` and :func:`encode_feature_row` are inverses.
"""
from __future__ import annotations

import base64
import binascii
import csv
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lxsweep.data import VQAInputError

FIELDNAMES = ("img_id", "img_h", "img_w", "objects_id", "objects_conf",
              "attrs_id", "attrs_conf", "num_boxes", "boxes", "features")
_TRAILING_NUMBER = re.compile(r"(\d+)$")
# (field, dtype, values per box; None = feature width, inferred)
_ARRAY_FIELDS = (("objects_id", "<i8", 1), ("objects_conf", "<f4", 1), ("attrs_id", "<i8", 1),
                 ("attrs_conf", "<f4", 1), ("boxes", "<f4", 4), ("features", "<f4", None))



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
    for line, fields in read_tsv_fields(path):
        yield decode_tsv_row(path, line, fields)


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
        raw = base64.b64decode(text, validate=True)  # else characters outside base64 are dropped silently
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image {img_id}: {name} is not valid base64 ({exc}) — regenerate the TSV row") from None
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


def read_tsv_fields(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty row, the field count checked; errors name file and line."""
    path = Path(path)
    _raise_csv_field_limit()
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise VQAInputError(f"{path}: cannot open feature TSV ({exc.strerror or exc}) — check the --features path") from None

    def lines() -> Iterator[str]:
        # Decoded line by line, so a bad byte is reported at its own line (a text-mode file decodes
        # ahead in chunks, and csv's line count then names an earlier line).
        for number, raw in enumerate(handle, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise VQAInputError(f"{path}, line {number}: byte {raw[exc.start]:#04x} at column {exc.start + 1} is "
                                    f"not UTF-8 text — the file is corrupt; regenerate or re-download it") from None

    with handle:
        reader = csv.reader(lines(), delimiter="\t")
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise VQAInputError(f"{path}, line {reader.line_num}: not a readable TSV row ({exc}) — regenerate the file") from None
            if not fields:
                continue
            if len(fields) != len(FIELDNAMES):
                raise VQAInputError(f"{path}, line {reader.line_num}: {len(fields)} tab-separated fields, expected "
                                    f"{len(FIELDNAMES)} ({', '.join(FIELDNAMES)}) — is this an LXMERT feature TSV?")
            yield reader.line_num, fields


def decode_tsv_row(path: Path, line: int, fields: list[str]) -> FeatureRow:
    """:func:`decode_feature_row` whose errors are :class:`VQAInputError` naming ``path`` and ``line``."""
    try:
        return decode_feature_row(fields)
    except ValueError as exc:
        raise VQAInputError(f"{path}, line {line}: {exc}") from None


def make_img_id(prefix: str, image_id: int) -> str:
    """A TSV img_id in COCO's style: ``make_img_id("COCO_val2014", 42) == "COCO_val2014_000000000042"``."""
    return f"{prefix}_{image_id:012d}"


def encode_feature_row(img_id: str, img_h: int, img_w: int, boxes: np.ndarray, features: np.ndarray, *,
                       objects_id: np.ndarray | None = None, objects_conf: np.ndarray | None = None,
                       attrs_id: np.ndarray | None = None, attrs_conf: np.ndarray | None = None) -> list[str]:
    """One image as the ten fields of an LXMERT feature TSV row (the inverse of :func:`decode_feature_row`).

    ``boxes`` are float32 [n, 4] x1, y1, x2, y2 in pixels, ``features``
    float32 [n, d]; missing object/attribute arrays are written as zeros.
    """
    n = len(boxes)
    zeros_i, zeros_f = np.zeros(n, dtype="<i8"), np.zeros(n, dtype="<f4")

    def b64(array: np.ndarray | None, dtype: str, default: np.ndarray) -> str:
        data = default if array is None else np.ascontiguousarray(array, dtype=dtype)
        return base64.b64encode(data.tobytes()).decode("ascii")

    return [img_id, str(img_h), str(img_w),
            b64(objects_id, "<i8", zeros_i), b64(objects_conf, "<f4", zeros_f),
            b64(attrs_id, "<i8", zeros_i), b64(attrs_conf, "<f4", zeros_f),
            str(n), b64(boxes, "<f4", zeros_f), b64(features, "<f4", zeros_f)]


def write_feature_tsv(path: str | Path, rows: Iterable[Sequence[str]]) -> Path:
    """Write TSV rows the way bottom-up-attention's ``generate_tsv.py`` does (csv, tab, CRLF)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="ascii") as handle:
        writer = csv.writer(handle, delimiter="\t")
        for row in rows:
            if len(row) != len(FIELDNAMES):
                raise ValueError(f"a feature row has {len(row)} fields, expected {len(FIELDNAMES)}")
            writer.writerow(row)
    return path
