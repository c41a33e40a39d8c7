"""The dataset interface shared by real VQA v2 and the synthetic task.

Both sources produce a :class:`VQADataset`: two :class:`VQASplit` objects of
plain arrays plus the answer vocabulary. Training never knows where the data
came from.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

ANSWER_TYPES = ("yes/no", "number", "other")


@dataclass
class VQASplit:
    """One split of a VQA-style dataset, as arrays (features may be a memmap).

    ``features``/``boxes`` are indexed by image row; every other field by
    question row. ``image_index[i]`` is the image row of question ``i``.
    """

    question_ids: np.ndarray  # int64 [N]
    questions: list[str]  # question text [N]
    image_index: np.ndarray  # int64 [N] -> row of features/boxes
    features: np.ndarray  # float16/float32 [num_images, num_boxes, feat_dim]
    boxes: np.ndarray  # float32 [num_images, num_boxes, 4], x/width, y/height in [0, 1]
    answers: list[list[str]]  # the annotators' raw answers per question (10 in VQA v2)
    answer_types: list[str]  # "yes/no" | "number" | "other"
    question_kinds: list[str]  # finer category for reports (VQA v2: the answer type)
    target_labels: np.ndarray  # int64 [N, K] answer label ids, -1 = padding
    target_scores: np.ndarray  # float32 [N, K] soft VQA scores of those labels

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
            answers=[self.answers[i] for i in rows],
            answer_types=[self.answer_types[i] for i in rows],
            question_kinds=[self.question_kinds[i] for i in rows],
            target_labels=self.target_labels[rows],
            target_scores=self.target_scores[rows],
        )


@dataclass
class VQADataset:
    """A train and a validation split sharing one answer vocabulary."""

    train: VQASplit
    valid: VQASplit
    answers: list[str]  # label id -> answer string

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
    from lxsweep.metric import normalize_answer

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
