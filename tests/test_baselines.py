"""Baselines that never look at the image: hand-computed values, and the store file reports read."""
from __future__ import annotations

import numpy as np
import pytest

from lxsweep.baselines import BASELINES_FILE, baselines, experiment_baselines, normalize_question
from lxsweep.config import load_experiment
from lxsweep.data import VQADataset, VQASplit
from lxsweep.store import Store


def split(rows: list[tuple[str, list[str], str, str]]) -> VQASplit:
    """A split from (question, the ten answers, answer type, question type); no image data needed."""
    n = len(rows)
    return VQASplit(
        question_ids=np.arange(n), questions=[r[0] for r in rows], image_index=np.zeros(n, dtype=np.int64),
        features=np.zeros((1, 1, 1), dtype=np.float32), boxes=np.zeros((1, 1, 4), dtype=np.float32),
        answers=[r[1] for r in rows], answer_types=[r[2] for r in rows], question_kinds=[r[3] for r in rows],
        target_labels=np.full((n, 10), -1), target_scores=np.zeros((n, 10), dtype=np.float32),
    )


TRAIN = split([
    ("Is it red?", ["yes"] * 10, "yes/no", "is it"),
    ("is it red ?", ["yes"] * 6 + ["no"] * 4, "yes/no", "is it"),  # the same text once normalised
    ("Is it blue?", ["no"] * 10, "yes/no", "is it"),
    ("How many dogs?", ["2"] * 10, "number", "how many"),
    ("How many cats?", ["3"] * 7 + ["two"] * 3, "number", "how many"),  # "two" counts as "2"
    ("What color is the car?", ["red"] * 10, "other", "what color is the"),
])
VALID = split([
    ("Is it blue?", ["no"] * 10, "yes/no", "is it"),                         # text seen: "no"
    ("How many cats?", ["3"] * 10, "number", "how many"),                   # text seen: "3"
    ("How many birds?", ["2"] * 10, "number", "how many"),                  # unseen text, kind seen: "2"
    ("What color is the bus?", ["blue"] * 10, "other", "what color is the"),  # kind seen: "red", wrong
    ("Is the sky blue?", ["yes"] * 2 + ["no"] * 8, "yes/no", "is the"),      # unseen kind, answer type: "yes"
    ("What is it?", ["red"] * 10, "other", "what is"),                        # unseen kind, answer type: "red"
])


def test_question_text_normalisation():
    assert normalize_question("Is it red?") == normalize_question("is  it red ?") == "is it red"
    assert normalize_question("What's on the table?") == "what's on the table"


def test_blind_and_majority_baselines_equal_hand_computed_values():
    result = baselines(VQADataset(train=TRAIN, valid=VALID, answers=["yes", "no", "2", "3", "red"]))
    # Training votes: yes 16, no 14, 2 13, 3 7, red 10 -> the majority answer is "yes".
    # "yes" against 2 "yes" + 8 "no": leave-one-out (2 x 1/3 + 8 x 2/3) / 10 = 0.6.
    yes_on_sky = (2 * (1 / 3) + 8 * (2 / 3)) / 10
    assert result["majority"] == pytest.approx({
        "accuracy": yes_on_sky / 6, "accuracy_yesno": yes_on_sky / 2, "accuracy_number": 0.0, "accuracy_other": 0.0,
        "accuracy_is it": 0.0, "accuracy_how many": 0.0, "accuracy_what color is the": 0.0,
        "accuracy_is the": yes_on_sky, "accuracy_what is": 0.0})
    # Blind answers: no, 3, 2, red, yes, red -> scores 1, 1, 1, 0, 0.6, 1.
    assert result["blind"] == pytest.approx({
        "accuracy": (4 + yes_on_sky) / 6, "accuracy_yesno": (1 + yes_on_sky) / 2, "accuracy_number": 1.0,
        "accuracy_other": 0.5, "accuracy_is it": 1.0, "accuracy_how many": 1.0, "accuracy_what color is the": 0.0,
        "accuracy_is the": yes_on_sky, "accuracy_what is": 1.0})


def test_experiment_baselines_are_kept_in_the_store_under_trial_metric_names(smoke_file, tmp_path):
    exp = load_experiment(smoke_file, ["data.synthetic.train_questions=300", "data.synthetic.valid_questions=150",
                                       "data.synthetic.pretrain_questions=30", f"storage={tmp_path / 'runs'}"])
    store = Store.for_experiment(exp)
    result = experiment_baselines(exp, store)
    assert store.read_json(BASELINES_FILE) == result
    assert set(result) == {"majority", "blind"}
    for values in result.values():
        assert {"accuracy", "accuracy_yesno", "accuracy_number", "accuracy_other", "accuracy_count"} <= set(values)
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert result["blind"]["accuracy"] > result["majority"]["accuracy"]
    store.write_json(BASELINES_FILE, {"majority": {"accuracy": 0.5}, "blind": {"accuracy": 0.5}})
    assert experiment_baselines(exp, store)["blind"] == {"accuracy": 0.5}  # read back, not recomputed
