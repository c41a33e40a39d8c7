"""The synthetic task: deterministic, VQA-shaped, balanced, and answerable only by looking."""
from __future__ import annotations

from collections import Counter

import numpy as np

from lxsweep.config import SyntheticConfig
from lxsweep.data.synthetic import (ATTRIBUTE_NAMES, COLORS, KINDS, OBJECT_NAMES, SHAPES, SIDES, SIZES,
                                    generate_split, vocabulary)
from lxsweep.metric import ANSWER_TYPES, score

CFG = SyntheticConfig()


def test_deterministic_and_seeded():
    a, b = generate_split(CFG, 300, split_seed=1), generate_split(CFG, 300, split_seed=1)
    assert a["questions"] == b["questions"] and np.array_equal(a["features"], b["features"])
    c = generate_split(CFG, 300, split_seed=2)
    assert c["questions"] != a["questions"] and not np.array_equal(c["features"][:10], a["features"][:10])


def test_vqa_shapes_ten_answers_types_and_kinds():
    raw = generate_split(CFG, 1200, split_seed=3)
    assert raw["features"].shape == (400, CFG.num_boxes, CFG.feat_dim) and raw["boxes"].shape == (400, CFG.num_boxes, 4)
    assert raw["boxes"].min() >= 0 and raw["boxes"].max() <= 1
    assert all(len(a) == 10 for a in raw["answers"])
    assert set(raw["answer_types"]) == set(ANSWER_TYPES) and set(raw["question_kinds"]) == set(KINDS)
    words = set(vocabulary())
    assert all(w in words for q in raw["questions"] for w in q.split())


def test_yes_no_and_sides_are_balanced_and_a_blind_predictor_is_weak():
    train, valid = generate_split(CFG, 6000, split_seed=4), generate_split(CFG, 3000, split_seed=5)
    top = [Counter(a).most_common(1)[0][0] for a in train["answers"]]
    yn = [t for t, kind in zip(top, train["question_kinds"]) if kind == "exist"]
    sides = [t for t, kind in zip(top, train["question_kinds"]) if kind == "spatial"]
    assert 0.45 < yn.count("yes") / len(yn) < 0.55 and 0.4 < sides.count("left") / len(sides) < 0.6
    # Best answer per question text, learned on train: the question alone does not tell the answer.
    by_text: dict[str, Counter] = {}
    for q, a in zip(train["questions"], train["answers"]):
        by_text.setdefault(q, Counter()).update(a)
    preds = [by_text[q].most_common(1)[0][0] if q in by_text else "yes" for q in valid["questions"]]
    blind = score(preds, valid["answers"], valid["answer_types"], valid["question_kinds"])
    assert blind["overall"] < 0.55
    assert all(blind[f"kind/{k}"] < 0.6 for k in KINDS)


def _named(objs: list[dict], words: list[str]) -> dict:
    """The object a phrase like 'the cube' or 'the red object' names (unique in its scene)."""
    if words[-1] == "object":
        match = [o for o in objs if COLORS[o["color"]] == words[-2]]
    else:
        match = [o for o in objs if SHAPES[o["shape"]] == words[-1]]
    return match[0]


def test_answers_match_the_scene():
    raw = generate_split(SyntheticConfig(annotator_noise=0.0), 800, split_seed=6)
    checked = Counter()
    for q, a, kind, img in zip(raw["questions"], raw["answers"], raw["question_kinds"], raw["image_index"]):
        objs, w = raw["scenes"][img], q.split()[:-1]  # drop the "?"
        assert len(set(a)) == 1  # no annotator noise: all ten agree
        answer = a[0]
        if kind == "count":
            if w[2] == "objects":
                expected = len(objs)
            elif w[3] == "objects":
                expected = sum(COLORS[o["color"]] == w[2] for o in objs)
            else:
                expected = sum(SHAPES[o["shape"]] + "s" == w[2] for o in objs)
            assert int(answer) == expected
        elif kind == "exist":
            present = any(COLORS[o["color"]] == w[3] and SHAPES[o["shape"]] == w[4] for o in objs)
            assert answer == ("yes" if present else "no")
        elif kind == "attribute":  # what ATTR is PHRASE
            o = _named(objs, w[3:])
            assert answer == {"color": COLORS, "shape": SHAPES, "size": SIZES}[w[1]][o[w[1]]]
        else:  # where is PHRASE
            o = _named(objs, w[2:])
            assert answer == (SIDES[0] if o["x"] < 0.5 else SIDES[1])
        checked[kind] += 1
    assert set(checked) == set(KINDS)


def test_named_objects_are_unique_and_regions_carry_detector_labels():
    raw = generate_split(CFG, 600, split_seed=7)
    for q, kind, img in zip(raw["questions"], raw["question_kinds"], raw["image_index"]):
        if kind in ("attribute", "spatial"):
            objs, w = raw["scenes"][img], q.split()[:-1]
            phrase = w[3:] if kind == "attribute" else w[2:]
            if phrase[-1] == "object":
                assert sum(COLORS[o["color"]] == phrase[-2] for o in objs) == 1
            else:
                assert sum(SHAPES[o["shape"]] == phrase[-1] for o in objs) == 1
    for img, objs in enumerate(raw["scenes"][:50]):
        labels = raw["object_labels"][img]
        assert (labels != OBJECT_NAMES.index("clutter")).sum() == len(objs)
        assert sorted(raw["object_labels"][img][labels < len(SHAPES)]) == sorted(o["shape"] for o in objs)
        assert sorted(raw["attr_labels"][img][labels < len(SHAPES)]) == sorted(o["color"] for o in objs)
        assert np.all(raw["attr_labels"][img][labels == OBJECT_NAMES.index("clutter")] == ATTRIBUTE_NAMES.index("none"))
        # each object's box is centred on its x, so its side is readable from the boxes
        centres = sorted(round(float((b[0] + b[2]) / 2), 4) for b, lab in zip(raw["boxes"][img], labels) if lab < len(SHAPES))
        for o in objs:
            assert any(abs(c - o["x"]) < 1e-4 for c in centres) or o["x"] < 0.1 or o["x"] > 0.9  # edge boxes are clipped


def test_kinds_choose_what_a_split_asks_and_answers_still_match_the_scene():
    # The third design (issue 24): pretraining asks exist/count, the fine-tune attribute/spatial only.
    raw = generate_split(SyntheticConfig(annotator_noise=0.0), 900, split_seed=8, kinds=("attribute", "spatial"))
    assert set(raw["question_kinds"]) == {"attribute", "spatial"} and set(raw["answer_types"]) == {"other"}
    share = Counter(raw["question_kinds"])["attribute"] / len(raw["question_kinds"])
    assert 0.4 < share < 0.6
    for q, a, kind, img in zip(raw["questions"], raw["answers"], raw["question_kinds"], raw["image_index"]):
        objs, w = raw["scenes"][img], q.split()[:-1]
        o = _named(objs, w[3:] if kind == "attribute" else w[2:])  # every scene kept names an object uniquely
        expected = ({"color": COLORS, "shape": SHAPES, "size": SIZES}[w[1]][o[w[1]]] if kind == "attribute"
                    else SIDES[0] if o["x"] < 0.5 else SIDES[1])
        assert a[0] == expected
    pre = generate_split(CFG, 600, split_seed=8, kinds=("exist", "count"))
    assert set(pre["question_kinds"]) == {"exist", "count"}
    # A kind list with a naming kind and exist: a scene without a unique object asks exist instead.
    mixed = generate_split(CFG, 600, split_seed=9, kinds=("exist", "spatial"))
    assert set(mixed["question_kinds"]) == {"exist", "spatial"}
    # The default (every kind) is the generator as before: same draws as not passing kinds at all.
    assert generate_split(CFG, 300, split_seed=1, kinds=KINDS)["questions"] == generate_split(CFG, 300, split_seed=1)["questions"]
