"""Synthetic VQA: generated scenes and templated questions in VQA v2's shapes.

Each image holds 2-4 objects (colour, shape, size, position) among
``num_boxes`` regions; the other regions are clutter. A region's feature is
a fixed random projection of its object's attributes plus Gaussian noise, its
box the object's normalised corners, so the model must bind features to
positions. Questions come in the three VQA answer types and four kinds:

=========  ==========  ==============================================
kind       answer type example
=========  ==========  ==============================================
exist      yes/no      is there a red object? / is there a cube?
count      number      how many objects are there? / how many cones ...?
attribute  other       what color is the leftmost object?
spatial    yes/no      is the rightmost object a sphere?
=========  ==========  ==============================================

``exist`` and ``count`` by shape must bind a word to region features (slow
for a small transformer to learn); ``attribute`` must find an object by its
box and read its features; ``spatial`` must do both.

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
from lxsweep.data import VQADataset, VQASplit, pad_targets, soft_targets

COLORS = ("red", "blue", "green", "yellow", "purple", "gray")
SHAPES = ("cube", "sphere", "cylinder", "cone")
SIZES = ("small", "large")
COUNTS = ("0", "1", "2", "3", "4")
KINDS = ("exist", "count", "attribute", "spatial")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Per-box class ids, as a detector's objects_id / attrs_id: object id = shape, attribute id = colour;
# clutter boxes get their own object id and the "none" attribute.
OBJECT_NAMES = (*SHAPES, "clutter")
ATTRIBUTE_NAMES = (*COLORS, "none")
TEMPLATE_WORDS = "is there a are how many what color shape size the object objects leftmost rightmost ?".split()


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

    def regions(self, objs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cfg, rng = self.cfg, self.rng
        feats = np.zeros((cfg.num_boxes, cfg.feat_dim), dtype=np.float32)
        boxes = np.zeros((cfg.num_boxes, 4), dtype=np.float32)
        object_labels = np.full(cfg.num_boxes, OBJECT_NAMES.index("clutter"), dtype=np.int64)
        attr_labels = np.full(cfg.num_boxes, ATTRIBUTE_NAMES.index("none"), dtype=np.int64)
        slots = rng.permutation(cfg.num_boxes)
        for slot, o in zip(slots, objs):
            half = 0.05 if o["size"] == 0 else 0.09
            feats[slot] = self.emb_color[o["color"]] + self.emb_shape[o["shape"]] + self.emb_size[o["size"]]
            boxes[slot] = [o["x"] - half, o["y"] - half, o["x"] + half, o["y"] + half]
            object_labels[slot], attr_labels[slot] = o["shape"], o["color"]
        for slot in slots[len(objs):]:
            feats[slot] = self.emb_clutter[int(rng.integers(len(self.emb_clutter)))] * 0.5
            cx, cy, half = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95), rng.uniform(0.02, 0.2)
            boxes[slot] = [cx - half, cy - half, cx + half, cy + half]
        feats += rng.standard_normal(feats.shape).astype(np.float32) * cfg.feature_noise
        return feats, np.clip(boxes, 0.0, 1.0), object_labels, attr_labels

    def question(self, objs: list[dict]) -> tuple[str, str, str, str]:
        """(question, answer, answer_type, kind) for one scene; yes/no answers are balanced."""
        rng = self.rng
        kind = KINDS[int(rng.integers(len(KINDS)))]
        pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
        side = pick(("leftmost", "rightmost"))
        target = (min if side == "leftmost" else max)(objs, key=lambda o: o["x"])
        if kind == "count":
            if rng.random() < 0.5:
                return "how many objects are there ?", str(len(objs)), "number", kind
            s = int(rng.integers(len(SHAPES)))
            return f"how many {_plural(SHAPES[s])} are there ?", str(sum(o["shape"] == s for o in objs)), "number", kind
        if kind == "attribute":
            attr = pick(("color", "shape", "size"))
            names = {"color": COLORS, "shape": SHAPES, "size": SIZES}[attr]
            return f"what {attr} is the {side} object ?", names[target[attr]], "other", kind
        want = bool(rng.random() < 0.5)
        if kind == "exist":
            attr = pick(("color", "shape"))
            names = COLORS if attr == "color" else SHAPES
            present = {o[attr] for o in objs}
            pool = [v for v in range(len(names)) if (v in present) == want] or list(present)
            v = pick(pool)
            text = f"is there a {names[v]} object ?" if attr == "color" else f"is there a {names[v]} ?"
            return text, "yes" if v in present else "no", "yes/no", kind
        # spatial: read the attribute of the object at one end and compare it with a word
        attr = pick(("color", "shape"))
        names = COLORS if attr == "color" else SHAPES
        v = target[attr] if want else pick([i for i in range(len(names)) if i != target[attr]])
        text = f"is the {side} object {names[v]} ?" if attr == "color" else f"is the {side} object a {names[v]} ?"
        return text, "yes" if v == target[attr] else "no", "yes/no", kind

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
    """Raw arrays and lists for ``num_questions`` questions over fresh scenes.

    Per image: ``features``, ``boxes`` (normalised), ``object_labels`` and
    ``attr_labels`` (int64 [num_images, num_boxes], ids into OBJECT_NAMES /
    ATTRIBUTE_NAMES), ``scenes``. Per question: ``questions``, ``answers`` (ten
    annotators), ``answer_types``, ``question_kinds`` (the VQA question_type)
    and ``image_index``.
    """
    gen = _Generator(cfg, split_seed)
    num_images = -(-num_questions // questions_per_image)
    features = np.zeros((num_images, cfg.num_boxes, cfg.feat_dim), dtype=np.float32)
    boxes = np.zeros((num_images, cfg.num_boxes, 4), dtype=np.float32)
    object_labels = np.zeros((num_images, cfg.num_boxes), dtype=np.int64)
    attr_labels = np.zeros((num_images, cfg.num_boxes), dtype=np.int64)
    questions, answers, types, kinds, image_index, scenes = [], [], [], [], [], []
    for img in range(num_images):
        objs = gen.scene()
        scenes.append(objs)
        features[img], boxes[img], object_labels[img], attr_labels[img] = gen.regions(objs)
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
        "features": features, "boxes": boxes, "object_labels": object_labels, "attr_labels": attr_labels,
        "questions": questions, "answers": answers,
        "answer_types": types, "question_kinds": kinds, "image_index": np.asarray(image_index, dtype=np.int64),
        "scenes": scenes,  # the ground truth behind the features, for tests and inspection
    }


def _to_split(raw: dict, label_of: dict[str, int], id_offset: int) -> VQASplit:
    n = len(raw["questions"])
    labels, scores = pad_targets([soft_targets(given, label_of) for given in raw["answers"]])
    return VQASplit(
        question_ids=np.arange(id_offset, id_offset + n, dtype=np.int64),
        questions=raw["questions"], image_index=raw["image_index"], features=raw["features"],
        boxes=raw["boxes"], answers=raw["answers"], answer_types=raw["answer_types"],
        question_kinds=raw["question_kinds"], target_labels=labels, target_scores=scores,
        object_labels=raw["object_labels"], attr_labels=raw["attr_labels"],
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
