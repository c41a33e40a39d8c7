"""The dataset interface shared by real VQA v2 and the synthetic task.

Both sources reach training the same way: official VQA v2 files go through
``lxsweep prepare-vqa`` into a prepared store, which opens as a
:class:`VQADataset` (two :class:`VQASplit` objects of plain arrays plus the
answer vocabulary). Training never knows where the data came from.

Modules, one concern each:

=============  ==============================================================
``tsv``        LXMERT feature TSVs: encode and decode one image row
``vqa_json``   official question/annotation JSON: read, write, answer vocabulary
``prepare``    official files -> a prepared store (``lxsweep prepare-vqa``)
``prepared``   the prepared store's layout; open it as a VQADataset
``synthetic``  the generated scene-question task (in memory)
``synth``      the synthetic task written out as official files (``lxsweep synth``)
``source``     an experiment's data: synthetic (cached via synth + prepare) or prepared VQA
``loader``     batches for training and evaluation
=============  ==============================================================
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from lxsweep.metric import ANSWER_TYPES, normalize_answer

__all__ = ["ANSWER_TYPES", "Coded", "VQADataset", "VQAInputError", "VQASplit", "VQAStoreError", "pad_targets",
           "rows_of", "soft_score", "soft_targets"]


class VQAInputError(ValueError):
    """A bad input file (JSON, TSV, vocabulary); the message names the file and the problem."""


class VQAStoreError(ValueError):
    """A missing, incomplete or inconsistent prepared store; the message names the path and the problem."""


class Coded(Sequence):
    """A column of strings drawn from few distinct values, kept as codes into them.

    1-D ``codes``: row ``i`` is ``values[codes[i]]`` (answer types, question
    types). 2-D: row ``i`` is the list ``[values[c] for c in codes[i] if c >=
    0]`` (the annotators' answers, -1 padding). A prepared store opens its
    question columns as these: a few arrays instead of millions of Python
    objects, so opening the full VQA v2 in a trial takes well under a second.
    It reads like the list it stands for and compares equal to it.
    """

    def __init__(self, values: Sequence[str], codes: np.ndarray):
        self.values, self.codes = list(values), np.asarray(codes)
        self._lists: Optional[list] = None  # 2-D: the rows as lists, made on first use (evaluations re-read them)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if self.codes.ndim == 2:
            return self._rows()[i]
        if isinstance(i, slice):
            return [self.values[c] for c in self.codes[i].tolist()]
        return self.values[self.codes[i]]

    def __iter__(self):
        return iter(self._rows()) if self.codes.ndim == 2 else map(self.values.__getitem__, self.codes.tolist())

    def _rows(self) -> list:
        if self._lists is None:
            values = self.values
            self._lists = [[values[c] for c in row if c >= 0] for row in self.codes.tolist()]
        return self._lists

    def __eq__(self, other) -> bool:
        if not isinstance(other, (Coded, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"Coded({len(self)} rows, {len(self.values)} distinct values)"

    def take(self, rows: np.ndarray) -> "Coded":
        """The rows at ``rows``, still coded."""
        return Coded(self.values, self.codes[rows])


def _take(column: Sequence, rows: np.ndarray) -> Sequence:
    return column.take(rows) if isinstance(column, Coded) else [column[i] for i in rows]


def rows_of(column: Sequence, rows: np.ndarray) -> list:
    """``[column[i] for i in rows]`` as a plain list, fast for a :class:`Coded` column."""
    if isinstance(column, Coded) and column.codes.ndim == 1:
        return list(column.take(np.asarray(rows, dtype=np.int64)))
    return [column[i] for i in rows]


@dataclass
class VQASplit:
    """One split of a VQA-style dataset, as arrays (features may be a memmap).

    ``features``/``boxes``/``object_labels``/``attr_labels`` are indexed by
    image row; every other field by question row. ``image_index[i]`` is the
    image row of question ``i``. ``question_kinds`` are VQA's ``question_type``
    (e.g. "what color is the"; the synthetic task's own types), the category
    the official evaluator reports as ``perQuestionType``.
    """

    question_ids: np.ndarray  # int64 [N]
    questions: list[str]  # question text [N]
    image_index: np.ndarray  # int64 [N] -> row of features/boxes
    features: np.ndarray  # float16/float32 [num_images, num_boxes, feat_dim]
    boxes: np.ndarray  # float32 [num_images, num_boxes, 4], x/width, y/height in [0, 1]
    answers: Sequence[list[str]]  # the annotators' raw answers per question (10 in VQA v2); Coded from a store
    answer_types: Sequence[str]  # "yes/no" | "number" | "other"
    question_kinds: Sequence[str]  # the question_type of each question
    target_labels: np.ndarray  # int64 [N, K] answer label ids, -1 = padding
    target_scores: np.ndarray  # float32 [N, K] soft VQA scores of those labels
    # The detector's per-box class ids (the TSV's objects_id / attrs_id), int64
    # [num_images, num_boxes], -1 on padding boxes; None when the store has none.
    object_labels: Optional[np.ndarray] = None
    attr_labels: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.question_ids)

    def subset(self, rows: np.ndarray) -> "VQASplit":
        """The questions at ``rows`` (images are shared, not copied)."""
        rows = np.asarray(rows, dtype=np.int64)
        return VQASplit(
            question_ids=self.question_ids[rows],
            questions=[self.questions[i] for i in rows],
            image_index=self.image_index[rows],
            features=self.features,
            boxes=self.boxes,
            answers=_take(self.answers, rows),
            answer_types=_take(self.answer_types, rows),
            question_kinds=_take(self.question_kinds, rows),
            target_labels=self.target_labels[rows],
            target_scores=self.target_scores[rows],
            object_labels=self.object_labels,
            attr_labels=self.attr_labels,
        )


@dataclass
class VQADataset:
    """A train and a validation split (and optionally a test split) sharing one answer vocabulary.

    Every choice (recipe, epochs, design) is made on ``valid``; with a ``test`` split, every reported
    number is measured on it.
    """

    train: VQASplit
    valid: VQASplit
    answers: list[str]  # label id -> answer string
    test: Optional[VQASplit] = None

    @property
    def num_answers(self) -> int:
        return len(self.answers)


def soft_score(count: int) -> float:
    """LXMERT/VQA soft target for an answer given by ``count`` annotators.

    0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / >=4 annotators (min(1, count*0.3)).
    """
    return 0.0 if count <= 0 else (1.0 if count >= 4 else round(0.3 * count, 1))


def soft_targets(answers: Sequence[str], label_of: Mapping[str, int]) -> list[tuple[int, float]]:
    """(label, soft score) of each in-vocabulary answer among the annotators', by label.

    Answers are normalised first; a label's score is :func:`soft_score` of how
    many annotators gave it (1, 2, 3, >=4 -> 0.3, 0.6, 0.9, 1.0).
    """
    counts = Counter(normalize_answer(a) for a in answers)
    return sorted((label_of[a], soft_score(c)) for a, c in counts.items() if a in label_of)


def pad_targets(targets: Sequence[Sequence[tuple[int, float]]], width: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per-question (label, score) lists -> ``target_labels`` int64 [N, K] (-1 pad), ``target_scores`` float32 [N, K].

    K is ``width`` or the longest list, whichever is larger.
    """
    k = max([width, *(len(t) for t in targets)])
    labels = np.full((len(targets), k), -1, dtype=np.int64)
    scores = np.zeros((len(targets), k), dtype=np.float32)
    for i, row in enumerate(targets):
        for j, (label, value) in enumerate(row):
            labels[i, j], scores[i, j] = label, value
    return labels, scores
