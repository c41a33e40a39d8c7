"""Synthetic VQA: generated scenes and templated questions in VQA v2's shapes.

Each image holds 2-4 objects (colour, shape, size, position) among
``num_boxes`` regions; the other regions are clutter. A region's feature is
a fixed random projection of its object's attributes plus Gaussian noise, its
box the object's corners, so the model must bind words to regions. Questions
come in the three VQA answer types and four kinds (the official annotations'
``question_type``):

=========  ==========  ======================================================
kind       answer type example
=========  ==========  ======================================================
exist      yes/no      is there a red cube ?
count      number      how many red objects are there ? / how many cubes are there ?
attribute  other       what color is the cube ? / what shape is the red object ?
spatial    other       where is the cube ? / where is the red object ?  (left / right)
=========  ==========  ======================================================

Every kind needs the image: ``exist`` binds a colour *and* a shape word to one
region; ``count`` binds a word to regions and counts them; ``attribute`` finds
the one object a word names and reads another of its attributes; ``spatial``
finds it and reads its box (which half of the image). Objects named in ``attribute``/``spatial``
questions are unique in their scene. Yes/no answers are balanced, so a
question-only ("blind") predictor sits near the answer priors.

Why this design (and not the first two): the first could be answered from the
question alone; the second asked for relations between the leftmost object
and a word ("is the leftmost object a sphere?") that a tiny post-LayerNorm
LXMERT did not learn within a CPU budget, so the dense model only learned
counting. Measured before any pruning ran on it (see docs/results/demo), a
tiny LXMERT pretrained with LXMERT's objectives learns all four kinds here.

Ten simulated annotators answer each question; each gives a plausible wrong
answer of the same type with probability ``annotator_noise``, so the official
VQA metric applies unchanged. Every region also carries LXMERT-style detector
labels (``object_labels``: the shape or "clutter"; ``attr_labels``: the colour
or "none"), which pretraining's masked object/attribute prediction uses. The
task is a pure function of its config and ``seed``: trial seeds never change
the data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lxsweep.config import SYNTHETIC_ATTRIBUTES, SYNTHETIC_KINDS, SyntheticConfig

COLORS = ("red", "blue", "green", "yellow", "purple", "gray")
SHAPES = ("cube", "sphere", "cylinder", "cone")
SIZES = ("small", "large")
SIDES = ("left", "right")  # which half of the image an object's centre is in
COUNTS = ("0", "1", "2", "3", "4")
KINDS = SYNTHETIC_KINDS
NAMING_KINDS = ("attribute", "spatial")  # kinds that name one object of the scene uniquely
ATTRIBUTES = SYNTHETIC_ATTRIBUTES  # what an attribute question may ask
OBJECT_NAMES = (*SHAPES, "clutter")  # detector object classes: objects_id in the feature TSVs
ATTRIBUTE_NAMES = (*COLORS, "none")  # detector attribute classes: attrs_id
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEMPLATE_WORDS = "is there a how many are what where color shape size the object objects ?".split()
_CLUTTER_KINDS = 8


def vocabulary() -> list[str]:
    """Every word the generator can emit, after BERT's special tokens (a tokenizer vocab)."""
    words = list(SPECIAL_TOKENS)
    for w in [*TEMPLATE_WORDS, *COLORS, *SHAPES, *SIZES, *(_plural(s) for s in SHAPES)]:
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
        self.emb_clutter = proj.standard_normal((_CLUTTER_KINDS, cfg.feat_dim)) * scale

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def scene(self) -> list[dict]:
        rng = self.rng
        n = int(rng.integers(2, 5))
        xs = rng.permutation(np.linspace(0.05, 0.95, 10))[:n]  # distinct x, none on the centre line
        return [{
            "color": int(rng.integers(len(COLORS))), "shape": int(rng.integers(len(SHAPES))),
            "size": int(rng.integers(len(SIZES))), "x": float(x), "y": float(rng.uniform(0.2, 0.8)),
        } for x in xs]

    def regions(self, objs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features, boxes (normalised corners) and detector object/attribute ids of every region."""
        cfg, rng = self.cfg, self.rng
        feats = np.zeros((cfg.num_boxes, cfg.feat_dim), dtype=np.float32)
        boxes = np.zeros((cfg.num_boxes, 4), dtype=np.float32)
        obj_ids = np.full(cfg.num_boxes, OBJECT_NAMES.index("clutter"), dtype=np.int64)
        attr_ids = np.full(cfg.num_boxes, ATTRIBUTE_NAMES.index("none"), dtype=np.int64)
        slots = rng.permutation(cfg.num_boxes)
        for slot, o in zip(slots, objs):
            half = 0.05 if o["size"] == 0 else 0.09
            feats[slot] = self.emb_color[o["color"]] + self.emb_shape[o["shape"]] + self.emb_size[o["size"]]
            boxes[slot] = [o["x"] - half, o["y"] - half, o["x"] + half, o["y"] + half]
            obj_ids[slot], attr_ids[slot] = o["shape"], o["color"]
        for slot in slots[len(objs):]:
            feats[slot] = self.emb_clutter[int(rng.integers(_CLUTTER_KINDS))] * 0.5
            cx, cy, half = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95), rng.uniform(0.02, 0.2)
            boxes[slot] = [cx - half, cy - half, cx + half, cy + half]
        feats += rng.standard_normal(feats.shape).astype(np.float32) * cfg.feature_noise
        return feats, np.clip(boxes, 0.0, 1.0), obj_ids, attr_ids

    def _named_object(self, objs: list[dict], draw: bool = True,
                      bys: tuple[str, ...] = ("shape", "color")) -> tuple[dict, str, str] | None:
        """An object and a phrase naming it uniquely ("the cube", "the red object"), and the attribute used.

        ``bys``: the attributes a phrase may name it by. None when no object is unique in one of them (then no
        phrase names one object). ``draw=False`` only says whether one exists (the first option, no random draw).
        """
        options = [(o, by) for o in objs for by in ("shape", "color") if by in bys and sum(p[by] == o[by] for p in objs) == 1]
        if not options:
            return None
        if not draw:
            return options[0][0], "", options[0][1]
        o, by = self.pick(options)
        phrase = f"the {SHAPES[o['shape']]}" if by == "shape" else f"the {COLORS[o['color']]} object"
        return o, phrase, by

    @staticmethod
    def _bys(kind: str, attributes: tuple[str, ...]) -> tuple[str, ...]:
        """What a naming kind may name its object by: an attribute question never asks what it named it by."""
        if kind == "attribute":
            return tuple(b for b in ("shape", "color") if any(a != b for a in attributes))
        return ("shape", "color")

    def possible(self, objs: list[dict], kinds: tuple[str, ...], attributes: tuple[str, ...] = ATTRIBUTES) -> list[str]:
        """The kinds of ``kinds`` a question can be asked in about the scene (naming kinds need a unique object)."""
        return [k for k in kinds if k not in NAMING_KINDS
                or self._named_object(objs, draw=False, bys=self._bys(k, attributes)) is not None]

    def question(self, objs: list[dict], kinds: tuple[str, ...] = KINDS,
                 attributes: tuple[str, ...] = ATTRIBUTES) -> tuple[str, str, str, str]:
        """(question, answer, answer_type, kind) for one scene, of one of ``kinds`` (attribute questions ask
        one of ``attributes``); yes/no answers are balanced. The scene must allow one (:meth:`possible`)."""
        rng = self.rng
        kind = self.pick(self.possible(objs, kinds, attributes))
        if kind == "count":
            r = rng.random()
            if r < 1 / 3:
                return "how many objects are there ?", str(len(objs)), "number", kind
            if r < 2 / 3:
                c = int(rng.integers(len(COLORS)))
                return f"how many {COLORS[c]} objects are there ?", str(sum(o["color"] == c for o in objs)), "number", kind
            s = int(rng.integers(len(SHAPES)))
            return f"how many {_plural(SHAPES[s])} are there ?", str(sum(o["shape"] == s for o in objs)), "number", kind
        if kind == "exist":
            if rng.random() < 0.5:
                o = self.pick(objs)
                c, s = o["color"], o["shape"]
            else:
                absent = [(c, s) for c in range(len(COLORS)) for s in range(len(SHAPES))
                          if not any(o["color"] == c and o["shape"] == s for o in objs)]
                c, s = self.pick(absent)
            present = any(o["color"] == c and o["shape"] == s for o in objs)
            return f"is there a {COLORS[c]} {SHAPES[s]} ?", "yes" if present else "no", "yes/no", kind
        o, phrase, by = self._named_object(objs, bys=self._bys(kind, attributes))
        if kind == "attribute":
            attr = self.pick([a for a in attributes if a != by])
            names = {"color": COLORS, "shape": SHAPES, "size": SIZES}[attr]
            return f"what {attr} is {phrase} ?", names[o[attr]], "other", kind
        return f"where is {phrase} ?", SIDES[0] if o["x"] < 0.5 else SIDES[1], "other", kind

    def annotators(self, answer: str, answer_type: str) -> list[str]:
        pool = {"yes/no": ("yes", "no"), "number": COUNTS}.get(answer_type)
        if pool is None:
            pool = next(names for names in (COLORS, SHAPES, SIZES, SIDES) if answer in names)
        out = []
        for _ in range(10):
            if self.rng.random() < self.cfg.annotator_noise:
                wrong = [a for a in pool if a != answer]
                out.append(wrong[int(self.rng.integers(len(wrong)))])
            else:
                out.append(answer)
        return out


def generate_split(cfg: SyntheticConfig, num_questions: int, split_seed: int, questions_per_image: int = 3,
                   kinds: tuple[str, ...] = KINDS, attributes: tuple[str, ...] = ATTRIBUTES) -> dict:
    """Raw arrays and lists for ``num_questions`` questions of ``kinds`` over fresh scenes (attribute questions
    ask one of ``attributes``).

    A scene no question of ``kinds`` can be asked about (only naming kinds, and no object named uniquely)
    is drawn again.
    """
    ask, attrs = tuple(kinds), tuple(attributes)
    gen = _Generator(cfg, split_seed)
    num_images = -(-num_questions // questions_per_image)
    features = np.zeros((num_images, cfg.num_boxes, cfg.feat_dim), dtype=np.float32)
    boxes = np.zeros((num_images, cfg.num_boxes, 4), dtype=np.float32)
    object_labels = np.zeros((num_images, cfg.num_boxes), dtype=np.int64)
    attr_labels = np.zeros((num_images, cfg.num_boxes), dtype=np.int64)
    questions, answers, types, kinds, image_index, scenes = [], [], [], [], [], []
    for img in range(num_images):
        objs = gen.scene()
        while not gen.possible(objs, ask, attrs):
            objs = gen.scene()
        scenes.append(objs)
        features[img], boxes[img], object_labels[img], attr_labels[img] = gen.regions(objs)
        for _ in range(questions_per_image):
            if len(questions) == num_questions:
                break
            q, a, t, k = gen.question(objs, ask, attrs)
            questions.append(q)
            answers.append(gen.annotators(a, t))
            types.append(t)
            kinds.append(k)
            image_index.append(img)
    return {
        "features": features, "boxes": boxes, "questions": questions, "answers": answers,
        "answer_types": types, "question_kinds": kinds, "image_index": np.asarray(image_index, dtype=np.int64),
        "object_labels": object_labels, "attr_labels": attr_labels,  # detector labels (objects_id / attrs_id)
        "scenes": scenes,  # the ground truth behind the features, for tests and inspection
    }
