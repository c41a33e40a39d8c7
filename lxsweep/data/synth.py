"""``lxsweep synth``: the synthetic task written out as a real VQA v2 dataset.

The embedded default takes the path real data takes: these files go through
``lxsweep prepare-vqa`` into a prepared store, and anyone can score a
predictor on them with the official tools (``lxsweep vqa-eval``). For each
split of :data:`SPLITS` the directory holds

* ``v2_OpenEnded_synthetic_<split>_questions.json`` and
  ``v2_synthetic_<split>_annotations.json``: the official question and
  annotation JSON (ten annotators per question, ``question_type`` = the
  generator's question kind, ``answer_type``);
* ``<split>_obj<num_boxes>.tsv``: LXMERT's feature TSV layout, boxes in pixels
  of a :data:`IMAGE_WIDTH` x :data:`IMAGE_HEIGHT` image (prepare divides them
  back), ``objects_id`` / ``attrs_id`` the scene's per-box classes (ids into
  ``objects_vocab.txt`` / ``attributes_vocab.txt``, one name per line, as
  bottom-up attention ships them), confidences 1.0;

plus ``trainval_ans2label.json`` (every answer of the training splits) and a
``README.txt`` with the exact ``lxsweep prepare-vqa`` command. Image and
question ids are unique across splits.
"""
from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lxsweep.config import SyntheticConfig
from lxsweep.data.prepare import prepare_vqa
from lxsweep.data.synthetic import ATTRIBUTE_NAMES, OBJECT_NAMES, generate_split
from lxsweep.data.tsv import encode_feature_row, make_img_id, write_feature_tsv
from lxsweep.data.vqa_json import annotation_entry, write_ans2label, write_official_split
from lxsweep.metric import normalize_answer

# split -> (number of questions, seed of its scenes, question kinds, attributes asked). Seeds come from the task's seed and the
# split's role, so pretraining, fine-tuning, validation and test scenes never coincide. The test split is
# written only when `test_questions` > 0 (a split of 0 questions is skipped).
_Of = Callable[[SyntheticConfig], Any]
SPLITS: dict[str, tuple[_Of, _Of, _Of, _Of]] = {
    "pretrain": (lambda c: c.pretrain_questions, lambda c: c.seed * 10 + 3, lambda c: c.pretrain_kinds,
                 lambda c: c.pretrain_attributes),
    "pretrain_valid": (lambda c: min(c.valid_questions, 500), lambda c: c.seed * 10 + 4,  # held out of pretraining
                       lambda c: c.pretrain_kinds, lambda c: c.pretrain_attributes),
    "train": (lambda c: c.train_questions, lambda c: c.seed * 10 + 1, lambda c: c.kinds, lambda c: c.attributes),
    "valid": (lambda c: c.valid_questions, lambda c: c.seed * 10 + 2, lambda c: c.kinds, lambda c: c.attributes),
    "test": (lambda c: c.test_questions, lambda c: c.seed * 10 + 5, lambda c: c.kinds, lambda c: c.attributes),
}
VOCAB_SPLITS = ("pretrain", "train")  # the answer vocabulary: every answer an annotator gives in these
IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480
DATA_TYPE = "synthetic"
_IMAGE_ID_STRIDE = 10_000_000  # split k's image ids are k * stride + 1, + 2, ...
_QUESTION_ID_STRIDE = 1000  # question id = image id * 1000 + its index on the image, as in VQA v2


@dataclass(frozen=True)
class SynthFiles:
    """What :func:`write_synthetic` wrote: everything ``prepare-vqa`` needs."""

    directory: Path
    splits: dict[str, tuple[Path, Path]]  # split -> (questions JSON, annotations JSON)
    features: list[Path]  # one TSV per split
    ans2label: Path
    objects_vocab: Path
    attributes_vocab: Path
    num_boxes: int

    def prepare_args(self, out: str | Path, relative: bool = False) -> list[str]:
        """The ``lxsweep prepare-vqa`` arguments that prepare these files into ``out``.

        With ``relative`` the file paths are relative to :attr:`directory` (for its README).
        """
        def name(path: Path) -> str:
            return str(path.relative_to(self.directory) if relative else path)

        args = ["--out", str(out)]
        for split, (questions, annotations) in self.splits.items():
            args += ["--split", split, name(questions), name(annotations)]
        args += ["--features", *map(name, self.features), "--ans2label", name(self.ans2label),
                 "--num-boxes", str(self.num_boxes)]
        return args


def write_synthetic(cfg: SyntheticConfig, out: str | Path) -> SynthFiles:
    """Generate every split of :data:`SPLITS` and write them as official VQA v2 files into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, tuple[Path, Path]] = {}
    features: list[Path] = []
    vocab_counts: Counter[str] = Counter()
    for k, (split, (count, seed, kinds, attributes)) in enumerate(SPLITS.items(), start=1):
        if count(cfg) == 0:
            continue
        raw = generate_split(cfg, count(cfg), seed(cfg), kinds=tuple(kinds(cfg)), attributes=tuple(attributes(cfg)))
        image_ids = k * _IMAGE_ID_STRIDE + 1 + np.arange(len(raw["features"]))
        splits[split] = _write_questions(out, split, raw, image_ids)
        features.append(_write_features(out / f"{split}_obj{cfg.num_boxes}.tsv", split, raw, image_ids))
        if split in VOCAB_SPLITS:
            vocab_counts.update(normalize_answer(a) for answers in raw["answers"] for a in answers)
    files = SynthFiles(
        directory=out, splits=splits, features=features,
        ans2label=write_ans2label(out / "trainval_ans2label.json",
                                  sorted(vocab_counts, key=lambda a: (-vocab_counts[a], a))),
        objects_vocab=_write_lines(out / "objects_vocab.txt", OBJECT_NAMES),
        attributes_vocab=_write_lines(out / "attributes_vocab.txt", ATTRIBUTE_NAMES),
        num_boxes=cfg.num_boxes,
    )
    (out / "README.txt").write_text(_readme(cfg, files), encoding="utf-8")
    return files


def prepare_synthetic(files: SynthFiles, out: str | Path) -> Path:
    """Run prepare-vqa on the written files: the same call ``lxsweep prepare-vqa`` makes."""
    return prepare_vqa(out, splits=files.splits, feature_tsvs=files.features, ans2label=files.ans2label,
                       num_boxes=files.num_boxes)


def prepare_command(files: SynthFiles, out: str | Path, relative: bool = False) -> str:
    """The shell command that prepares ``files`` into ``out``."""
    return shlex.join(["lxsweep", "prepare-vqa", *files.prepare_args(out, relative)])


def _write_questions(out: Path, split: str, raw: dict, image_ids: np.ndarray) -> tuple[Path, Path]:
    questions, annotations = [], []
    on_image: Counter[int] = Counter()  # questions so far per image: the last digits of the question id
    for i, text in enumerate(raw["questions"]):
        image_id = int(image_ids[raw["image_index"][i]])
        question_id = image_id * _QUESTION_ID_STRIDE + on_image[image_id]
        on_image[image_id] += 1
        questions.append({"image_id": image_id, "question": text, "question_id": question_id})
        annotations.append(annotation_entry(question_id, image_id, raw["question_kinds"][i],
                                            raw["answer_types"][i], raw["answers"][i]))
    return write_official_split(out, data_type=DATA_TYPE, data_subtype=split, questions=questions,
                                annotations=annotations, description=f"lxsweep synthetic VQA, split {split}",
                                license_name="generated by lxsweep synth")


def _write_features(path: Path, split: str, raw: dict, image_ids: np.ndarray) -> Path:
    scale = np.array([IMAGE_WIDTH, IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_HEIGHT], dtype=np.float32)
    ones = np.ones(raw["boxes"].shape[1], dtype=np.float32)
    return write_feature_tsv(path, (
        encode_feature_row(make_img_id(f"SYNTH_{split}", int(image_id)), IMAGE_HEIGHT, IMAGE_WIDTH,
                           raw["boxes"][row] * scale, raw["features"][row],
                           objects_id=raw["object_labels"][row], objects_conf=ones,
                           attrs_id=raw["attr_labels"][row], attrs_conf=ones)
        for row, image_id in enumerate(image_ids)))


def _write_lines(path: Path, names: tuple[str, ...]) -> Path:
    path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return path


def _readme(cfg: SyntheticConfig, files: SynthFiles) -> str:
    counts = ", ".join(f"{split} {count(cfg)} ({'/'.join(kinds(cfg))}; attributes {'/'.join(attributes(cfg))})"
                       for split, (count, _, kinds, attributes) in SPLITS.items() if count(cfg))
    return f"""\
The lxsweep synthetic VQA task, written as a real VQA v2 dataset by `lxsweep synth`.

Splits (questions): {counts}.
`pretrain` and `pretrain_valid` are for the rewind point's pretraining,
`train` and `valid` for the fine-tunes (and `test`, when there is one, for the reported numbers); their scenes
are disjoint.
Task settings: {cfg}.

Files per split: official questions/annotations JSON (v2_OpenEnded_synthetic_<split>_questions.json,
v2_synthetic_<split>_annotations.json; question_type is the question kind) and an LXMERT
feature TSV (<split>_obj{cfg.num_boxes}.tsv: {cfg.num_boxes} boxes per image in pixels of a
{IMAGE_WIDTH}x{IMAGE_HEIGHT} image, {cfg.feat_dim}-dim features, objects_id/attrs_id index
objects_vocab.txt/attributes_vocab.txt). trainval_ans2label.json: the answer vocabulary.

Prepare them (run in this directory):

  {prepare_command(files, "prepared", relative=True)}

then use them in an experiment with
  data: {{source: vqa, path: <this directory>/prepared, train_split: train, valid_split: valid}}
Score predictions with the official metric:
  lxsweep vqa-eval --questions v2_OpenEnded_synthetic_valid_questions.json \\
    --annotations v2_synthetic_valid_annotations.json --predictions results.json
"""
