"""Reference points that never look at the image: the majority-answer and the blind predictor.

A vision-language model is only worth pruning on a task it solves *by
looking*; these two say how much of an accuracy needs no image at all. Both
are learned on the training split and scored with the official metric on the
validation split (and the test split, when there is one), under the metric names trials use (``accuracy``,
``accuracy_yesno``, ..., ``accuracy_<question kind>``).

* **majority**: every question gets the most frequent training answer.
* **blind**: a question gets the most frequent training answer of its
  normalised text (:func:`normalize_question`); a text never seen in training
  falls back to the most frequent answer of its question kind (VQA's
  ``question_type``), then of its answer type, then the majority answer.

"Most frequent" counts every annotator's normalised answer (ten per VQA
question), ties broken alphabetically, so the result is deterministic.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from lxsweep.data import VQADataset, VQASplit
from lxsweep.metric import accuracy_metrics, normalize_answer

if TYPE_CHECKING:
    from lxsweep.config import Experiment
    from lxsweep.store import Store

BASELINES_FILE = "baselines.json"  # in the experiment's store
_NOT_WORD = re.compile(r"[^\w\s']+")


def normalize_question(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed: ``"Is it red?"`` == ``"is it red ?"``."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def majority_predictions(train: VQASplit, valid: VQASplit) -> list[str]:
    """The most frequent training answer, for every validation question."""
    top = _most_frequent(_votes(train.answers))
    return [top] * len(valid)


def blind_predictions(train: VQASplit, valid: VQASplit) -> list[str]:
    """Per validation question, the most frequent training answer of its text (fallbacks: see the module)."""
    by_text: dict[str, Counter[str]] = {}
    by_kind: dict[str, Counter[str]] = {}
    by_type: dict[str, Counter[str]] = {}
    for i, answers in enumerate(train.answers):
        votes = _votes([answers])
        by_text.setdefault(normalize_question(train.questions[i]), Counter()).update(votes)
        by_kind.setdefault(train.question_kinds[i], Counter()).update(votes)
        by_type.setdefault(train.answer_types[i], Counter()).update(votes)
    majority = _most_frequent(_votes(train.answers))
    predictions = []
    for i in range(len(valid)):
        votes = (by_text.get(normalize_question(valid.questions[i])) or by_kind.get(valid.question_kinds[i])
                 or by_type.get(valid.answer_types[i]))
        predictions.append(_most_frequent(votes) if votes else majority)
    return predictions


def baselines(data: VQADataset) -> dict:
    """``{"majority": {metric: value}, "blind": {metric: value}}`` on ``data.valid``, learned on ``data.train``;
    with a test split, the same on it under ``"test"``."""
    def on(split: VQASplit) -> dict[str, dict[str, float]]:
        return {
            name: accuracy_metrics(predict(data.train, split), split.answers, split.answer_types, split.question_kinds)
            for name, predict in (("majority", majority_predictions), ("blind", blind_predictions))
        }
    return {**on(data.valid), **({"test": on(data.test)} if data.test is not None else {})}


def experiment_baselines(exp: "Experiment", store: "Store") -> dict[str, dict[str, float]]:
    """The baselines of an experiment's data, computed once and kept in its store as ``baselines.json``."""
    if store.exists(BASELINES_FILE):
        return store.read_json(BASELINES_FILE)
    from lxsweep.data.source import load_dataset

    result = baselines(load_dataset(exp, store))
    store.write_json(BASELINES_FILE, result)
    return result


def _votes(answer_lists: Iterable[Sequence[str]]) -> Counter[str]:
    return Counter(normalize_answer(a) for answers in answer_lists for a in answers)


def _most_frequent(votes: Counter[str]) -> str:
    return min(votes, key=lambda a: (-votes[a], a))
