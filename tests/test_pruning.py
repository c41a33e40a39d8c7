"""Tests for lxsweep.pruning: scope, magnitude/random masks, mask files, enforcement."""

from __future__ import annotations

import copy
import math
import os
import re

import pytest
import torch
from safetensors.torch import save_file
from torch.nn.utils import prune
from transformers import LxmertConfig, LxmertForQuestionAnswering, LxmertModel

from lxsweep import pruning
from lxsweep.pruning import (
    ALL_GROUPS,
    SCOPE_GROUPS,
    MaskEnforcer,
    full_mask,
    layer_of,
    load_mask,
    magnitude_mask,
    prunable_names,
    prunable_parameters,
    random_mask,
    read_mask_metadata,
    removed_count,
    save_mask,
    sparsity,
    sparsity_report,
)

TINY = dict(
    hidden_size=32,
    num_attention_heads=2,
    intermediate_size=64,
    l_layers=2,
    x_layers=1,
    r_layers=1,
    visual_feat_dim=16,
    visual_pos_dim=4,
    vocab_size=100,
    num_qa_labels=7,
)
LEVELS = [0.1, 0.19, 0.5, 0.7, 0.9]
GROUP_PREFIX = {
    "language": "lxmert.encoder.layer.",
    "vision": "lxmert.encoder.r_layers.",
    "cross": "lxmert.encoder.x_layers.",
    "pooler": "lxmert.pooler.",
}


def tiny_model(seed: int = 0) -> LxmertForQuestionAnswering:
    torch.manual_seed(seed)
    return LxmertForQuestionAnswering(LxmertConfig(**TINY))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine
    # OpenMP threads fighting another process make these tests 100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> LxmertForQuestionAnswering:
    return tiny_model()


def distinct_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random weights whose magnitudes are all different (so no ranking has ties)."""
    g = torch.Generator().manual_seed(seed)
    total = sum(math.prod(s) for s in shapes.values())
    magnitudes = (torch.randperm(total, generator=g).float() + 1.0) / total
    signs = torch.randint(0, 2, (total,), generator=g).float() * 2 - 1
    flat = magnitudes * signs
    out, start = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = flat[start : start + n].reshape(shape).clone()
        start += n
    return out


SHAPES = {"b.weight": (40, 30), "a.weight": (17, 13), "c.weight": (64, 8), "d.weight": (9, 50)}


def removed(mask) -> int:
    return sum(int((~m).sum()) for m in mask.values())


def total(mask) -> int:
    return sum(m.numel() for m in mask.values())


def assert_subset(child, parent) -> None:
    for name in parent:
        assert not (child[name] & ~parent[name]).any(), f"{name}: child keeps a weight the parent removed"


# ---------------------------------------------------------------------------- scope


def test_scope_on_real_model_takes_encoder_and_pooler_matrices_only(model):
    params = dict(model.named_parameters())
    scope = prunable_parameters(model)
    # 2 language layers x 6, 1 vision layer x 6, 1 cross layer x 16, the pooler.
    assert len(scope) == 2 * 6 + 6 + 16 + 1
    assert list(scope) == [n for n in params if n in scope], "not in model order"
    for name, p in scope.items():
        assert p is params[name]
        assert p.dim() == 2 and name.endswith(".weight")
        for banned in ("embeddings", "visn_fc", "LayerNorm", "layer_norm", "answer_head", "bias"):
            assert banned not in name
    # Every 2-D weight left out is one of the excluded kinds.
    left_out = [n for n, p in params.items() if p.dim() == 2 and n not in scope]
    assert left_out and all(
        n.startswith(("lxmert.embeddings.", "lxmert.encoder.visn_fc.", "answer_head.")) for n in left_out
    )


def test_scope_regexes_reject_layernorm_and_biases_by_name(model):
    # The regexes alone must exclude them, not only the 2-D check (published_code takes them on purpose).
    for name in dict(model.named_parameters()):
        if "LayerNorm" in name or name.endswith(".bias") or "visn_fc" in name or "answer_head" in name:
            assert not any(re.match(SCOPE_GROUPS[g], name) for g in ALL_GROUPS), name


def test_groups_select_only_their_layers(model):
    union = []
    for group in ALL_GROUPS:
        names = list(prunable_parameters(model, [group]))
        assert names and all(n.startswith(GROUP_PREFIX[group]) for n in names), group
        union += names
    assert sorted(union) == sorted(prunable_parameters(model))
    assert list(prunable_parameters(model, "pooler")) == ["lxmert.pooler.dense.weight"]
    assert set(prunable_parameters(model, ("language", "cross"))) == {
        n for n in union if n.startswith((GROUP_PREFIX["language"], GROUP_PREFIX["cross"]))
    }


def test_unknown_or_empty_group_is_an_error(model):
    with pytest.raises(ValueError, match="visual"):
        prunable_parameters(model, ["language", "visual"])
    with pytest.raises(ValueError, match="at least one group"):
        prunable_parameters(model, [])
    with pytest.raises(ValueError, match="no prunable weights"):
        prunable_names({"fc.weight": torch.zeros(3, 3)})


def test_scope_follows_names_not_positions():
    # More layers and a bare LxmertModel (no "lxmert." prefix): same rule, by name.
    torch.manual_seed(0)
    bare = LxmertModel(LxmertConfig(**{**TINY, "l_layers": 3}))
    names = list(prunable_parameters(bare))
    assert len(names) == 3 * 6 + 6 + 16 + 1
    assert "encoder.layer.2.output.dense.weight" in names
    assert not any("visn_fc" in n or "embeddings" in n for n in names)


# ------------------------------------------------------------------ magnitude masks


@pytest.mark.parametrize("kind", ["low", "high"])
@pytest.mark.parametrize("level", LEVELS)
def test_magnitude_mask_exact_global_count(kind, level):
    w = distinct_weights(SHAPES, seed=1)
    mask = magnitude_mask(w, full_mask(w), level, largest=kind == "high")
    assert removed(mask) == removed_count(level, total(mask)) == round(level * total(mask))
    assert list(mask) == list(w) and all(mask[n].shape == w[n].shape for n in w)


@pytest.mark.parametrize("kind", ["low", "high"])
@pytest.mark.parametrize("level", LEVELS)
def test_magnitude_mask_exact_layerwise_count(kind, level):
    w = distinct_weights(SHAPES, seed=2)
    mask = magnitude_mask(w, full_mask(w), level, largest=kind == "high", layerwise=True)
    for name, m in mask.items():
        assert int((~m).sum()) == round(level * m.numel()), name
        kept, gone = w[name][m].abs(), w[name][~m].abs()
        if kind == "low":
            assert kept.min() > gone.max()
        else:
            assert kept.max() < gone.min()


def test_global_low_mask_equals_torch_prune_oracle(model):
    model = copy.deepcopy(model)
    scope = prunable_parameters(model)
    values = distinct_weights({n: tuple(p.shape) for n, p in scope.items()}, seed=3)
    with torch.no_grad():
        for name, p in scope.items():
            p.copy_(values[name])
    level = 0.37
    ours = magnitude_mask(scope, full_mask(scope), level)

    oracle_model = copy.deepcopy(model)
    modules = [(oracle_model.get_submodule(n.rsplit(".", 1)[0]), "weight") for n in scope]
    k = removed_count(level, total(ours))
    prune.global_unstructured(modules, pruning_method=prune.L1Unstructured, amount=k)
    for (module, _), name in zip(modules, scope):
        assert torch.equal(module.weight_mask.bool(), ours[name]), name


@pytest.mark.parametrize("start", [0.0, 0.19])
def test_high_mask_removes_the_largest_survivors(start):
    w = distinct_weights(SHAPES, seed=4)
    current = magnitude_mask(w, full_mask(w), start, largest=True)
    mask = magnitude_mask(w, current, start + 0.1, largest=True)
    assert_subset(mask, current)
    kept = torch.cat([w[n][mask[n]].abs() for n in w])
    newly_removed = torch.cat([w[n][current[n] & ~mask[n]].abs() for n in w])
    assert kept.max() < newly_removed.min()
    # The seed paper's 'high' asked for 10% and zeroed ~90%: ours removes exactly 10%.
    assert removed(mask) == round((start + 0.1) * total(mask))


def test_first_high_level_is_the_top_ten_percent():
    w = distinct_weights(SHAPES, seed=5)
    mask = magnitude_mask(w, full_mask(w), 0.1, largest=True)
    assert sparsity(mask) == pytest.approx(0.1, abs=1 / total(mask))
    flat = torch.cat([w[n].reshape(-1) for n in w])
    gone = torch.cat([(~mask[n]).reshape(-1) for n in w])
    top = torch.topk(flat.abs(), removed(mask)).indices
    assert torch.equal(gone.nonzero().view(-1), top.sort().values)


def test_low_mask_removes_the_smallest_survivors():
    w = distinct_weights(SHAPES, seed=6)
    current = magnitude_mask(w, full_mask(w), 0.3)
    # Retrained: ranks change, and pruned weights take values interleaved with the
    # survivors' (so they share histogram buckets with the threshold).
    g = torch.Generator().manual_seed(0)
    w2 = {
        n: torch.where(
            current[n], t + 0.1 * torch.randn(t.shape, generator=g), torch.rand(t.shape, generator=g)
        )
        for n, t in w.items()
    }
    mask = magnitude_mask(w2, current, 0.5)
    # Pruned weights here are anything but small: only survivors may be ranked.
    assert_subset(mask, current)
    assert removed(mask) == round(0.5 * total(mask))
    kept = torch.cat([w2[n][mask[n]].abs() for n in w])
    newly_removed = torch.cat([w2[n][current[n] & ~mask[n]].abs() for n in w])
    assert kept.min() > newly_removed.max()


@pytest.mark.parametrize("kind", ["low", "high"])
def test_chain_of_levels_is_nested_and_exact(kind):
    w = distinct_weights(SHAPES, seed=7)
    mask = full_mask(w)
    g = torch.Generator().manual_seed(0)
    for level in range(1, 8):
        target = 1 - 0.9**level
        # "Training": weights move, pruned ones stay exactly zero (as MaskEnforcer keeps them),
        # so for 'high' the pruned zeros would rank as the best candidates to keep.
        w = {n: (t + 0.2 * torch.randn(t.shape, generator=g)) * mask[n] for n, t in w.items()}
        child = magnitude_mask(w, mask, target, largest=kind == "high")
        assert_subset(child, mask)
        assert removed(child) == round(target * total(child))
        mask = child


def test_inputs_are_not_modified():
    w = distinct_weights(SHAPES, seed=8)
    w_before = {n: t.clone() for n, t in w.items()}
    current = magnitude_mask(w, full_mask(w), 0.2)
    current_before = {n: m.clone() for n, m in current.items()}
    out = magnitude_mask(w, current, 0.2)  # same level: nothing more to remove
    assert all(torch.equal(out[n], current[n]) for n in w)
    out[next(iter(out))].fill_(False)  # the result never aliases the input mask
    assert all(torch.equal(w[n], w_before[n]) for n in w)
    assert all(torch.equal(current[n], current_before[n]) for n in w)


def test_mask_does_not_depend_on_dict_order():
    w = distinct_weights(SHAPES, seed=9)
    reordered = dict(reversed(list(w.items())))
    for kind in ("low", "high"):
        a = magnitude_mask(w, full_mask(w), 0.45, largest=kind == "high")
        b = magnitude_mask(reordered, full_mask(reordered), 0.45, largest=kind == "high")
        assert list(b) == list(reordered)
        assert all(torch.equal(a[n], b[n]) for n in w)


@pytest.mark.parametrize("kind", ["low", "high"])
def test_ties_give_exact_deterministic_counts(kind):
    w = {n: torch.full(s, 0.5) for n, s in SHAPES.items()}
    n_total = sum(math.prod(s) for s in SHAPES.values())
    for level in (0.1, 0.33, 0.5):
        a = magnitude_mask(w, full_mask(w), level, largest=kind == "high")
        b = magnitude_mask(dict(reversed(list(w.items()))), full_mask(w), level, largest=kind == "high")
        k = round(level * n_total)
        assert removed(a) == k
        assert all(torch.equal(a[n], b[n]) for n in w)
        # Documented tie rule: tensors sorted by name, then flat index; earlier goes first.
        gone = torch.cat([(~a[n]).reshape(-1) for n in sorted(w)])
        assert gone[:k].all() and not gone[k:].any()


def test_partial_ties_keep_the_order_and_count():
    g = torch.Generator().manual_seed(10)
    w = {n: torch.randint(-3, 4, s, generator=g).float() for n, s in SHAPES.items()}
    mask = magnitude_mask(w, full_mask(w), 0.4)
    assert removed(mask) == round(0.4 * total(mask))
    kept = torch.cat([w[n][mask[n]].abs() for n in w])
    gone = torch.cat([w[n][~mask[n]].abs() for n in w])
    assert kept.min() >= gone.max()


def test_low_precision_weights_rank_like_float32():
    w = distinct_weights(SHAPES, seed=11)
    half = {n: t.to(torch.bfloat16) for n, t in w.items()}
    as_float = {n: t.float() for n, t in half.items()}
    for kind in ("low", "high"):
        a = magnitude_mask(half, full_mask(half), 0.6, largest=kind == "high")
        b = magnitude_mask(as_float, full_mask(as_float), 0.6, largest=kind == "high")
        assert all(torch.equal(a[n], b[n]) for n in w)


def test_magnitude_mask_rejects_bad_requests():
    w = distinct_weights(SHAPES, seed=12)
    current = magnitude_mask(w, full_mask(w), 0.5)
    with pytest.raises(ValueError, match="already has sparsity"):
        magnitude_mask(w, current, 0.3)
    with pytest.raises(ValueError, match="already has sparsity"):
        magnitude_mask(w, current, 0.3, layerwise=True)
    for bad in (1.0, -0.1, float("nan"), 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            magnitude_mask(w, full_mask(w), bad)
    with pytest.raises(TypeError):  # `largest` is keyword-only: a stray criterion name cannot slip in
        magnitude_mask(w, full_mask(w), 0.5, "random")
    with pytest.raises(ValueError, match="only in weights"):
        magnitude_mask(w, {n: m for n, m in full_mask(w).items() if n != "a.weight"}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        magnitude_mask(w, {**full_mask(w), "a.weight": torch.ones(13, 17, dtype=torch.bool)}, 0.5)
    nan = {**w, "c.weight": w["c.weight"].clone().index_fill_(0, torch.tensor([3]), float("nan"))}
    with pytest.raises(ValueError, match="c.weight contain NaN"):
        magnitude_mask(nan, full_mask(nan), 0.5)


# ---------------------------------------------------------------------- random masks


@pytest.mark.parametrize("level", LEVELS)
def test_random_mask_has_exact_sparsity(level):
    mask = random_mask(SHAPES, level, seed=0, level=3)
    assert removed(mask) == round(level * total(mask))
    assert {n: tuple(m.shape) for n, m in mask.items()} == SHAPES


def test_random_mask_is_deterministic_per_seed_and_level():
    a = random_mask(SHAPES, 0.5, seed=1, level=2)
    same = random_mask(dict(reversed(list(SHAPES.items()))), 0.5, seed=1, level=2)
    other_seed = random_mask(SHAPES, 0.5, seed=2, level=2)
    other_level = random_mask(SHAPES, 0.5, seed=1, level=3)
    assert all(torch.equal(a[n], same[n]) for n in SHAPES)
    assert any(not torch.equal(a[n], other_seed[n]) for n in SHAPES)
    assert any(not torch.equal(a[n], other_level[n]) for n in SHAPES)
    with pytest.raises(TypeError):
        random_mask(SHAPES, 0.5, seed=1.5, level=2)


def test_random_mask_is_spread_uniformly():
    shapes = {f"t{i}.weight": (64, 64) for i in range(8)}
    mask = random_mask(shapes, 0.5, seed=0, level=1)
    for name, m in mask.items():
        # Binomial sd is ~0.008 per tensor; a non-random rule (e.g. first k) lands far outside.
        assert abs(1 - m.float().mean().item() - 0.5) < 0.05, name
    rows = torch.stack([m.float().mean(1) for m in mask.values()])
    assert 0.4 < rows.mean(0).min() and rows.mean(0).max() < 0.6


def test_random_mask_on_real_model_scope(model):
    shapes = {n: p.shape for n, p in prunable_parameters(model).items()}
    mask = random_mask(shapes, 0.19, seed=0, level=2)
    assert removed(mask) == round(0.19 * total(mask))


# ----------------------------------------------------------------- sparsity report


def test_sparsity_and_report():
    mask = {"x": torch.tensor([[True, False], [False, False]]), "y": torch.ones(6, dtype=torch.bool)}
    assert sparsity(mask) == pytest.approx(0.3)
    report = sparsity_report(mask, total_parameters=20)
    assert report["kept"] == 7 and report["total"] == 10
    assert report["sparsity"] == pytest.approx(0.3)
    assert report["sparsity_all_parameters"] == pytest.approx(0.15)
    assert report["tensors"]["x"] == {"kept": 1, "total": 4, "sparsity": 0.75}
    assert report["tensors"]["y"] == {"kept": 6, "total": 6, "sparsity": 0.0}
    with pytest.raises(ValueError):
        sparsity({})


def test_report_says_where_the_mask_prunes_per_group_and_layer(model):
    params = prunable_parameters(model)
    mask = full_mask(params)
    # prune 10 weights of language layer 1's query, all of the pooler, 3 of one cross-modality layer
    query = "lxmert.encoder.layer.1.attention.self.query.weight"
    mask[query].view(-1)[:10] = False
    mask["lxmert.pooler.dense.weight"][:] = False
    cross = next(n for n in params if n.startswith("lxmert.encoder.x_layers.0."))
    mask[cross].view(-1)[:3] = False
    report = sparsity_report(mask)
    groups = report["groups"]
    assert set(groups) == {"language", "vision", "cross", "pooler"}
    for group, entry in groups.items():
        names = prunable_names(params, [group])
        assert entry["total"] == sum(params[n].numel() for n in names), group
    assert groups["pooler"]["sparsity"] == 1.0 and groups["vision"]["sparsity"] == 0.0
    assert groups["language"]["total"] - groups["language"]["kept"] == 10
    assert groups["cross"]["total"] - groups["cross"]["kept"] == 3
    layers = report["layers"]
    assert layers["lxmert.encoder.layer.1"]["total"] - layers["lxmert.encoder.layer.1"]["kept"] == 10
    assert layers["lxmert.encoder.layer.0"]["sparsity"] == 0.0
    assert layers["lxmert.encoder.x_layers.0"]["kept"] == layers["lxmert.encoder.x_layers.0"]["total"] - 3
    assert layers["lxmert.pooler"]["sparsity"] == 1.0
    # every prunable weight is counted exactly once in each breakdown
    assert sum(e["total"] for e in groups.values()) == sum(e["total"] for e in layers.values()) == report["total"]
    assert sum(e["kept"] for e in layers.values()) == report["kept"]
    assert set(layers) == {layer_of(n) for n in params} and len(layers) == TINY["l_layers"] + TINY["r_layers"] + TINY["x_layers"] + 1


# ------------------------------------------------------------------------ mask files


def test_save_load_round_trip_is_exact_and_bit_packed(tmp_path):
    shapes = {"z.weight": (301, 157), "a.weight": (3,), "m.weight": (1000, 200)}
    mask = random_mask(shapes, 0.43, seed=5, level=1)
    path = tmp_path / "masks" / "low_3.safetensors"
    save_mask(mask, path, metadata={"subnetwork": "low", "level": "3"})
    loaded = load_mask(path)
    assert list(loaded) == list(mask)
    assert all(loaded[n].dtype == torch.bool and torch.equal(loaded[n], mask[n]) for n in mask)
    assert read_mask_metadata(path) == {"subnetwork": "low", "level": "3"}
    bool_bytes = total(mask)
    assert os.path.getsize(path) < bool_bytes / 8 + 2048
    assert os.listdir(path.parent) == ["low_3.safetensors"], "temporary file left behind"


def test_save_overwrites_atomically_and_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "mask.safetensors"
    old = random_mask(SHAPES, 0.2, seed=0, level=1)
    save_mask(old, path)
    new = random_mask(SHAPES, 0.4, seed=0, level=2)
    save_mask(new, path)
    assert all(torch.equal(load_mask(path)[n], new[n]) for n in SHAPES)

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pruning, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_mask(old, path)
    assert all(torch.equal(load_mask(path)[n], new[n]) for n in SHAPES)
    assert os.listdir(tmp_path) == ["mask.safetensors"]


def test_save_rejects_bad_metadata_and_non_bool(tmp_path):
    mask = full_mask({"a": torch.zeros(3)})
    with pytest.raises(ValueError, match="reserved"):
        save_mask(mask, tmp_path / "m.safetensors", metadata={"lxsweep.mask.shapes": "{}"})
    with pytest.raises(ValueError, match="str to str"):
        save_mask(mask, tmp_path / "m.safetensors", metadata={"level": 3})
    with pytest.raises(ValueError, match="must be bool"):
        save_mask({"a": torch.ones(3)}, tmp_path / "m.safetensors")
    assert not any(tmp_path.iterdir())


def test_load_accepts_plain_bool_safetensors(tmp_path):
    mask = random_mask(SHAPES, 0.3, seed=0, level=1)
    save_file(mask, str(tmp_path / "bool.safetensors"))
    loaded = load_mask(tmp_path / "bool.safetensors")
    assert all(torch.equal(loaded[n], mask[n]) for n in SHAPES)


# -------------------------------------------------------------------- enforcement


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, TINY["vocab_size"], (4, 6), generator=g),
        "visual_feats": torch.randn(4, 5, TINY["visual_feat_dim"], generator=g),
        "visual_pos": torch.rand(4, 5, TINY["visual_pos_dim"], generator=g),
        "targets": torch.randint(0, TINY["num_qa_labels"], (4,), generator=g),
    }


def train(model, steps: int, enforcer: MaskEnforcer | None = None, optimizer=None, apply: bool = True):
    """A few AdamW steps on random batches, in the order the trainer uses the enforcer."""
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    dtype = next(model.parameters()).dtype
    for step in range(steps):
        b = batch(step)
        out = model(
            input_ids=b["input_ids"],
            visual_feats=b["visual_feats"].to(dtype),
            visual_pos=b["visual_pos"].to(dtype),
        )
        loss = torch.nn.functional.cross_entropy(out.question_answering_score, b["targets"])
        optimizer.zero_grad()
        loss.backward()
        if enforcer:
            enforcer.zero_grads()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if enforcer and apply:
            enforcer.apply()
    return optimizer


def pruned_values(model, mask) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach()[~m] for n, m in mask.items()])


def low_mask_for(model, level=0.5):
    scope = prunable_parameters(model)
    return magnitude_mask(scope, full_mask(scope), level)


def test_enforcer_zeroes_at_once_and_leaves_everything_else_untouched():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = low_mask_for(model)
    MaskEnforcer(model, mask)
    for name, p in model.named_parameters():
        if name in mask:
            assert torch.equal(p[~mask[name]], torch.zeros_like(p[~mask[name]]))
            assert torch.equal(p[mask[name]], before[name][mask[name]]), name
        else:
            assert torch.equal(p, before[name]), f"{name} is outside the scope but changed"


def test_enforcer_keeps_pruned_weights_exactly_zero_under_adamw():
    model = tiny_model()
    mask = low_mask_for(model)
    enforcer = MaskEnforcer(model, mask)
    kept_before = torch.cat([p.detach()[mask[n]] for n, p in prunable_parameters(model).items()])
    optimizer = train(model, steps=5, enforcer=enforcer)
    assert torch.equal(pruned_values(model, mask), torch.zeros(removed(mask)))
    kept_after = torch.cat([p.detach()[mask[n]] for n, p in prunable_parameters(model).items()])
    assert not torch.equal(kept_before, kept_after), "the model did not train"
    # Optimizer state never saw a gradient for a pruned weight. (The last cross layer's
    # vision branch does not reach the answer head, so it has no gradient and no state.)
    with_state = 0
    for name, p in prunable_parameters(model).items():
        state = optimizer.state[p]
        if not state:
            continue
        with_state += 1
        assert not state["exp_avg"][~mask[name]].any() and not state["exp_avg_sq"][~mask[name]].any()
    assert with_state > 20


def test_without_enforcer_pruned_weights_grow_back():
    # The seed paper's bug: zeroing once and fine-tuning lets AdamW revive the weights.
    model = tiny_model()
    mask = low_mask_for(model)
    MaskEnforcer(model, mask)  # zero once, then never again
    train(model, steps=5)
    assert (pruned_values(model, mask) != 0).sum() > removed(mask) // 2


def test_apply_is_needed_when_optimizer_state_is_dense():
    # Moments built up before masking (e.g. resumed optimizer) move pruned weights even
    # with zeroed gradients; apply() after step() puts them back to zero.
    for apply, expect_zero in ((False, False), (True, True)):
        model = tiny_model()
        optimizer = train(model, steps=3)
        mask = low_mask_for(model)
        enforcer = MaskEnforcer(model, mask)
        train(model, steps=2, enforcer=enforcer, optimizer=optimizer, apply=apply)
        assert bool((pruned_values(model, mask) == 0).all()) is expect_zero


def test_enforcer_reports_missing_and_misshaped_parameters():
    model = tiny_model()
    mask = low_mask_for(model)
    with pytest.raises(KeyError, match="lxmert.encoder.layer.9.output.dense.weight"):
        missing = "lxmert.encoder.layer.9.output.dense.weight"
        MaskEnforcer(model, {**mask, missing: torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        MaskEnforcer(model, {"lxmert.pooler.dense.weight": torch.ones(32, 31, dtype=torch.bool)})


def test_enforcer_works_in_low_precision():
    model = tiny_model().to(torch.bfloat16)
    mask = low_mask_for(model)
    enforcer = MaskEnforcer(model, mask)
    train(model, steps=2, enforcer=enforcer)
    assert not pruned_values(model, mask).any()
    assert all(m.dtype == torch.bfloat16 for m in enforcer._masks)



# ---------------------------------------------------------------------------- structured masks


def _unit_is_whole(mask, sl) -> bool:
    """Every weight of a unit kept, or every one removed."""
    views = [mask[n].narrow(d, a, b - a) for n, d, a, b in sl]
    return all(v.all() for v in views) or not any(v.any() for v in views)


@pytest.mark.parametrize("kinds", [("head",), ("neuron",), ("head", "neuron")])
def test_structured_masks_remove_whole_heads_and_neurons(model, kinds):
    weights = prunable_parameters(model)
    groups = pruning.structured_groups({n: w.shape for n, w in weights.items()}, TINY["num_attention_heads"], kinds)
    # 2 heads x (2 language + 1 vision + 3 cross attention blocks); 64 neurons x (2 + 1 + 2 feed-forward blocks)
    assert len(groups) == {"head": 2 * 6, "neuron": 64 * 5}[kinds[0]] + (64 * 5 if len(kinds) == 2 else 0)
    covered = {n for _, _, sl in groups for n, *_ in sl}
    current = full_mask(weights)
    for s in (0.2, 0.5, 0.8):
        mask = pruning.structured_mask(weights, current, s, TINY["num_attention_heads"], kinds)
        assert_subset(mask, current)
        assert all(_unit_is_whole(mask, sl) for _, _, sl in groups)
        cov = sum(mask[n].numel() for n in covered)
        gone = sum(int((~mask[n]).sum()) for n in covered)
        unit = max(sum((b - a) * weights[n].shape[1 - d] for n, d, a, b in sl) for _, _, sl in groups)
        assert removed_count(s, cov) <= gone < removed_count(s, cov) + unit  # at or just above, by < one unit
        assert all(mask[n].all() for n in weights if n not in covered)  # the pooler is never touched
        current = mask  # a chain: each level removes more, from what the last one kept


def test_a_removed_head_adds_exactly_nothing(model):
    """The masked model with a head's rows and output columns zeroed computes what the model without it does."""
    m = copy.deepcopy(model).eval()
    weights = prunable_parameters(m)
    mask = pruning.structured_mask(weights, full_mask(weights), 0.5, TINY["num_attention_heads"], ("head",))
    with torch.no_grad():
        for n, w in weights.items():
            w.mul_(mask[n])
    block = pruning.attention_blocks(list(weights))[0]
    d = TINY["hidden_size"] // TINY["num_attention_heads"]
    dead = [h for h in range(TINY["num_attention_heads"]) if not mask[block["output"]][:, h * d].any()]
    for h in dead:  # what the zero columns multiply: the head's context, whatever its biases make it
        assert not weights[block["output"]][:, h * d:(h + 1) * d].any()
        assert not weights[block["query"]][h * d:(h + 1) * d].any()


def test_two_of_every_four_along_the_input_dimension(model):
    weights = prunable_parameters(model)
    mask = pruning.nm_mask(weights, full_mask(weights))
    for n, m in mask.items():
        groups = m.view(m.shape[0], -1, 4)
        assert (groups.sum(dim=2) == 2).all(), n
        w = weights[n].detach().abs().view(m.shape[0], -1, 4)
        # the kept two are the two largest of their four
        assert (w.masked_fill(~groups, float("inf")).amin(dim=2) >= w.masked_fill(groups, -1).amax(dim=2)).all(), n
    assert sparsity(mask) == 0.5
    again = pruning.nm_mask(weights, mask)  # a chain's next level keeps the same pattern
    assert all(torch.equal(again[n], mask[n]) for n in mask)
