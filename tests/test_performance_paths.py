"""The optimised paths compute exactly what the straightforward ones do (no timing here; see bench/).

- ``MaskEnforcer`` (fused ``torch._foreach_mul_``) == a per-tensor in-place loop ==
  ``torch.nn.utils.prune`` reparametrisation, over real AdamW steps of the trainer's own
  ``train_step``;
- :class:`lxsweep.model.SdpaAttention` == transformers' eager attention (scores, gradients),
  and lxsweep.optim's multi-tensor AdamW and clipping == the per-tensor ones;
- ``runtime()`` on CPU picks the plain fp32 recipe (and bf16 autocast only when asked);
- the batched memmap loader returns what direct indexing of the store's arrays returns,
  for a shuffled order and for a 2-rank shard.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn.utils import prune
from vqa_fixture import fixture_splits, write_vqa_fixture

from lxsweep import model as lxmodel
from lxsweep import optim
from lxsweep import pruning
from lxsweep.config import from_dict
from lxsweep.data.loader import make_loader, shard_rows
from lxsweep.data.prepare import prepare_vqa
from lxsweep.data.prepared import load_vqa_store
from lxsweep.train import Runtime, adamw, forward, runtime, train_step, vqa_loss

TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "l_layers": 1, "x_layers": 1, "r_layers": 1}
ANSWERS, VOCAB, FEAT_DIM, BOXES, TOKENS, BATCH = 7, 30, 16, 5, 8, 6
STEPS, GRAD_CLIP = 4, 0.5  # a small clip so clipping is active in every step


# ----------------------------------------------------------------- mask enforcement


def _model() -> torch.nn.Module:
    return lxmodel.build_tiny(TINY, ANSWERS, VOCAB, FEAT_DIM, seed=3)


def _batch() -> dict[str, torch.Tensor]:
    """A fixed batch in the loader's layout."""
    g = torch.Generator().manual_seed(5)
    x1y1 = torch.rand(BATCH, BOXES, 2, generator=g) * 0.5
    return {
        "input_ids": torch.randint(1, VOCAB, (BATCH, TOKENS), generator=g),
        "attention_mask": torch.ones(BATCH, TOKENS, dtype=torch.int64),
        "token_type_ids": torch.zeros(BATCH, TOKENS, dtype=torch.int64),
        "features": torch.randn(BATCH, BOXES, FEAT_DIM, generator=g),
        "boxes": torch.cat([x1y1, x1y1 + 0.4], dim=2),
        "target_labels": torch.randint(0, ANSWERS, (BATCH, 3), generator=g),
        "target_scores": torch.rand(BATCH, 3, generator=g),
    }


class _Probe:
    """Wraps a mask enforcement (or none): records who got a gradient and checks clipping is active."""

    def __init__(self, model: torch.nn.Module, inner=None):
        self.model, self.inner, self.with_grad = model, inner, set()

    def zero_grads(self) -> None:  # called right after backward, before clipping
        self.with_grad = {n for n, p in self.model.named_parameters() if p.grad is not None}
        if self.inner is not None:
            self.inner.zero_grads()
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        assert norm > GRAD_CLIP, "the test wants clipping active, so the masked gradient norm matters"

    def apply(self) -> None:
        if self.inner is not None:
            self.inner.apply()


def _train(model: torch.nn.Module, masks=None) -> tuple[list[float], set[str]]:
    """STEPS of the trainer's own ``train_step`` (AdamW, weight decay on matrices, grad clip).

    Returns the losses and the names of the parameters that got a gradient.
    """
    rt = Runtime(torch.device("cpu"))
    optimizer = adamw(model, lr=1e-2, weight_decay=0.01, rt=rt)
    probe = _Probe(model, masks)
    batch = _batch()
    torch.manual_seed(11)  # the same dropout draws in every variant
    model.train()
    losses = [train_step(model, batch, optimizer, rt, masks=probe, grad_clip=GRAD_CLIP).item() for _ in range(STEPS)]
    return losses, probe.with_grad


def _mask(model: torch.nn.Module) -> pruning.Mask:
    shapes = {n: p.shape for n, p in pruning.prunable_parameters(model).items()}
    return pruning.random_mask(shapes, 0.5, seed=0, level=1)


def _train_enforcer() -> tuple[list[float], set[str], dict, pruning.Mask]:
    model = _model()
    mask = _mask(model)
    enforcer = pruning.MaskEnforcer(model, mask)
    losses, with_grad = _train(model, enforcer)
    return losses, with_grad, model.state_dict(), mask


def _train_naive(mask: pruning.Mask) -> tuple[list[float], dict]:
    model = _model()
    params = dict(model.named_parameters())
    pairs = [(params[n], m.to(params[n].dtype)) for n, m in mask.items()]
    with torch.no_grad():
        for p, m in pairs:
            p.mul_(m)

    class Naive:
        @torch.no_grad()
        def zero_grads(self):
            for p, m in pairs:
                if p.grad is not None:
                    p.grad.mul_(m)

        @torch.no_grad()
        def apply(self):
            for p, m in pairs:
                p.data.mul_(m)

    return _train(model, Naive())[0], model.state_dict()


def _train_prune(mask: pruning.Mask) -> tuple[list[float], dict]:
    model = _model()
    modules = [model.get_submodule(name.rsplit(".", 1)[0]) for name in mask]
    for module, m in zip(modules, mask.values()):
        prune.custom_from_mask(module, "weight", m)
    losses, _ = _train(model)
    for module in modules:
        prune.remove(module, "weight")  # the effective weight weight_orig * weight_mask, under the plain name
    return losses, model.state_dict()


def test_mask_enforcer_matches_naive_loop_and_torch_prune():
    losses, with_grad, weights, mask = _train_enforcer()
    naive_losses, naive_weights = _train_naive(mask)
    prune_losses, prune_weights = _train_prune(mask)

    # Same arithmetic, only fused: bit-identical.
    assert losses == naive_losses
    assert weights.keys() == naive_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], naive_weights[name]), name
    # prune sums the gradient norm in another parameter order: equal up to rounding.
    np.testing.assert_allclose(prune_losses, losses, rtol=1e-5)
    assert prune_weights.keys() == weights.keys()
    for name in weights:
        torch.testing.assert_close(prune_weights[name], weights[name], rtol=1e-5, atol=1e-6, msg=name)

    initial = _model().state_dict()
    for name, m in mask.items():
        assert bool((weights[name][~m] == 0).all()), f"{name}: a pruned weight grew back"
        if name in with_grad:  # the last cross layer's vision branch never reaches the answer head
            assert not torch.equal(weights[name][m], initial[name][m]), f"{name}: the kept weights did not train"
    assert len(with_grad & set(mask)) > len(mask) // 2
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------- runtime


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU recipe")
def test_runtime_on_cpu_is_plain_fp32_unless_bf16_is_asked():
    rt = runtime(from_dict({}))
    assert rt.device == torch.device("cpu")
    assert rt.autocast_dtype is None
    assert rt.fused_adamw is False
    assert rt.pin_memory is False
    assert (rt.rank, rt.world) == (0, 1)

    bf16 = runtime(from_dict({"training": {"precision": "bf16"}}))
    assert bf16.device == torch.device("cpu")
    assert bf16.autocast_dtype == torch.bfloat16
    assert bf16.fused_adamw is False and bf16.pin_memory is False


# ------------------------------------------------------------------ attention and optimizer


def _padded_batch() -> dict[str, torch.Tensor]:
    """:func:`_batch` with padded questions (the last 3 tokens masked), so the additive attention mask matters."""
    batch = _batch()
    batch["attention_mask"] = batch["attention_mask"].clone()
    batch["attention_mask"][:, -3:] = 0
    return batch


def test_sdpa_attention_is_transformers_attention():
    """Same scores, gradients and attention probabilities as the eager code; every attention module switched."""
    eager = _model().eval()  # no dropout: the two would draw different masks
    fast = lxmodel.use_sdpa_attention(copy.deepcopy(eager))
    modules = [m for m in fast.modules() if isinstance(m, lxmodel.modeling_lxmert.LxmertAttention)]
    assert modules and all(type(m) is lxmodel.SdpaAttention for m in modules)
    assert fast.state_dict().keys() == eager.state_dict().keys()  # checkpoints load either way
    batch = _padded_batch()
    rt = Runtime(torch.device("cpu"))
    losses = [vqa_loss(forward(net, batch, rt), batch) for net in (eager, fast)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for loss in losses:
        loss.backward()
    for (name, p), q in zip(eager.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], visual_feats=batch["features"],
                  visual_pos=batch["boxes"], output_attentions=True)
    with torch.no_grad():
        a, b = eager(**inputs), fast(**inputs)  # asked for the probabilities: the eager path's own
    for x, y in zip(a.cross_encoder_attentions, b.cross_encoder_attentions):
        torch.testing.assert_close(y, x)


def test_multi_tensor_adamw_and_clipping_follow_the_per_tensor_ones():
    """lxsweep.optim (foreach) over clipped steps: the per-tensor AdamW's weights to float rounding."""
    def run(multi_tensor: bool) -> dict[str, torch.Tensor]:
        model = _model().eval()  # no dropout: the two runs see the same function
        rt = Runtime(torch.device("cpu"))
        if multi_tensor:
            optimizer = adamw(model, lr=1e-3, weight_decay=0.01, rt=rt)
        else:
            optimizer = torch.optim.AdamW(optim.decay_groups(model, 0.01), lr=1e-3, foreach=False)
        batch = _batch()
        for _ in range(STEPS):
            if multi_tensor:
                train_step(model, batch, optimizer, rt, grad_clip=GRAD_CLIP)
            else:
                vqa_loss(forward(model, batch, rt), batch).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP, foreach=False)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return {n: p.detach() for n, p in model.named_parameters()}

    assert all(g.get("foreach") for g in adamw(_model(), 1e-3, 0.01, Runtime(torch.device("cpu"))).param_groups)
    fast, slow = run(True), run(False)
    for name in slow:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-5, atol=1e-6, msg=name)


# -------------------------------------------------------------------------- loader


@pytest.fixture(scope="module")
def store_split(tmp_path_factory):
    """The train split of a prepared store with real shapes (36 x 2048), memory-mapped."""
    raw = tmp_path_factory.mktemp("vqa-raw")
    files = write_vqa_fixture(raw, num_images=10, questions_per_image=3)
    store = prepare_vqa(tmp_path_factory.mktemp("vqa") / "store", splits=fixture_splits(files),
                        feature_tsvs=[files["features"]], ans2label=files["ans2label"])
    split = load_vqa_store(store).train
    assert isinstance(split.features, np.memmap) and split.features.shape[1:] == (36, 2048)
    n = len(split)
    # Token rows that name their question, so a misplaced row cannot go unnoticed.
    tokens = {
        "input_ids": torch.arange(n)[:, None] * 100 + torch.arange(20),
        "attention_mask": (torch.arange(20) < (torch.arange(n)[:, None] % 20 + 1)).long(),
        "token_type_ids": torch.arange(n)[:, None].expand(n, 20) % 2,
    }
    return split, tokens


def _direct(split, tokens, rows: np.ndarray) -> dict[str, torch.Tensor]:
    images = split.image_index[rows]
    return {
        "rows": torch.from_numpy(rows),
        **{k: v[torch.from_numpy(rows)] for k, v in tokens.items()},
        "features": torch.from_numpy(np.asarray(split.features[images]).astype(np.float32)),
        "boxes": torch.from_numpy(np.asarray(split.boxes[images])),
        "target_labels": torch.from_numpy(split.target_labels[rows]),
        "target_scores": torch.from_numpy(split.target_scores[rows]),
    }


def _check_batches(loader, split, tokens) -> np.ndarray:
    """Every batch equals direct indexing of its rows; returns the rows in loader order."""
    seen, duplicates = [], False
    for batch in loader:
        rows = batch["rows"].numpy()
        expected = _direct(split, tokens, rows)
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            assert batch[key].dtype == value.dtype, key
            assert torch.equal(batch[key], value), key
        assert batch["features"].dtype == torch.float32
        duplicates |= len(np.unique(split.image_index[rows])) < len(rows)
        seen.append(rows)
    assert duplicates, "no batch held two questions of one image: the de-duplicated read went untested"
    return np.concatenate(seen)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_equal_direct_indexing_when_shuffled(store_split, workers):
    split, tokens = store_split
    loader = make_loader(split, tokens, 4, Runtime(torch.device("cpu")), shuffle_seed=7, num_workers=workers)
    assert loader.pin_memory is False
    rows = _check_batches(loader, split, tokens)
    np.testing.assert_array_equal(rows, shard_rows(len(split), 0, 1, 7))
    assert not np.array_equal(rows, np.arange(len(split))), "the order should be shuffled"
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(split)))


def test_loader_two_rank_shards_cover_every_row_once(store_split):
    split, tokens = store_split
    n = len(split)
    assert n % 2 == 1, "an odd split makes the sampler pad one rank"
    per_rank = []
    for rank in range(2):
        loader = make_loader(split, tokens, 4, Runtime(torch.device("cpu"), rank=rank, world=2), shuffle_seed=3)
        rows = _check_batches(loader, split, tokens)
        np.testing.assert_array_equal(rows, shard_rows(n, rank, 2, 3))
        per_rank.append(rows)
    assert len(per_rank[0]) == len(per_rank[1]) == (n + 1) // 2
    everything = np.concatenate(per_rank)
    np.testing.assert_array_equal(np.unique(everything), np.arange(n))
    values, counts = np.unique(everything, return_counts=True)
    padding = values[counts > 1]
    assert counts.max() == 2 and padding.tolist() == [shard_rows(n, 0, 1, 3)[0]]  # the one duplicate is the padding
