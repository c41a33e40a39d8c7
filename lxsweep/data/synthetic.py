"""Synthetic VQA: generated scenes and templated questions in VQA v2's shapes.

Each image holds 2-4 objects (colour, shape, size, position) among
``num_boxes`` regions; the other regions are clutter. A region's feature is
a fixed random projection of its object's attributes plus Gaussian noise, its
box the object's normalised corners, so the model must bind features to
positions. Questions come in the three VQA answer types and four kinds:

=========  ==========  ==============================================
kind       answer type example
=========  ==========  ==============================================
exist      yes/no      is there a red cube?
count      number      how many spheres are there?
attribute  other       what color is the large cone?
spatial    yes/no /    is the cube left of the sphere? /
           other       what shape is the object left of the red cube?
=========  ==========  ==============================================

Ten simulated annotators answer each question; each gives a plausible wrong
answer of the same type with probability ``annotator_noise``, so the official
VQA metric applies unchanged. The task is a pure function of its config and
``seed``: trial seeds never change the data.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from lxsweep.config import SyntheticConfig
from lxsweep.data import VQADataset, VQASplit, soft_score

COLORS = ("red", "blue", "green", "yellow", "purple", "gray")
SHAPES = ("cube", "sphere", "cylinder", "cone")
SIZES = ("small", "large")
COUNTS = ("0", "1", "2", "3", "4")
KINDS = ("exist", "count", "attribute", "spatial")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEMPLATE_WORDS = (
    "is there a are how many what color shape size the object objects of left right thing things ? "
    "any that is to"
).split()


def vocabulary() -> list[str]:
    """Every word the generator can emit, after BERT's special tokens (a tokenizer vocab)."""
    words = list(SPECIAL_TOKENS)
    for w in [*TEMPLATE_WORDS, *COLORS, *SHAPES, *SIZES, *(s + "s" for s in SHAPES), "spheres", "cubes"]:
        if w not in words:
            words.append(w)
    return words


def write_tokenizer(directory: str | Path) -> None:
    """Save a word-level BERT tokenizer for the synthetic vocabulary (``from_pretrained``-loadable)."""
    from transformers import BertTokenizer

    vocab = {word: i for i, word in enumerate(vocabulary())}
    BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(str(directory))


def _plural(shape: str) -> str:
    return shape + "s"


class _Generator:
    def __init__(self, cfg: SyntheticConfig, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        # The projection is part of the task (fixed by cfg.seed), not of the split.
        proj = np.random.default_rng(cfg.seed + 7919)
        scale = 1.0 / np.sqrt(3)
        self.emb_color = proj.standard_normal((len(COLORS), cfg.feat_dim)) * scale
        self.emb_shape = proj.standard_normal((len(SHAPES), cfg.feat_dim)) * scale
        self.emb_size = proj.standard_normal((len(SIZES), cfg.feat_dim)) * scale
        self.emb_clutter = proj.standard_normal((8, cfg.feat_dim)) * scale

    def scene(self) -> list[dict]:
        rng = self.rng
        n = int(rng.integers(2, 5))
        objs = []
        xs = rng.permutation(np.linspace(0.1, 0.9, 9))[:n]  # distinct x: "left of" is always defined
        for x in xs:
            objs.append({
                "color": int(rng.integers(len(COLORS))),
                "shape": int(rng.integers(len(SHAPES))),
                "size": int(rng.integers(len(SIZES))),
                "x": float(x),
                "y": float(rng.uniform(0.2, 0.8)),
            })
        return objs

    def regions(self, objs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        cfg, rng = self.cfg, self.rng
        feats = np.zeros((cfg.num_boxes, cfg.feat_dim), dtype=np.float32)
        boxes = np.zeros((cfg.num_boxes, 4), dtype=np.float32)
        slots = rng.permutation(cfg.num_boxes)
        for slot, o in zip(slots, objs):
            half = 0.05 if o["size"] == 0 else 0.09
            feats[slot] = self.emb_color[o["color"]] + self.emb_shape[o["shape"]] + self.emb_size[o["size"]]
            boxes[slot] = [o["x"] - half, o["y"] - half, o["x"] + half, o["y"] + half]
        for slot in slots[len(objs):]:
            feats[slot] = self.emb_clutter[int(rng.integers(len(self.emb_clutter)))] * 0.5
            cx, cy, half = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95), rng.uniform(0.02, 0.2)
            boxes[slot] = [cx - half, cy - half, cx + half, cy + half]
        feats += rng.standard_normal(feats.shape).astype(np.float32) * cfg.feature_noise
        return feats, np.clip(boxes, 0.0, 1.0)

    def describe(self, objs: list[dict], o: dict) -> str | None:
        """Shortest unique description of ``o`` in the scene, or None."""
        for attrs in (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape")):
            same = [p for p in objs if all(p[a] == o[a] for a in attrs)]
            if len(same) == 1:
                words = [
                    {"color": COLORS, "shape": SHAPES, "size": SIZES}[a][o[a]] for a in attrs
                ]
                return " ".join(words)
        return None

    def question(self, objs: list[dict]) -> tuple[str, str, str, str]:
        """(question, answer, answer_type, kind) for one scene."""
        rng = self.rng
        while True:
            kind = KINDS[int(rng.integers(len(KINDS)))]
            if kind == "exist":
                c, s = int(rng.integers(len(COLORS))), int(rng.integers(len(SHAPES)))
                if rng.random() < 0.5:  # balance yes/no: ask about a present object half the time
                    o = objs[int(rng.integers(len(objs)))]
                    c, s = o["color"], o["shape"]
                yes = any(o["color"] == c and o["shape"] == s for o in objs)
                return f"is there a {COLORS[c]} {SHAPES[s]} ?", "yes" if yes else "no", "yes/no", kind
            if kind == "count":
                if rng.random() < 0.5:
                    s = int(rng.integers(len(SHAPES)))
                    n = sum(o["shape"] == s for o in objs)
                    return f"how many {_plural(SHAPES[s])} are there ?", str(n), "number", kind
                c = int(rng.integers(len(COLORS)))
                n = sum(o["color"] == c for o in objs)
                return f"how many {COLORS[c]} objects are there ?", str(n), "number", kind
            o = objs[int(rng.integers(len(objs)))]
            desc = self.describe(objs, o)
            if desc is None:
                continue
            if kind == "attribute":
                words = desc.split()
                asks = []
                if COLORS[o["color"]] not in words:
                    asks.append((f"what color is the {desc} ?", COLORS[o["color"]]))
                if SIZES[o["size"]] not in words:
                    asks.append((f"what size is the {desc} ?", SIZES[o["size"]]))
                if not asks:
                    continue
                q, a = asks[int(rng.integers(len(asks)))]
                return q, a, "other", kind
            # spatial
            others = [p for p in objs if p is not o]
            p = others[int(rng.integers(len(others)))]
            pdesc = self.describe(objs, p)
            if pdesc is None:
                continue
            if rng.random() < 0.5:
                side = "left" if rng.random() < 0.5 else "right"
                truth = (o["x"] < p["x"]) if side == "left" else (o["x"] > p["x"])
                return f"is the {desc} {side} of the {pdesc} ?", "yes" if truth else "no", "yes/no", kind
            left_of = [q for q in objs if q["x"] < p["x"]]
            if len(left_of) == 1:
                return f"what shape is the object left of the {pdesc} ?", SHAPES[left_of[0]["shape"]], "other", kind

    def annotators(self, answer: str, answer_type: str) -> list[str]:
        pool = {"yes/no": ("yes", "no"), "number": COUNTS}.get(answer_type)
        if pool is None:
            pool = COLORS if answer in COLORS else SHAPES if answer in SHAPES else SIZES
        out = []
        for _ in range(10):
            if self.rng.random() < self.cfg.annotator_noise:
                wrong = [a for a in pool if a != answer]
                out.append(wrong[int(self.rng.integers(len(wrong)))])
            else:
                out.append(answer)
        return out


def generate_split(cfg: SyntheticConfig, num_questions: int, split_seed: int, questions_per_image: int = 3) -> dict:
    """Raw arrays and lists for ``num_questions`` questions over fresh scenes."""
    gen = _Generator(cfg, split_seed)
    num_images = -(-num_questions // questions_per_image)
    features = np.zeros((num_images, cfg.num_boxes, cfg.feat_dim), dtype=np.float32)
    boxes = np.zeros((num_images, cfg.num_boxes, 4), dtype=np.float32)
    questions, answers, types, kinds, image_index = [], [], [], [], []
    for img in range(num_images):
        objs = gen.scene()
        features[img], boxes[img] = gen.regions(objs)
        for _ in range(questions_per_image):
            if len(questions) == num_questions:
                break
            q, a, t, k = gen.question(objs)
            questions.append(q)
            answers.append(gen.annotators(a, t))
            types.append(t)
            kinds.append(k)
            image_index.append(img)
    return {
        "features": features, "boxes": boxes, "questions": questions, "answers": answers,
        "answer_types": types, "question_kinds": kinds, "image_index": np.asarray(image_index, dtype=np.int64),
    }


def _to_split(raw: dict, label_of: dict[str, int], id_offset: int) -> VQASplit:
    n = len(raw["questions"])
    labels = np.full((n, 10), -1, dtype=np.int64)
    scores = np.zeros((n, 10), dtype=np.float32)
    for i, annotations in enumerate(raw["answers"]):
        counted = [(a, c) for a, c in sorted(Counter(annotations).items()) if a in label_of]
        for j, (a, c) in enumerate(counted):
            labels[i, j], scores[i, j] = label_of[a], soft_score(c)
    return VQASplit(
        question_ids=np.arange(id_offset, id_offset + n, dtype=np.int64),
        questions=raw["questions"], image_index=raw["image_index"], features=raw["features"],
        boxes=raw["boxes"], answers=raw["answers"], answer_types=raw["answer_types"],
        question_kinds=raw["question_kinds"], target_labels=labels, target_scores=scores,
    )


def answer_vocabulary(answer_lists: list[list[str]]) -> list[str]:
    """Answers seen in training, most frequent first (ties alphabetical): deterministic."""
    counts = Counter(a for answers in answer_lists for a in answers)
    return sorted(counts, key=lambda a: (-counts[a], a))


def synthetic_dataset(cfg: SyntheticConfig, purpose: str = "finetune") -> VQADataset:
    """The task's splits. ``purpose="pretrain"`` gives the disjoint pretraining split.

    Splits are seeded from ``cfg.seed`` and the split's role, so fine-tune
    train, validation and pretraining scenes never coincide.
    """
    if purpose == "pretrain":
        train = generate_split(cfg, cfg.pretrain_questions, cfg.seed * 10 + 3)
        valid = generate_split(cfg, min(cfg.valid_questions, 500), cfg.seed * 10 + 4)
    elif purpose == "finetune":
        train = generate_split(cfg, cfg.train_questions, cfg.seed * 10 + 1)
        valid = generate_split(cfg, cfg.valid_questions, cfg.seed * 10 + 2)
    else:
        raise ValueError(f"purpose must be 'pretrain' or 'finetune', got {purpose!r}")
    vocab = answer_vocabulary(train["answers"])
    label_of = {a: i for i, a in enumerate(vocab)}
    return VQADataset(train=_to_split(train, label_of, 0), valid=_to_split(valid, label_of, 10_000_000), answers=vocab)
