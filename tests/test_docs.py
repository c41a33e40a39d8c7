"""The docs stay true to the code: every experiment key is documented with its default, every command
has a row, every relative link resolves, and the README stays a short guide (the reference lives in docs/)."""
from __future__ import annotations

import argparse
import dataclasses
import re

import yaml

from conftest import ROOT
from lxsweep.cli import build_parser
from lxsweep.config import from_dict

NOT_KEYS = {"source", "recorded_hash", "hashed_paths"}  # bookkeeping of a loaded file, not settings


def _fields(obj, prefix: str = "") -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        if f.name in NOT_KEYS and not prefix:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_fields(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def _reference_block() -> str:
    text = (ROOT / "docs" / "EXPERIMENT.md").read_text()
    return re.search(r"All keys with their defaults.*?```yaml\n(.*?)```", text, re.S).group(1)


def _flat(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_the_experiment_reference_lists_every_key_with_its_default():
    block = yaml.safe_load(_reference_block())
    want = _fields(from_dict({}))
    assert sorted(_flat(block)) == sorted(want)  # every key spelled out, none that the code lacks
    documented = _fields(from_dict(block))
    assert {k: v for k, v in documented.items() if v != want[k]} == {}  # with the defaults as values


def _subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_every_command_has_a_row_in_the_cli_reference():
    text = (ROOT / "docs" / "CLI.md").read_text()
    rows = set(re.findall(r"^\| `lxsweep ([a-z-]+)", text, re.M))
    assert rows == set(_subcommands())


def test_relative_links_resolve():
    broken = []
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_readme_is_a_short_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    # the two commands, exactly as CI and a new user run them
    assert "pip install -e . && lxsweep launch experiments/smoke.yaml" in text
    assert 'pip install -e ".[test]" && python -m pytest -q' in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert '-e ".[test]" && python -m pytest -q' in ci
    for doc in ("EXPERIMENT", "CLI", "CLUSTER", "ARCHITECTURE", "PERFORMANCE"):
        assert f"(docs/{doc}.md)" in text
