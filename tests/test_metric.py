"""The official VQA v2 metric: normalisation, per-question accuracy, splits, files.

Expected values are worked out by hand from GT-Vision-Lab/VQA vqaEval.py
(leave one annotator out, min(1, matches/3), averaged over annotators).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lxsweep.metric import MetricInputError, evaluate_files, normalize_answer, question_accuracy, score


def approx(value: float) -> object:
    return pytest.approx(value, rel=0, abs=1e-12)


# --- normalisation -----------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        # case: processDigitArticle lower-cases everything it keeps
        ("Yes", "yes"),
        ("NO", "no"),
        # periods go unless a digit follows
        ("yes.", "yes"),
        ("Mr. Smith", "mr smith"),
        ("3.14", "3.14"),
        ("2.5.", "2.5"),
        # a comma between digits: every punctuation mark is dropped, not spaced
        ("1,000", "1000"),
        ("1,000 cats?", "1000 cats"),
        # otherwise a mark touching a space is dropped, one touching no space becomes a space
        ("red,blue", "red blue"),
        ("red, blue", "red blue"),
        ("t-shirt", "t shirt"),
        ("yes!", "yes"),
        ('"hello"', "hello"),
        # ...and the decision is per mark for the whole string: one ", " drops every comma
        ("red, blue,green", "red bluegreen"),
        # ...judged on the input: the space that ";" leaves next to "?" does not count
        ("x;?y c?d", "x y c d"),
        # the apostrophe is not punctuation upstream
        ("it's", "it's"),
        # number words 0-10 (and "none") become digits
        ("two", "2"),
        ("Two dogs.", "2 dogs"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),
        # articles go, wherever they are
        ("a dog", "dog"),
        ("an apple", "apple"),
        ("The Cat", "cat"),
        ("on the left", "on left"),
        ("the", ""),
        # contractions without their apostrophe get it back
        ("dont", "don't"),
        ("cant", "can't"),
        ("whats", "what's"),
        # upstream's capitalised keys never fire, because the text is lower-cased first
        ("Im", "im"),
        # whitespace collapses
        ("yes\tno", "yes no"),
        ("  big   red  ", "big red"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_period_strip_removes_at_most_32_periods() -> None:
    # Upstream passes re.UNICODE (32) as re.sub's count argument.
    assert normalize_answer("." * 40) == "." * 8


# --- one question ------------------------------------------------------------

OTHERS = ["dog", "bird", "fish", "horse", "cow", "sheep", "goat", "duck", "frog", "elk"]


@pytest.mark.parametrize(
    "matching, expected",
    [
        # k of 10 annotators said "cat". Leaving out a "cat" annotator leaves k-1
        # matches, leaving out another leaves k; average min(1, m/3) over the 10.
        (0, 0.0),
        (1, 9 * (1 / 3) / 10),  # = 0.3
        (2, (8 * (2 / 3) + 2 * (1 / 3)) / 10),  # = 0.6
        (3, (7 * 1 + 3 * (2 / 3)) / 10),  # = 0.9
        (4, 1.0),  # 6 * min(1, 4/3) + 4 * min(1, 3/3)
        (10, 1.0),
    ],
)
def test_partial_agreement(matching: int, expected: float) -> None:
    gts = ["cat"] * matching + OTHERS[: 10 - matching]
    assert question_accuracy("cat", gts) == approx(expected)


def test_partial_agreement_round_values() -> None:
    for matching, expected in [(1, 0.3), (2, 0.6), (3, 0.9)]:
        gts = ["cat"] * matching + ["dog"] * (10 - matching)
        assert question_accuracy("cat", gts) == approx(expected)


def test_eight_to_two_split_from_upstream_issue() -> None:
    # GT-Vision-Lab/VQA issue #1: 8 "yes" and 2 "no" give "no" 0.6 and "yes" 1.0.
    gts = ["yes"] * 8 + ["no"] * 2
    assert question_accuracy("no", gts) == approx(0.6)
    assert question_accuracy("yes", gts) == approx(1.0)


def test_other_annotator_counts() -> None:
    # Three annotators: leave out cat -> 1/3, dog -> 2/3, cat -> 1/3; mean 4/9.
    assert question_accuracy("cat", ["cat", "dog", "cat"]) == approx(4 / 9)
    # One annotator: nobody is left to agree with.
    assert question_accuracy("cat", ["cat"]) == 0.0


def test_normalisation_applies_when_annotators_disagree() -> None:
    gts = ["two"] * 3 + ["three"] * 7  # -> "2" x3, "3" x7
    assert question_accuracy("2", gts) == approx(0.9)
    assert question_accuracy("Two.", gts) == approx(0.9)
    assert question_accuracy("cat", ["the cat"] * 4 + ["dog"] * 6) == approx(1.0)


def test_identical_answers_are_not_normalised() -> None:
    # Upstream normalises neither side when all ten answers are the same string.
    assert question_accuracy("yes", ["yes"] * 10) == 1.0
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert question_accuracy("yes.", ["yes"] * 10) == 0.0
    assert question_accuracy("2", ["two"] * 10) == 0.0
    # One differing annotator switches normalisation on for everyone.
    assert question_accuracy("2", ["two"] * 9 + ["2"]) == approx(1.0)
    assert question_accuracy("Yes", ["yes"] * 9 + ["no"]) == approx(1.0)


def test_whitespace_is_always_cleaned_first() -> None:
    # \n and \t become spaces and the ends are stripped before the
    # all-identical test, so these ten answers count as identical.
    gts = [" yes"] + ["yes\n"] + ["yes"] * 8
    assert question_accuracy("\tyes ", gts) == 1.0
    assert question_accuracy("Yes", gts) == 0.0


def test_no_ground_truth_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ground-truth answers"):
        question_accuracy("yes", [])


# --- many questions ----------------------------------------------------------

SIX = dict(
    predictions=["yes", "Yes", "two", "2", "Red.", "cat"],
    gt_answers=[
        ["yes"] * 10,  # 1.0
        ["yes"] * 10,  # 0.0: identical answers, no normalisation
        ["2"] * 3 + ["3"] * 7,  # 0.9: "two" -> "2", three matches
        ["2"] + ["3"] * 9,  # 0.3
        ["red"] * 2 + ["blue"] * 8,  # 0.6: "Red." -> "red"
        ["the cat"] * 4 + ["dog"] * 6,  # 1.0: "the cat" -> "cat"
    ],
    answer_types=["yes/no", "yes/no", "number", "number", "other", "other"],
)


def test_score_fixed_questions() -> None:
    result = score(**SIX)
    assert set(result) == {"overall", "yes/no", "number", "other"}
    assert result["overall"] == approx((1.0 + 0.0 + 0.9 + 0.3 + 0.6 + 1.0) / 6)
    assert result["yes/no"] == approx(0.5)
    assert result["number"] == approx(0.6)
    assert result["other"] == approx(0.8)


def test_score_question_kinds() -> None:
    kinds = ["is the", "is the", "how many", "how many", "what color", "what is"]
    result = score(**SIX, question_kinds=kinds)
    assert result["kind/is the"] == approx(0.5)
    assert result["kind/how many"] == approx(0.6)
    assert result["kind/what color"] == approx(0.6)
    assert result["kind/what is"] == approx(1.0)
    assert result["overall"] == approx(3.8 / 6)


def test_score_averages_questions_not_types() -> None:
    # Three yes/no right, one "other" wrong: overall 3/4, not the mean of 1.0 and 0.0.
    result = score(["yes", "yes", "yes", "x"], [["yes"] * 10] * 4, ["yes/no"] * 3 + ["other"])
    assert result == {"overall": 0.75, "yes/no": 1.0, "other": 0.0}  # no "number" key


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(predictions=["yes"], gt_answers=[], answer_types=["yes/no"]), "gt_answers has 0"),
        (dict(predictions=["yes"], gt_answers=[["yes"]], answer_types=[]), "answer_types has 0"),
        (dict(predictions=["yes"], gt_answers=[["yes"]], answer_types=["yes/no"], question_kinds=[]),
         "question_kinds has 0"),
        (dict(predictions=[], gt_answers=[], answer_types=[]), "no questions"),
        (dict(predictions=["yes"], gt_answers=[["yes"]], answer_types=["colour"]), "'colour'"),
    ],
)
def test_score_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score(**kwargs)


# --- official-format files ---------------------------------------------------

ANNOTATIONS = [
    # question_id, answer_type, question_type, ten answers
    (101, "yes/no", "is the", ["yes"] * 10),
    (102, "number", "how many", ["2"] * 3 + ["3"] * 7),
    (103, "other", "what color", ["red"] * 2 + ["blue"] * 8),
    (104, "other", "what is", ["the cat"] * 4 + ["dog"] * 6),
]
PREDICTIONS = {101: "Yes", 102: "two", 103: "red", 104: "a cat"}  # 0.0, 0.9, 0.6, 1.0


def official_annotations() -> dict:
    """ANNOTATIONS in the official annotations-file format."""
    return {"annotations": [
        {
            "question_id": qid,
            "image_id": qid // 100,
            "answer_type": answer_type,
            "question_type": question_type,
            "multiple_choice_answer": max(set(answers), key=answers.count),
            "answers": [
                {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)
            ],
        }
        for qid, answer_type, question_type, answers in ANNOTATIONS
    ]}


def write_files(tmp_path: Path, predictions: object = None, annotations: object = None,
                questions: object = None) -> tuple[Path, Path, Path]:
    """Official-format questions, annotations and predictions files in tmp_path."""
    if questions is None:
        questions = {"questions": [
            {"question_id": qid, "image_id": qid // 100, "question": f"question {qid}?"}
            for qid, *_ in ANNOTATIONS
        ]}
    if annotations is None:
        annotations = official_annotations()
    if predictions is None:
        # Reverse order: scoring must follow the annotations, not the file.
        predictions = [{"question_id": qid, "answer": a} for qid, a in reversed(PREDICTIONS.items())]
    paths = []
    for name, data in [("questions.json", questions), ("annotations.json", annotations),
                       ("predictions.json", predictions)]:
        path = tmp_path / name
        path.write_text(json.dumps(data))
        paths.append(path)
    return paths[0], paths[1], paths[2]


def test_evaluate_files(tmp_path: Path) -> None:
    result = evaluate_files(*write_files(tmp_path))
    assert set(result) == {"overall", "yes/no", "number", "other"}
    assert result["overall"] == approx((0.0 + 0.9 + 0.6 + 1.0) / 4)
    assert result["yes/no"] == 0.0
    assert result["number"] == approx(0.9)
    assert result["other"] == approx(0.8)


def test_evaluate_files_accepts_str_paths(tmp_path: Path) -> None:
    paths = [str(p) for p in write_files(tmp_path)]
    assert evaluate_files(*paths)["overall"] == approx(2.5 / 4)


@pytest.mark.parametrize(
    "which, content, message",
    [
        ("questions", "{not json", "questions file .*questions.json: not valid JSON"),
        ("annotations", "[1, 2", "annotations file .*annotations.json: not valid JSON"),
        ("predictions", "", "predictions file .*predictions.json: not valid JSON"),
    ],
)
def test_evaluate_files_not_json(tmp_path: Path, which: str, content: str, message: str) -> None:
    paths = dict(zip(["questions", "annotations", "predictions"], write_files(tmp_path)))
    paths[which].write_text(content)
    with pytest.raises(MetricInputError, match=message):
        evaluate_files(paths["questions"], paths["annotations"], paths["predictions"])


@pytest.mark.parametrize("which", ["questions", "annotations", "predictions"])
def test_evaluate_files_missing_file(tmp_path: Path, which: str) -> None:
    paths = dict(zip(["questions", "annotations", "predictions"], write_files(tmp_path)))
    paths[which].unlink()
    with pytest.raises(MetricInputError, match=f"{which} file .*{which}.json: no such file"):
        evaluate_files(paths["questions"], paths["annotations"], paths["predictions"])


def _annotations_with(index: int, **changes: object) -> dict:
    """The fixture annotations with one entry's fields replaced."""
    annotations = official_annotations()
    annotations["annotations"][index].update(changes)
    return annotations


@pytest.mark.parametrize(
    "files, message",
    [
        # wrong shapes
        (dict(questions=[{"question_id": 101}]), r"questions file .*: expected \{\"questions\""),
        (dict(questions={"questions": [{"id": 101}]}), r"questions file .*: questions\[0\] has no integer"),
        (dict(annotations={"anns": []}), r"annotations file .*: expected \{\"annotations\""),
        (dict(annotations={"annotations": []}), "annotations file .*: no annotations"),
        (dict(annotations=_annotations_with(1, question_id="102")), r"annotations\[1\] has no integer"),
        (dict(annotations=_annotations_with(2, answers=[])), r"annotations\[2\] .*'answers' must be"),
        (dict(annotations=_annotations_with(2, answers=["red"] * 10)), r"annotations\[2\] .*'answers' must be"),
        (dict(annotations=_annotations_with(0, answer_type="boolean")), r"annotations\[0\] .*'boolean'"),
        (dict(annotations=_annotations_with(3, question_id=101)), "question_id 101 is annotated twice"),
        (dict(annotations=_annotations_with(3, question_id=999)),
         "question_id 999 is not in the questions file"),
        (dict(predictions={"101": "yes"}), r"predictions file .*: expected \[\{\"question_id\""),
        (dict(predictions=[{"question_id": 101}]), "entry 0 .*has no string 'answer'"),
        (dict(predictions=[{"question_id": "101", "answer": "yes"}]), "entry 0 has no integer 'question_id'"),
        # the id sets must match, as upstream loadRes asserts
        (dict(predictions=[{"question_id": q, "answer": "x"} for q in (101, 102, 103)]),
         "predictions file .*: no prediction for 1 annotated question.*104"),
        (dict(predictions=[]), "predictions file .*: no prediction for 4 annotated question.*101, 102, 103, 104"),
        (dict(predictions=[{"question_id": q, "answer": "x"} for q in (101, 102, 103, 104, 105, 106)]),
         "predictions file .*: 2 prediction.*not in the annotations.*105, 106"),
        (dict(predictions=[{"question_id": q, "answer": "x"} for q in (101, 102, 103, 104, 102)]),
         "predictions file .*: entry 4: question_id 102 is predicted twice"),
    ],
)
def test_evaluate_files_rejects_bad_files(tmp_path: Path, files: dict, message: str) -> None:
    with pytest.raises(MetricInputError, match=message):
        evaluate_files(*write_files(tmp_path, **files))


def test_metric_input_error_is_a_value_error() -> None:
    assert issubclass(MetricInputError, ValueError)
