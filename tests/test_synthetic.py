"""The synthetic task: deterministic, VQA-shaped, balanced, and answerable only by looking."""
from __future__ import annotations

from collections import Counter

import numpy as np

from lxsweep.config import SyntheticConfig
from lxsweep.data import ANSWER_TYPES
from lxsweep.data.synthetic import KINDS, generate_split, synthetic_dataset, vocabulary
from lxsweep.metric import score

CFG = SyntheticConfig(train_questions=1200, valid_questions=600, pretrain_questions=600)


def test_deterministic_and_disjoint_splits():
    a, b = synthetic_dataset(CFG), synthetic_dataset(CFG)
    assert a.train.questions == b.train.questions and np.array_equal(a.train.features, b.train.features)
    pre = synthetic_dataset(CFG, "pretrain")
    assert not np.array_equal(pre.train.features[:10], a.train.features[:10])
    assert not np.array_equal(a.valid.features[:10], a.train.features[:10])
    other = synthetic_dataset(SyntheticConfig(**{**CFG.__dict__, "seed": 7}))
    assert other.train.questions != a.train.questions


def test_vqa_shapes_ten_answers_types_and_kinds():
    ds = synthetic_dataset(CFG)
    t = ds.train
    assert t.features.shape == (400, CFG.num_boxes, CFG.feat_dim) and t.boxes.shape == (400, CFG.num_boxes, 4)
    assert t.boxes.min() >= 0 and t.boxes.max() <= 1
    assert all(len(a) == 10 for a in t.answers)
    assert set(t.answer_types) == set(ANSWER_TYPES) and set(t.question_kinds) == set(KINDS)
    words = set(vocabulary())
    assert all(w in words for q in t.questions for w in q.split())
    # soft targets follow the annotators: the majority answer's label scores 1.0
    for i in range(50):
        top = Counter(t.answers[i]).most_common(1)[0]
        label = ds.answers.index(top[0])
        j = list(t.target_labels[i]).index(label)
        assert t.target_scores[i, j] == (1.0 if top[1] >= 4 else round(0.3 * top[1], 1))


def test_yes_no_is_balanced_and_priors_are_weak():
    ds = synthetic_dataset(SyntheticConfig(train_questions=4000, valid_questions=2000))
    yn = [Counter(a).most_common(1)[0][0] for a, t in zip(ds.train.answers, ds.train.answer_types) if t == "yes/no"]
    assert 0.45 < yn.count("yes") / len(yn) < 0.55
    # Best answer per question text, learned on train: a language-only model cannot do well.
    by_text: dict[str, Counter] = {}
    for q, a in zip(ds.train.questions, ds.train.answers):
        by_text.setdefault(q, Counter()).update(a)
    preds = [by_text[q].most_common(1)[0][0] if q in by_text else "yes" for q in ds.valid.questions]
    prior = score(preds, ds.valid.answers, ds.valid.answer_types)["overall"]
    assert prior < 0.5


def test_answers_match_the_scene():
    from lxsweep.data.synthetic import COLORS, SHAPES, SIZES

    raw = generate_split(SyntheticConfig(annotator_noise=0.0), 400, split_seed=5)
    checked = Counter()
    for q, a, img in zip(raw["questions"], raw["answers"], raw["image_index"]):
        objs, w = raw["scenes"][img], q.split()
        assert len(set(a)) == 1  # no annotator noise: all ten agree
        answer = a[0]
        if q == "how many objects are there ?":
            assert int(answer) == len(objs)
        elif w[:2] == ["how", "many"]:
            assert int(answer) == sum(SHAPES[o["shape"]] + "s" == w[2] for o in objs)
        elif w[0] == "what":
            o = (min if w[4] == "leftmost" else max)(objs, key=lambda o: o["x"])
            assert answer == {"color": COLORS, "shape": SHAPES, "size": SIZES}[w[1]][o[w[1]]]
        elif w[:2] == ["is", "there"]:
            word = w[3]
            present = {COLORS[o["color"]] for o in objs} | {SHAPES[o["shape"]] for o in objs}
            assert answer == ("yes" if word in present else "no")
        else:
            o = (min if w[2] == "leftmost" else max)(objs, key=lambda o: o["x"])
            word = w[-2]
            assert answer == ("yes" if word in (COLORS[o["color"]], SHAPES[o["shape"]]) else "no")
        checked[w[0]] += 1
    assert set(checked) == {"how", "what", "is"}
    # each object's box is centred on its x, so "leftmost" is readable from the boxes
    for img, objs in enumerate(raw["scenes"][:20]):
        centres = sorted(round(float((b[0] + b[2]) / 2), 4) for b in raw["boxes"][img] if b.any())
        for o in objs:
            assert any(abs(c - o["x"]) < 1e-4 for c in centres)


def test_box_labels_name_each_region():
    from lxsweep.data.synthetic import ATTRIBUTE_NAMES, COLORS, OBJECT_NAMES, SHAPES

    cfg = SyntheticConfig()
    raw = generate_split(cfg, 60, split_seed=9)
    assert raw["object_labels"].shape == raw["attr_labels"].shape == (20, cfg.num_boxes)
    assert raw["object_labels"].dtype == raw["attr_labels"].dtype == np.int64
    for img, objs in enumerate(raw["scenes"]):
        objects = [OBJECT_NAMES[i] for i in raw["object_labels"][img]]
        attrs = [ATTRIBUTE_NAMES[i] for i in raw["attr_labels"][img]]
        assert objects.count("clutter") == attrs.count("none") == cfg.num_boxes - len(objs)
        assert sorted((SHAPES[o["shape"]], COLORS[o["color"]]) for o in objs) == \
            sorted((o, a) for o, a in zip(objects, attrs) if o != "clutter")
