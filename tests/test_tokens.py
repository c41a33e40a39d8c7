"""Question tokens are made once per node: cached by what they depend on, read back by later trials."""
from __future__ import annotations

import torch

from lxsweep.data.loader import tokenize
from lxsweep.data.synthetic import write_tokenizer
from lxsweep.data.tokens import question_tokens, tokens_key
from lxsweep.model import load_tokenizer

QUESTIONS = ["what color is the cube?", "how many spheres are there?", "is there a red cylinder left of it?"] * 5


class Counting:
    """A real tokenizer that counts the times it is asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def _tokenizer(tmp_path):
    write_tokenizer(tmp_path / "tok")
    return load_tokenizer(str(tmp_path / "tok"))


def test_the_second_trial_reads_the_tokens_the_first_one_made(tmp_path):
    tok = Counting(_tokenizer(tmp_path))
    first = question_tokens(tok, QUESTIONS, 12, cache=tmp_path / "cache")
    second = question_tokens(tok, QUESTIONS, 12, cache=tmp_path / "cache")
    assert tok.calls == 1
    plain = tokenize(tok.tokenizer, QUESTIONS, 12)  # what the loader feeds the model: int64, the same values
    for name in plain:
        assert torch.equal(first[name].long(), plain[name]) and torch.equal(second[name], first[name]), name
    assert first["input_ids"].dtype == torch.int32 and first["attention_mask"].dtype == torch.int8


def test_the_key_follows_the_tokenizer_the_length_and_the_questions(tmp_path):
    tok = _tokenizer(tmp_path)
    key = tokens_key(tok, QUESTIONS, 12)
    assert tokens_key(tok, QUESTIONS, 12) == key
    assert tokens_key(tok, QUESTIONS, 20) != key
    assert tokens_key(tok, QUESTIONS[:-1], 12) != key
    assert tokens_key(tok, [q.upper() for q in QUESTIONS], 12) != key
    tok.add_tokens(["cube-ish"])  # a changed vocabulary is a different tokenizer
    assert tokens_key(tok, QUESTIONS, 12) != key


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    tok = Counting(_tokenizer(tmp_path))
    cache = tmp_path / "cache"
    good = question_tokens(tok, QUESTIONS, 12, cache=cache)
    entry = cache / "tokens" / tokens_key(tok, QUESTIONS, 12)
    (entry / "input_ids.npy").write_bytes(b"truncated")
    again = question_tokens(tok, QUESTIONS, 12, cache=cache)
    assert tok.calls == 2 and torch.equal(again["input_ids"], good["input_ids"])
    assert question_tokens(tok, QUESTIONS, 12, cache=cache) is not None and tok.calls == 2  # repaired on disk


def test_an_unwritable_cache_costs_only_the_speed_up(tmp_path):
    tok = _tokenizer(tmp_path)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    out = question_tokens(tok, QUESTIONS, 12, cache=blocked)
    assert torch.equal(out["input_ids"].long(), tokenize(tok, QUESTIONS, 12)["input_ids"])
