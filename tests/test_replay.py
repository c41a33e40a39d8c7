"""Replaying the paper's published code (docs/PAPER_CODE.md rows a–f), each deviation one option; defaults unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LxmertConfig, LxmertForQuestionAnswering

from lxsweep import pruning
from lxsweep.cli import main
from lxsweep.config import ConfigError, from_dict, load_experiment
from lxsweep.plan import Plan, TrialKey, child_masks, mask_source, parent, validate_key
from lxsweep.report import load_rows, nominal_table, report_nominal, to_markdown
from lxsweep.config import write_experiment
from lxsweep.store import Store, mask_path, metrics_path, weights_path
from lxsweep.trial import run_trial

ROOT = Path(__file__).resolve().parents[1]
K = TrialKey.parse
TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, l_layers=2, x_layers=1, r_layers=1,
            visual_feat_dim=16, visual_pos_dim=4, vocab_size=100, num_qa_labels=7)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = LxmertForQuestionAnswering(LxmertConfig(**TINY))
    return {n: p.detach().clone() for n, p in pruning.prunable_parameters(model).items()}


def removed_flags(mask: pruning.Mask) -> dict[str, torch.Tensor]:
    return {n: ~m for n, m in mask.items()}


# -- (a) per-tensor steps from the dense weights, and the nominal read-off -----------------------


def test_one_step_removes_round_rate_n_plus_one_per_tensor_ties_included():
    w = {"a": torch.arange(1.0, 21.0).view(4, 5), "b": torch.tensor([0.5, 0.5, 0.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])}
    mask = pruning.stepwise_mask(w, pruning.full_mask(w), steps=1, rate=0.1)
    # a: 20 survivors, cutoff = sorted[round(2.0)] = 3 -> 1, 2, 3 removed (round(0.1 n) + 1)
    assert (~mask["a"]).view(-1).nonzero().view(-1).tolist() == [0, 1, 2]
    # b: 10 survivors, cutoff = sorted[1] = 0.5 -> the three tied 0.5 go together
    assert (~mask["b"]).nonzero().view(-1).tolist() == [0, 1, 2]
    # a second step ranks only the survivors: 17 left, cutoff = sorted[round(1.7)] = sorted[2] -> 4, 5, 6
    two = pruning.stepwise_mask(w, mask, steps=1, rate=0.1)
    assert (~two["a"]).view(-1).nonzero().view(-1).tolist() == [0, 1, 2, 3, 4, 5]
    assert pruning.stepwise_mask(w, pruning.full_mask(w), steps=2, rate=0.1)["a"].equal(two["a"])
    high = pruning.stepwise_mask(w, pruning.full_mask(w), steps=1, rate=0.1, largest=True)
    assert (~high["a"]).view(-1).nonzero().view(-1).tolist() == [17, 18, 19]  # mirrored: the largest


def test_stepwise_levels_read_off_the_papers_nominal_points(weights):
    full = pruning.full_mask(weights)
    rows, previous = [], full
    for level in range(1, 23):
        mask = pruning.stepwise_mask(weights, full, steps=level, rate=0.1)
        assert not (mask["lxmert.pooler.dense.weight"] & ~previous["lxmert.pooler.dense.weight"]).any()
        for name in mask:  # per tensor: every tensor loses at least its share, no retraining in between
            assert 1 - mask[name].float().mean() >= 1 - 0.9 ** level - 1e-9, (name, level)
        previous = mask
        rows.append({"trial": f"low-L{level}-s0", "subnetwork": "low", "level": level, "seed": 0, "accuracy": 0.5,
                     "target_sparsity": 1 - 0.9 ** level, "sparsity": pruning.sparsity(mask)})
    table = nominal_table(rows, [0.2, 0.3, 0.5, 0.7, 0.9])
    assert [r["level"] for r in table] == [3, 4, 7, 12, 22]
    # the paper's code's 27.1 / 34.4 / 52.2 / 71.8 / 90.2 %, plus about one weight per tensor per step
    for r, paper in zip(table, (0.271, 0.344, 0.522, 0.718, 0.902)):
        assert paper <= r["achieved"] < paper + 0.01
    assert nominal_table(rows, [0.95]) == [{"nominal": 0.95, "subnetwork": "low", "level": None}]


def test_a_follower_is_read_off_at_the_level_of_the_mask_it_follows():
    rows = [{"trial": f"{sub}-L{lv}-s0", "subnetwork": sub, "level": lv, "seed": 0, "accuracy": 0.6,
             "target_sparsity": t, "sparsity": s}
            for sub, lv, t, s in [("low", 1, 0.1, 0.1), ("low", 2, 0.19, 0.21), ("code_high", 1, 0.1, 0.9),
                                  ("code_high", 2, 0.19, 0.79)]]
    got = {r["subnetwork"]: (r["level"], r["sparsity"]) for r in nominal_table(rows, [0.2])}
    assert got == {"low": (2, 0.21), "code_high": (2, 0.79)}  # code_high's own 79% is not what places it
    assert "| 20 | code_high | 2 | 21.0 | 79.0 |" in to_markdown(rows, "t", nominal=[0.2])


def test_the_report_reads_off_the_stores_recorded_nominal_points(tmp_path):
    store = Store(str(tmp_path / "store"))
    write_experiment(store, from_dict({"pruning": {"levels": 3, "nominal": [0.2, 0.5]}}))
    assert report_nominal(store) == [0.2, 0.5]
    for level, s in ((1, 0.3), (2, 0.51)):
        store.write_json(metrics_path(f"low-L{level}-s0"), {"trial": f"low-L{level}-s0", "subnetwork": "low",
                                                            "level": level, "seed": 0, "accuracy": 0.5, "sparsity": s,
                                                            "started_at": 1.0, "duration_s": 1.0})
    md = to_markdown(load_rows(store), "t", nominal=report_nominal(store))  # what write_report reads off
    assert "| 20 | low | 1 | 30.0 |" in md and "| 50 | low | 2 | 51.0 |" in md


# -- (b) code_high, (c) code_random, layer_random --------------------------------------------------


@pytest.mark.parametrize("level, nominal", [(12, 0.7), (3, 0.2)])
def test_code_high_removes_as_many_as_low_keeps_from_lows_removed_first(weights, level, nominal):
    low = pruning.stepwise_mask(weights, pruning.full_mask(weights), steps=level, rate=0.1)
    assert pruning.sparsity(low) >= nominal
    high = pruning.code_high_mask(low, seed=0, level=level)
    for name in low:
        kept_by_low, removed_by_high = int(low[name].sum()), int((~high[name]).sum())
        assert removed_by_high == kept_by_low, name
        if nominal > 0.5:  # every removed weight is one the low mask removes
            assert not (~high[name] & low[name]).any(), name
        else:  # every weight the low mask removes, and more
            assert not (~low[name] & high[name]).any(), name
            assert removed_by_high > int((~low[name]).sum()), name
    assert high["lxmert.pooler.dense.weight"].equal(pruning.code_high_mask(low, 0, level)["lxmert.pooler.dense.weight"])
    other = pruning.code_high_mask(low, seed=1, level=level)
    assert any(not other[n].equal(high[n]) for n in low)


def test_code_random_matches_lows_per_tensor_fraction_only_in_expectation(weights):
    low = pruning.stepwise_mask(weights, pruning.full_mask(weights), steps=7, rate=0.1)
    rnd = pruning.code_random_mask(low, seed=0, level=7)
    exact = 0
    for name in low:
        want, got = int((~low[name]).sum()), int((~rnd[name]).sum())
        n = low[name].numel()
        assert abs(got - want) <= 5 * (n * 0.25) ** 0.5 + 1, name  # binomial spread around low's count
        exact += got == want
    assert exact < len(low) / 2  # counts are approximate, not matched
    assert abs(pruning.sparsity(rnd) - pruning.sparsity(low)) < 0.02
    overlap = sum(int((~rnd[n] & ~low[n]).sum()) for n in low) / sum(int((~low[n]).sum()) for n in low)
    assert 0.4 < overlap < 0.65  # independent of the magnitudes: about the removed fraction (52%) of low's
    assert all(rnd[n].equal(pruning.code_random_mask(low, 0, 7)[n]) for n in low)


def test_layer_random_removes_lows_exact_per_tensor_counts_at_random(weights):
    low = pruning.magnitude_mask(weights, pruning.full_mask(weights), 0.6)  # global: counts differ per tensor
    layer = pruning.layer_random_mask(low, seed=0, level=4)
    counts = {n: int((~low[n]).sum()) for n in low}
    assert len(set(c / low[n].numel() for n, c in counts.items())) > 3
    assert {n: int((~layer[n]).sum()) for n in low} == counts
    overlap = sum(int((~layer[n] & ~low[n]).sum()) for n in low) / sum(counts.values())
    assert overlap < 0.8  # which weights: random, not low's
    assert all(layer[n].equal(pruning.layer_random_mask(low, 0, 4)[n]) for n in low)
    assert any(not layer[n].equal(pruning.layer_random_mask(low, 0, 5)[n]) for n in low)


def test_followers_hang_off_the_followed_chain_with_no_new_fine_tunes():
    base = {"seeds": [0], "pruning": {"levels": 3, "subnetworks": ["low"]}}
    follow = {"seeds": [0], "pruning": {"levels": 3, "subnetworks": ["low", "code_high", "code_random", "layer_random"]}}
    plain, exp = Plan(from_dict(base)), Plan(from_dict(follow))
    assert exp.fine_tunes == plain.fine_tunes + 3 * 3 and exp.critical_path == plain.critical_path
    assert {k.name: p.name for k, p in exp.parents.items() if p and k.subnetwork != "low"} == {
        f"{c}-L{k}-s0": ("dense-L0-s0" if k == 1 else f"low-L{k - 1}-s0")
        for c in ("code_high", "code_random", "layer_random") for k in (1, 2, 3)}
    assert mask_source(exp.exp, K("code_high-L2-s0")) == "code_high-L2-s0"
    assert child_masks(exp.exp, K("low-L1-s0")) == [K("low-L2-s0"), K("code_high-L2-s0"), K("code_random-L2-s0"),
                                                    K("layer_random-L2-s0")]
    alone = Plan(from_dict({"pruning": {"levels": 2, "subnetworks": ["code_high"]}}))  # low's chain comes along
    assert sorted(k.name for k in alone.trials) == ["code_high-L1-s0", "code_high-L2-s0", "dense-L0-s0", "low-L1-s0"]


# -- (d) the mask applied once, not enforced --------------------------------------------------------


def test_unenforced_mask_regrows_under_adamw_and_metrics_say_so(smoke_file, tiny_overrides):
    common = [*tiny_overrides, "training.epochs=1", "pruning.subnetworks=[random]", "training.keep_weights=none"]
    on = load_experiment(smoke_file, common)
    off = load_experiment(smoke_file, [*common, "training.enforce_mask=false"])
    assert on.hash != off.hash and on.training.enforce_mask
    quiet = lambda s: None  # noqa: E731
    kept_on = run_trial(on, K("random-L2-s0"), log=quiet)
    kept_off = run_trial(off, K("random-L2-s0"), log=quiet)
    assert kept_on["trained_sparsity"] == kept_on["sparsity"] == pytest.approx(on.sparsity(2), abs=1e-4)
    assert kept_off["sparsity"] == kept_on["sparsity"]  # the same mask ...
    # ... but AdamW moved the pruned weights off zero: only those without a gradient stay (the last cross
    # layer's vision branch, which the answer head never reads)
    assert kept_off["trained_sparsity"] < kept_off["sparsity"] / 4
    md = to_markdown(load_rows(Store.for_experiment(off)), "t")
    assert f"| random | 2 | {100 * kept_off['sparsity']:.1f} | {100 * kept_off['trained_sparsity']:.1f} |" in md
    assert "after retraining" not in to_markdown(load_rows(Store.for_experiment(on)), "t")


# -- a dense trial writes every level's and every follower's mask (a + b + c + f together) ----------


def test_stepwise_dense_trial_writes_the_trained_levels_and_followers_for_every_seed(smoke_file, tiny_overrides):
    used = "pruning.levels_of={low: [1, 3], code_high: [3], code_random: [1, 3], layer_random: [3]}"
    overrides = [*tiny_overrides, "seeds=[0, 1]", "rewind.dense_seed=0", "pruning.schedule=stepwise",
                 "pruning.rate=0.2", "pruning.levels=3", "pruning.subnetworks=[low, code_high, code_random, layer_random]",
                 "training.weights_dtype=float32"]
    exp = load_experiment(smoke_file, [*overrides, used])
    store = Store.for_experiment(exp)
    dense = run_trial(exp, K("dense-L0-s0"), store, log=lambda s: None)
    # Only the levels some trial trains: level 2 of every criterion is skipped, code_high and layer_random at 1 too.
    assert sorted(dense["child_masks"]) == sorted(f"{c}-L{lv}-s{s}" for s in (0, 1) for c, lv in
                                                   [("low", 1), ("low", 3), ("code_high", 3), ("code_random", 1),
                                                    ("code_random", 3), ("layer_random", 3)])
    from safetensors.torch import load

    from lxsweep.trial import initial_model

    state = load(store.read_bytes(weights_path("dense-L0-s0")))
    trained = {n: state[n] for n in pruning.prunable_names(state, exp.pruning.scope)}
    mask = lambda name: pruning.load_mask(store.path(mask_path(name)))  # noqa: E731
    for seed in (0, 1):
        for level in (1, 3):
            low = mask(f"low-L{level}-s{seed}")
            direct = pruning.stepwise_mask(trained, pruning.full_mask(trained), steps=level, rate=0.2)
            assert all(low[n].equal(direct[n]) for n in low), (seed, level)
            for kind in ("code_high", "code_random", "layer_random"):
                if not store.exists(mask_path(f"{kind}-L{level}-s{seed}")):
                    continue
                want = getattr(pruning, f"{kind}_mask")(low, seed, level)
                got = mask(f"{kind}-L{level}-s{seed}")
                assert all(got[n].equal(want[n]) for n in low), (kind, seed, level)
    # A level asked for later is rebuilt from the kept dense weights, as the dense trial would have made it.
    later = load_experiment(smoke_file, overrides)
    answers = state["answer_head.logit_fc.3.weight"].shape[0]
    _, _, rebuilt = initial_model(later, K("code_high-L2-s1"), store, answers, log=lambda s: None)
    low2 = pruning.stepwise_mask(trained, pruning.full_mask(trained), steps=2, rate=0.2)
    want = pruning.code_high_mask(low2, 1, 2)
    assert all(rebuilt[n].equal(want[n]) for n in want)
    assert store.exists(mask_path("code_high-L2-s1"))


# -- (e) the code's tensor scope -------------------------------------------------------------------


def test_published_code_scope_prunes_what_their_code_prunes():
    model = LxmertForQuestionAnswering(LxmertConfig(**TINY))
    params = dict(model.named_parameters())
    names = set(pruning.prunable_names(params, ["published_code"]))
    out = set(params) - names
    assert out == {n for n in params if n.startswith("lxmert.embeddings.")} | {
        "lxmert.encoder.visn_fc.visn_fc.bias", "lxmert.encoder.visn_fc.visn_layer_norm.weight",
        "lxmert.encoder.visn_fc.visn_layer_norm.bias", "lxmert.encoder.visn_fc.box_fc.weight",
        "lxmert.encoder.visn_fc.box_fc.bias", "lxmert.encoder.visn_fc.box_layer_norm.weight",
        "lxmert.encoder.visn_fc.box_layer_norm.bias", "answer_head.logit_fc.3.bias"}
    assert len(out) == 13  # their not_pruned_layers (12 positions) and the last entry
    assert {"lxmert.encoder.visn_fc.visn_fc.weight", "lxmert.encoder.layer.0.attention.self.query.bias",
            "lxmert.encoder.x_layers.0.lang_output.LayerNorm.weight", "lxmert.pooler.dense.bias",
            "answer_head.logit_fc.0.weight", "answer_head.logit_fc.2.bias", "answer_head.logit_fc.3.weight"} <= names
    assert set(pruning.prunable_names(params)) < names  # the default scope is a strict part of it
    with pytest.raises(ConfigError, match=r"pruning.scope: .*published_code is the paper's code's whole scope"):
        from_dict({"pruning": {"scope": ["published_code", "pooler"]}})


# -- (f) one dense fine-tune for every seed --------------------------------------------------------


def test_dense_seed_collapses_the_dense_trials_to_one_parent_of_every_chain():
    exp = from_dict({"seeds": [0, 1, 2], "rewind": {"dense_seed": 1},
                     "pruning": {"levels": 2, "subnetworks": ["low", "code_high", "random"]}})
    plan = Plan(exp)
    assert [k.name for k in plan.trials if k.level == 0] == ["dense-L0-s1"]
    assert {parent(exp, K(f"{c}-L1-s{s}")) for c in ("low", "code_high") for s in (0, 1, 2)} == {K("dense-L0-s1")}
    assert parent(exp, K("low-L2-s2")) == K("low-L1-s2")  # pruning runs keep their own seed
    assert {k.seed for k in child_masks(exp, K("dense-L0-s1"))} == {0, 1, 2}
    assert plan.fine_tunes == 1 + 3 * (2 + 2 + 2)
    with pytest.raises(ValueError, match=r"dense trains once, with seed 1 \(rewind.dense_seed\)"):
        validate_key(exp, K("dense-L0-s0"))
    with pytest.raises(ConfigError, match=r"rewind.dense_seed: 5 is not in seeds \[0, 1\]"):
        from_dict({"seeds": [0, 1], "rewind": {"dense_seed": 5}})
    with pytest.raises(ConfigError, match=r"rewind.dense_seed: needs rewind.to: pretrained"):
        from_dict({"rewind": {"dense_seed": 0, "to": "step", "step": 3}})


# -- the experiment files and the validator ---------------------------------------------------------


def test_paper_code_experiment_turns_every_deviation_on():
    exp = load_experiment(ROOT / "experiments" / "paper-code.yaml", check=False)
    p = exp.pruning
    assert (p.schedule, p.rate, p.scope, exp.training.enforce_mask, exp.rewind.dense_seed) == (
        "stepwise", 0.1, ["published_code"], False, 0)
    assert p.subnetworks == ["low", "code_high", "code_random"] and exp.seeds == [0, 1, 2]
    assert p.nominal == pytest.approx([0.1 * k for k in range(1, 10)])
    assert exp.model.pretrained == "unc-nlp/lxmert-base-uncased" and exp.data.source == "vqa"
    assert exp.nominal_levels() == [1, 3, 4, 5, 7, 9, 12, 16, 22] == p.levels_of["low"] == p.levels_of["code_high"]
    plan = Plan(exp)
    assert [k.name for k in plan.trials if k.level == 0] == ["dense-L0-s0"]
    assert plan.critical_path == 2 and plan.fine_tunes == 1 + 3 * 3 * 9  # 9 nominal points, 3 subnetworks, 3 seeds
    assert main(["plan", str(ROOT / "experiments" / "paper-code.yaml"), "--no-checks"]) == 0


@pytest.mark.parametrize("override", [
    "pruning.schedule=stepwise", "pruning.subnetworks=[low,code_high]", "pruning.subnetworks=[low,code_random]",
    "pruning.subnetworks=[low,layer_random]", "training.enforce_mask=false", "pruning.scope=[published_code]",
    "rewind.dense_seed=0", "pruning.nominal=[0.5,0.9]"])
def test_each_replay_option_switches_on_alone_on_the_smoke_experiment(smoke_file, override, capsys):
    stepwise = override.startswith("pruning.schedule")
    sets = ["pruning.sparsities=null", "pruning.levels=3"] if stepwise else []
    base = load_experiment(smoke_file)
    exp = load_experiment(smoke_file, [*sets, override])
    assert main(["plan", str(smoke_file), "--no-checks", *[a for s in [*sets, override] for a in ("--set", s)]]) == 0
    assert "fine-tunes" in capsys.readouterr().out
    selection_only = override.startswith(("pruning.subnetworks", "pruning.nominal"))
    assert (exp.hash == base.hash) == selection_only  # followers and read-offs select; the rest change results


def test_replay_options_default_to_the_correct_protocol_and_keep_hashes():
    exp = from_dict({})
    assert (exp.pruning.schedule, exp.pruning.nominal, exp.training.enforce_mask, exp.rewind.dense_seed) == (
        "iterative", [], True, None)
    assert exp.pruning.scope == ["language", "vision", "cross", "pooler"]
    assert "enforce_mask" not in str(exp.result_dict()) and "dense_seed" not in str(exp.result_dict())


@pytest.mark.parametrize("raw, message", [
    ({"pruning": {"schedule": "stepwise", "sparsities": [0.5]}},
     r"pruning.sparsities: schedule stepwise takes `pruning.rate` per-tensor steps"),
    ({"pruning": {"schedule": "stepwise", "layerwise": True}}, r"pruning.layerwise: schedule stepwise is always per tensor"),
    ({"pruning": {"nominal": [0.5, 0.2]}}, r"pruning.nominal: \[0.5, 0.2\] — expected strictly increasing"),
    ({"pruning": {"nominal": [1.5]}}, r"pruning.nominal\[0\]: 1.5 is out of range"),
])
def test_bad_replay_combinations_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)
