"""The official VQA v2 accuracy metric, answer normalisation included.

Followed line by line: GT-Vision-Lab/VQA, file
``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at commit
a013f0043c1e2cdc995922dfe257f7149aa9af06 (master, Python 2; the version whose
"normalise only when the annotators disagree" rule the maintainers confirmed in
GT-Vision-Lab/VQA issue #14), and ``PythonHelperTools/vqaTools/vqa.py``
(``loadRes``) for the checks on result files. Per question, as ``evaluate``
does it:

1. every answer (prediction and the ten annotators') has ``\\n``/``\\t``
   replaced by spaces and is stripped;
2. only if the stripped ground-truth answers are *not all identical* are they
   and the prediction normalised (``processPunctuation`` then
   ``processDigitArticle``). So ``"Yes"`` or ``"yes."`` scores 0 against ten
   ``"yes"``: the upstream quirk, kept on purpose so numbers match the
   evaluation server;
3. accuracy = mean over annotators of ``min(1, matches among the other
   annotators / 3)`` (leave one annotator out). One matching annotator out of
   ten gives 0.3, two 0.6, three 0.9, four or more 1.0.

Overall accuracy averages all questions; per answer type averages that type's
questions. Upstream prints ``round(100 * x, 2)``; this module returns the
unrounded fraction. Normalisation lower-cases (``processDigitArticle`` does),
so the capitalised contraction keys upstream (``"Im"``, ``"Ive"``) never
match; they are kept as they are. Differences from upstream, all in input
handling: annotators are told apart by position (upstream compares the answer
dicts, which differ by ``answer_id``), and bad files raise
:class:`MetricInputError` instead of ``AssertionError``/``KeyError``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

# VQA v2's answer types, in the order reports list them. Defined here, by the
# metric that scores them: lxsweep.data imports this module, never the reverse.
ANSWER_TYPES = ("yes/no", "number", "other")

# --- Normalisation tables, copied verbatim from vqaEval.py (a013f00). ----------

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# Upstream's "(?!<=\d)" was meant as a look-behind but is a look-ahead for "<=",
# which never matches before a ".": any period not followed by a digit goes.
# re.ASCII: upstream ran on Python 2, where \d in a str pattern is [0-9] only.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)
# Upstream passes re.UNICODE (== 32) as sub()'s third positional argument,
# which is `count`: at most 32 periods are removed.
_PERIOD_STRIP_COUNT = int(re.UNICODE)
_PUNCT = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)

_NORMALIZE_CACHE_SIZE = 1 << 20


class MetricInputError(ValueError):
    """A questions, annotations or predictions file that cannot be scored; the message names file and problem."""


def _process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: drop or space out punctuation, then drop periods."""
    out = text
    # Upstream decides drop-or-space on the *input* text, not the text being edited.
    drop = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        if drop or (p + " " in text) or (" " + p in text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lower-case, number words to digits, drop articles, fix contractions."""
    words = []
    for word in text.lower().split():
        word = _MANUAL_MAP.get(word, word)
        if word not in _ARTICLES:
            words.append(word)
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


@lru_cache(maxsize=_NORMALIZE_CACHE_SIZE)
def normalize_answer(answer: str) -> str:
    """processPunctuation then processDigitArticle (as vqaEval applies them), lru_cached (answers repeat a lot).

    ``normalize_answer("Two dogs.") == "2 dogs"``. This is the normalisation
    only; :func:`question_accuracy` decides, as upstream does, whether to apply it.
    """
    return _process_digit_article(_process_punctuation(answer))


def _clean(answer: str) -> str:
    """The whitespace clean-up vqaEval applies to every answer before anything else."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def question_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official per-question accuracy in [0,1] for one predicted string against the annotators' answers (usually 10).

    Answers are normalised only when the cleaned annotator answers are not all
    identical (the upstream rule), then each annotator is left out in turn and
    ``min(1, matches among the rest / 3)`` is averaged.
    """
    if not gt_answers:
        raise ValueError("question_accuracy: no ground-truth answers to score against")
    gts = [_clean(a) for a in gt_answers]
    pred = _clean(prediction)
    if len(set(gts)) > 1:
        gts = [normalize_answer(a) for a in gts]
        pred = normalize_answer(pred)
    matches = [a == pred for a in gts]
    total_matches = sum(matches)
    # Summed one annotator at a time, in order, as upstream does, so the
    # floating-point result is bit-identical (sum() is compensated on 3.12+).
    total = 0.0
    for is_match in matches:
        total += min(1.0, (total_matches - is_match) / 3)
    return total / len(gts)


def score(
    predictions: Sequence[str],
    gt_answers: Sequence[Sequence[str]],
    answer_types: Sequence[str],
    question_kinds: Sequence[str] | None = None,
) -> dict[str, float]:
    """Unrounded fractions in [0,1]: 'overall', 'yes/no', 'number', 'other', and 'kind/<name>' per question kind.

    A type with no questions is omitted; ``kind/...`` keys appear only when
    ``question_kinds`` is given. Every average is over questions (the mean of
    per-question accuracies), as upstream computes it.
    """
    n = len(predictions)
    lengths = {"gt_answers": len(gt_answers), "answer_types": len(answer_types)}
    if question_kinds is not None:
        lengths["question_kinds"] = len(question_kinds)
    for name, length in lengths.items():
        if length != n:
            raise ValueError(f"score: {name} has {length} entries but predictions has {n} — give one entry per question")
    if n == 0:
        raise ValueError("score: no questions to score")

    overall = 0.0
    by_type: dict[str, list] = {}  # name -> [sum, count]
    by_kind: dict[str, list] = {}
    for i in range(n):
        answer_type = answer_types[i]
        if answer_type not in ANSWER_TYPES:
            raise ValueError(
                f"score: question {i} has answer type {answer_type!r}; expected one of {', '.join(ANSWER_TYPES)}"
            )
        acc = question_accuracy(predictions[i], gt_answers[i])
        overall += acc
        _add(by_type, answer_type, acc)
        if question_kinds is not None:
            _add(by_kind, question_kinds[i], acc)

    result = {"overall": overall / n}
    for answer_type in ANSWER_TYPES:
        if answer_type in by_type:
            total, count = by_type[answer_type]
            result[answer_type] = total / count
    for kind in sorted(by_kind):
        total, count = by_kind[kind]
        result[f"kind/{kind}"] = total / count
    return result


def accuracy_metrics(
    predictions: Sequence[str],
    gt_answers: Sequence[Sequence[str]],
    answer_types: Sequence[str],
    question_kinds: Sequence[str],
) -> dict[str, float]:
    """:func:`score` under lxsweep's metric names: ``accuracy``, ``accuracy_yesno``, ..., ``accuracy_<kind>``.

    Per-kind accuracies (the official evaluator's ``perQuestionType`` when the
    kinds are VQA's ``question_type``) appear only when the kinds say more than
    the answer types, so a dataset whose kinds *are* its answer types gets no
    duplicate columns. Trials and baselines both name their metrics here.
    """
    use_kinds = set(question_kinds) != set(answer_types)
    raw = score(predictions, gt_answers, answer_types, question_kinds if use_kinds else None)
    return {metric_name(k): v for k, v in raw.items()}


def metric_name(key: str) -> str:
    """``overall`` -> ``accuracy``, ``yes/no`` -> ``accuracy_yesno``, ``kind/count`` -> ``accuracy_count``."""
    if key == "overall":
        return "accuracy"
    return "accuracy_" + key.split("/", 1)[1] if key.startswith("kind/") else "accuracy_" + key.replace("/", "")


def _add(groups: dict[str, list], key: str, value: float) -> None:
    group = groups.setdefault(key, [0.0, 0])
    group[0] += value
    group[1] += 1


# --- Official-format files ---------------------------------------------------


def evaluate_files(
    questions_path: str | Path, annotations_path: str | Path, predictions_path: str | Path
) -> dict[str, float]:
    """Score an official-format predictions file; returns 'overall', 'yes/no', 'number', 'other' (unrounded).

    ``questions_path``: ``{"questions": [{"question_id", "image_id", "question"}, ...]}``;
    ``annotations_path``: ``{"annotations": [{"question_id", "answer_type", "answers":
    [{"answer", ...}, ...], ...}, ...]}``; ``predictions_path``: ``[{"question_id": int,
    "answer": str}, ...]``. Like upstream ``loadRes``, the predictions must cover
    exactly the annotated question ids. Raises :class:`MetricInputError` naming
    the file and the problem for a missing file, bad JSON, a wrong shape, missing,
    unknown or duplicate prediction ids, or annotations whose questions are not
    in the questions file.
    """
    question_ids = _read_question_ids(Path(questions_path))
    gt_answers, answer_types, annotation_ids = _read_annotations(Path(annotations_path), question_ids)
    answers = _read_predictions(Path(predictions_path), annotation_ids)
    predictions = [answers[qid] for qid in annotation_ids]  # upstream scores in annotation order
    return score(predictions, gt_answers, answer_types)


def _load_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise MetricInputError(f"{what} file {path}: no such file")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise MetricInputError(f"{what} file {path}: not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricInputError(f"{what} file {path}: cannot be read ({exc})") from None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _items(data: Any, key: str | None, path: Path, what: str, example: str) -> list:
    """The list of entries of a file: data[key], or data itself when key is None (may be empty)."""
    if key is None:
        items = data
    else:
        items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise MetricInputError(f"{what} file {path}: expected {example}, got {_describe(data)}")
    return items


def _describe(data: Any) -> str:
    if isinstance(data, dict):
        return f"an object with keys {sorted(data)[:5]}"
    return f"a JSON {type(data).__name__}"


def _read_question_ids(path: Path) -> set[int]:
    items = _items(_load_json(path, "questions"), "questions", path, "questions",
                   '{"questions": [{"question_id": ..., "image_id": ..., "question": ...}, ...]}')
    ids = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not _is_id(item.get("question_id")):
            raise MetricInputError(f"questions file {path}: questions[{i}] has no integer 'question_id'")
        ids.add(item["question_id"])
    return ids


def _read_annotations(path: Path, question_ids: set[int]) -> tuple[list[list[str]], list[str], list[int]]:
    items = _items(_load_json(path, "annotations"), "annotations", path, "annotations",
                   '{"annotations": [{"question_id": ..., "answer_type": ..., "answers": [...]}, ...]}')
    if not items:
        raise MetricInputError(f"annotations file {path}: no annotations, so nothing to score")
    gt_answers: list[list[str]] = []
    answer_types: list[str] = []
    ids: list[int] = []
    seen: set[int] = set()
    for i, ann in enumerate(items):
        where = f"annotations file {path}: annotations[{i}]"
        if not isinstance(ann, dict) or not _is_id(ann.get("question_id")):
            raise MetricInputError(f"{where} has no integer 'question_id'")
        qid = ann["question_id"]
        if qid in seen:
            raise MetricInputError(f"{where}: question_id {qid} is annotated twice")
        if qid not in question_ids:
            raise MetricInputError(
                f"{where}: question_id {qid} is not in the questions file; are the two files from the same split?"
            )
        if ann.get("answer_type") not in ANSWER_TYPES:
            raise MetricInputError(
                f"{where} (question_id {qid}): answer_type {ann.get('answer_type')!r}; "
                f"expected one of {', '.join(ANSWER_TYPES)}"
            )
        answers = ann.get("answers")
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)):
            raise MetricInputError(
                f"{where} (question_id {qid}): 'answers' must be a non-empty list of {{\"answer\": str, ...}}"
            )
        seen.add(qid)
        ids.append(qid)
        gt_answers.append([a["answer"] for a in answers])
        answer_types.append(ann["answer_type"])
    return gt_answers, answer_types, ids


def _read_predictions(path: Path, annotation_ids: list[int]) -> dict[int, str]:
    items = _items(_load_json(path, "predictions"), None, path, "predictions",
                   '[{"question_id": int, "answer": str}, ...]')
    answers: dict[int, str] = {}
    for i, item in enumerate(items):
        where = f"predictions file {path}: entry {i}"
        if not isinstance(item, dict) or not _is_id(item.get("question_id")):
            raise MetricInputError(f"{where} has no integer 'question_id'")
        qid = item["question_id"]
        if not isinstance(item.get("answer"), str):
            raise MetricInputError(f"{where} (question_id {qid}) has no string 'answer'")
        if qid in answers:
            raise MetricInputError(f"{where}: question_id {qid} is predicted twice")
        answers[qid] = item["answer"]
    expected = set(annotation_ids)
    missing = [qid for qid in annotation_ids if qid not in answers]
    if missing:
        raise MetricInputError(
            f"predictions file {path}: no prediction for {len(missing)} annotated question(s), "
            f"e.g. question_id {_first(missing)}"
        )
    unknown = [qid for qid in answers if qid not in expected]
    if unknown:
        raise MetricInputError(
            f"predictions file {path}: {len(unknown)} prediction(s) for question ids not in the annotations, "
            f"e.g. question_id {_first(unknown)}"
        )
    return answers


def _first(ids: list[int], limit: int = 5) -> str:
    return ", ".join(str(qid) for qid in ids[:limit]) + (", ..." if len(ids) > limit else "")
