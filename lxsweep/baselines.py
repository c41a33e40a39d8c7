"""Reference points that need no training: what a model must beat to be using the data."""
from __future__ import annotations

from collections import Counter

from lxsweep.data import VQADataset
from lxsweep.metric import score


def majority_baseline(dataset: VQADataset) -> float:
    """Official VQA accuracy on the validation split of always answering the most frequent training answer."""
    top = Counter(a for answers in dataset.train.answers for a in answers).most_common(1)[0][0]
    valid = dataset.valid
    return score([top] * len(valid), valid.answers, valid.answer_types)["overall"]
