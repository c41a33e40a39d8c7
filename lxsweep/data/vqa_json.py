"""Official VQA v2 question and annotation JSON: read, join, write; the answer vocabulary.

The files are those of visualqa.org (``v2_OpenEnded_mscoco_*_questions.json``,
``v2_mscoco_*_annotations.json``): questions ``{"info", "task_type",
"data_type", "data_subtype", "license", "questions": [{"image_id",
"question", "question_id"}]}``; annotations ``{..., "annotations":
[{"question_id", "image_id", "question_type", "answer_type",
"multiple_choice_answer", "answers": [{"answer", "answer_confidence",
"answer_id"}]}]}``. The answer vocabulary is LXMERT's ``trainval_ans2label.json``
or built from training answers.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lxsweep.data import ANSWER_TYPES, VQAInputError
from lxsweep.metric import normalize_answer



def load_answer_vocab(path: str | Path) -> list[str]:
    """Label id -> answer from LXMERT's ``trainval_ans2label.json`` (answer -> id).

    A JSON list (LXMERT's ``trainval_label2ans.json``) is accepted too. The
    ids must be exactly 0..n-1, each once.
    """
    path = Path(path)
    data = _read_json(path)
    fix = (" — write it as {answer: label id} with the ids 0..n-1 once each (LXMERT's trainval_ans2label.json), "
           "or leave out --ans2label to build the vocabulary from the training answers")
    if isinstance(data, list):
        if not all(isinstance(a, str) for a in data) or len(set(data)) != len(data):
            raise VQAInputError(f"{path}: a label list must hold distinct answer strings" + fix)
        return list(data)
    if not isinstance(data, dict) or not data:
        raise VQAInputError(f"{path}: expected a non-empty JSON object answer -> label id "
                            f"(LXMERT's trainval_ans2label.json), got {type(data).__name__}" + fix)
    bad = [(a, i) for a, i in data.items() if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise VQAInputError(f"{path}: answer {bad[0][0]!r} has label id {bad[0][1]!r} — label ids must be integers" + fix)
    n = len(data)
    ids = Counter(data.values())
    missing = sorted(set(range(n)) - set(ids))
    if missing:
        repeated = sorted(i for i, c in ids.items() if c > 1)
        outside = sorted(i for i in ids if not 0 <= i < n)
        detail = f"missing {_first(missing)}" + (f"; repeated {_first(repeated)}" if repeated else "") + \
            (f"; out of range {_first(outside)}" if outside else "")
        raise VQAInputError(f"{path}: label ids must be exactly 0..{n - 1}, each once ({detail})" + fix)
    answers = [""] * n
    for answer, label in data.items():
        answers[label] = answer
    return answers


def build_answer_vocab(annotations: Iterable[Mapping[str, Any]], min_count: int = 9) -> list[str]:
    """Answers whose normalised ``multiple_choice_answer`` occurs at least ``min_count`` times.

    The bottom-up-attention / LXMERT practice; sorted by (-count, answer) so
    the label ids are deterministic.
    """
    counts = Counter(normalize_answer(a["multiple_choice_answer"]) for a in annotations)
    return sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))


ANSWERS_PER_QUESTION = 10  # VQA v2: ten annotators per question; the official metric averages over them


def read_vqa_split(questions_json: str | Path, annotations_json: str | Path | None,
                   answers_per_question: int = ANSWERS_PER_QUESTION) -> list[dict[str, Any]]:
    """Join an official VQA v2 questions file with its annotations file, in question order.

    Every annotation must hold ``answers_per_question`` answers (VQA v2's ten; 0 accepts any number).

    Each record: question_id, image_id, question, question_type, answer_type,
    multiple_choice_answer and answers (the annotators' raw answer strings).
    Without ``annotations_json`` (a test split: the evaluation server keeps
    the answers) the answer fields are empty.
    """
    qpath = Path(questions_json)
    questions = _json_list(qpath, "questions", "v2_OpenEnded_mscoco_*_questions.json")
    if annotations_json is None:
        records = []
        for i, q in enumerate(questions):
            _require(q, ("question_id", "image_id", "question"), f"{qpath}: questions[{i}]")
            records.append({"question_id": int(q["question_id"]), "image_id": int(q["image_id"]),
                            "question": q["question"], "question_type": "", "answer_type": "",
                            "multiple_choice_answer": "", "answers": []})
        if len({r["question_id"] for r in records}) != len(records):
            raise VQAInputError(f"{qpath}: a question_id appears twice")
        return records
    apath = Path(annotations_json)
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
        if answers_per_question and len(answers) != answers_per_question:
            raise VQAInputError(f"{where}: {len(answers)} answers, VQA v2 has {answers_per_question} per question — "
                                f"fix the file, or pass --answers-per-question {len(answers)} (0: any number) "
                                f"for a dataset with another count")
        if ann["question_id"] in by_id:
            raise VQAInputError(f"{where}: question_id {ann['question_id']} is annotated twice — keep one annotation per question")
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
    orphans = [qid for qid in by_id if qid not in seen]
    if orphans:
        raise VQAInputError(f"{apath}: {len(orphans)} annotations are for questions not in {qpath} "
                            f"(e.g. question_id {_first(orphans)}) — are these two files of the same split?")
    if unannotated:
        raise VQAInputError(f"{qpath}: {len(unannotated)} questions have no annotation in {apath} "
                            f"(e.g. question_id {_first(unannotated)}) — are these two files of the same split?")
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


def annotation_entry(question_id: int, image_id: int, question_type: str, answer_type: str,
                     answers: Sequence[str]) -> dict[str, Any]:
    """One official annotation: the annotators' answers numbered 1..n, the most common as ``multiple_choice_answer``."""
    return {
        "question_id": int(question_id), "image_id": int(image_id), "question_type": question_type,
        "answer_type": answer_type, "multiple_choice_answer": Counter(answers).most_common(1)[0][0],
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)],
    }


def write_official_split(directory: str | Path, *, data_type: str, data_subtype: str, description: str,
                         questions: Sequence[Mapping[str, Any]], annotations: Sequence[Mapping[str, Any]],
                         license_name: str = "") -> tuple[Path, Path]:
    """Write one split as the official pair of files; returns (questions path, annotations path).

    Named like the originals: ``v2_OpenEnded_<data_type>_<data_subtype>_questions.json``
    and ``v2_<data_type>_<data_subtype>_annotations.json``.
    """
    directory = Path(directory)
    common = {"info": {"description": description, "version": "2.0"}, "data_type": data_type,
              "data_subtype": data_subtype, "license": {"name": license_name, "url": ""}}
    qpath = write_json(directory / f"v2_OpenEnded_{data_type}_{data_subtype}_questions.json",
                       {**common, "task_type": "Open-Ended", "questions": list(questions)})
    apath = write_json(directory / f"v2_{data_type}_{data_subtype}_annotations.json",
                       {**common, "annotations": list(annotations)})
    return qpath, apath


def write_ans2label(path: str | Path, answers: Sequence[str]) -> Path:
    """LXMERT's ``trainval_ans2label.json``: answer -> label id, ids in the order of ``answers``."""
    return write_json(path, {a: i for i, a in enumerate(answers)})


def write_json(path: str | Path, obj: Any, indent: int | None = None) -> Path:
    """Write JSON via a temp file + rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
