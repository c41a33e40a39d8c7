"""The command line: help with examples everywhere, vqa-eval's JSON, status/report on a bad target."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

COMMANDS = ["launch", "plan", "trial", "status", "report", "export", "predict", "prepare-vqa", "synth", "vqa-eval"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lxsweep.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    out = cli(command, "--help")
    assert out.returncode == 0
    assert "example" in out.stdout.lower() and "lxsweep" in out.stdout


def test_vqa_eval_prints_official_accuracy_json(tmp_path):
    questions = {"questions": [{"question_id": 1, "image_id": 9, "question": "Is it red?"},
                               {"question_id": 2, "image_id": 9, "question": "How many?"}]}
    annotations = {"annotations": [
        {"question_id": 1, "image_id": 9, "question_type": "is it", "answer_type": "yes/no", "multiple_choice_answer": "yes",
         "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]},
        {"question_id": 2, "image_id": 9, "question_type": "how many", "answer_type": "number", "multiple_choice_answer": "2",
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(["2"] * 2 + ["3"] * 8)]},
    ]}
    predictions = [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "two"}]
    paths = {}
    for name, obj in (("q", questions), ("a", annotations), ("p", predictions)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(obj))
    out = cli("vqa-eval", "--questions", str(paths["q"]), "--annotations", str(paths["a"]), "--predictions", str(paths["p"]))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"overall", "yes/no", "number"}
    assert result["yes/no"] == 1.0
    # "two" normalises to "2" (answers differ, so normalisation applies): 2 of 10 annotators -> 0.6 exactly
    assert result["number"] == pytest.approx(0.6)
    assert result["overall"] == pytest.approx(0.8)
    paths["p"].write_text(json.dumps(predictions[:1]))
    bad = cli("vqa-eval", "--questions", str(paths["q"]), "--annotations", str(paths["a"]), "--predictions", str(paths["p"]))
    assert bad.returncode == 2 and str(paths["p"]) in bad.stderr and "Traceback" not in bad.stderr


def test_status_on_something_that_is_not_a_store(tmp_path):
    out = cli("status", str(tmp_path))
    assert out.returncode == 2 and "not a store" in out.stderr
