"""The ``lxsweep`` command line. Every command has ``--help`` with an example."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Callable, Optional

from lxsweep.config import ConfigError, Experiment, load_experiment, migrate_store


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment YAML file (experiments/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key by its dotted path, e.g. --set training.epochs=2 (repeatable)")


def _load(args: argparse.Namespace, check: bool = True) -> Experiment:
    return _experiment(args.experiment, args.overrides, check=check)


def _experiment(path: str, overrides: list[str], check: bool = True) -> Experiment:
    """The experiment file, its store renamed first if an older lxsweep named it by an absolute model path."""
    exp = load_experiment(path, overrides, check=check)
    migrate_store(exp, log=lambda line: print(line, file=sys.stderr, flush=True))
    return exp


def _parser(sub, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=help_, epilog="example:\n  " + example,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


# -- trial --------------------------------------------------------------------


def cmd_trial(args: argparse.Namespace) -> int:
    from lxsweep.baselines import experiment_baselines
    from lxsweep.hooks import ProgressBar, Tracking, log_line
    from lxsweep.plan import Plan, TrialKey, dense_key, trial_key, validate_key
    from lxsweep.config import write_experiment
    from lxsweep.store import Store, finished_trials, metrics_path, read_metrics
    from lxsweep.trial import check_trial_inputs, run_trial

    from lxsweep.preflight import preflight
    from lxsweep.subnetworks import DENSE

    exp = _load(args)
    try:
        key = trial_key(exp, args.level, args.subnetwork, args.seed)
        validate_key(exp, key)
    except ValueError as exc:
        raise UserError(f"{exp.source}: {exc} — pick a trial of the experiment (`lxsweep plan` lists them)") from None
    if key.subnetwork != DENSE and key.subnetwork not in exp.pruning.subnetworks:
        raise UserError(f"{exp.source}: --subnetwork {key.subnetwork}: not in pruning.subnetworks "
                        f"{exp.pruning.subnetworks} — pick one of them or add it there")
    preflight(exp)
    store = Store.for_experiment(exp)
    check_trial_inputs(exp, key, store)  # a corrupt metrics.json or mask is refused now, not after training
    write_experiment(store, exp, overwrite=False)  # `status` and `report` read it, as after a launch
    finished = finished_trials(store)
    if key.name in finished:  # never over the sweep's files: into a reproduction area, then compare
        return _reproduce(exp, key, store, args.check)
    if args.check:
        raise UserError(f"{store.root} has no finished {key.name} to check against — run it without --check first")
    missing = Plan(exp).missing_ancestors(key, {TrialKey.parse(n) for n in finished})
    if missing:
        print(f"store {store.root} lacks the chain prefix of {key.name}; running it first: "
              + ", ".join(k.name for k in missing))
    for k in [*missing, key]:
        # The same tracker as a sweep; a re-run of a finished trial gets a run of its own.
        hooks = [Tracking(exp, k, store, rerun=k.name in finished), ProgressBar()]
        metrics = run_trial(exp, k, store, hooks=hooks, log=log_line)
        _print_result(metrics)
    dense = dense_key(key.seed, exp)
    if store.exists(metrics_path(dense.name)):
        dense_acc = read_metrics(store, dense.name)["accuracy"]
        base = experiment_baselines(exp, store)
        print(f"baselines without the image: majority answer {base['majority']['accuracy']:.4f}, "
              f"blind {base['blind']['accuracy']:.4f}; {dense.name}: {dense_acc:.4f}")
    print(f"metrics: {store.path(metrics_path(key.name))}")
    return 0


def _reproduce(exp: Experiment, key, store, check: bool) -> int:
    from lxsweep.hooks import ProgressBar, Tracking, log_line
    from lxsweep.reproduce import reproduce_trial, reproduction_store

    area = reproduction_store(store, key.name)
    print(f"{key.name} is finished in {store.root}; reproducing it into {area.root}")
    rep = reproduce_trial(exp, key, store, area, hooks=[Tracking(exp, key, area, rerun=True), ProgressBar()],
                          log=log_line)
    _print_result(rep.reproduced)
    for line in rep.environment:
        print(f"  environment differs: {line}")
    if rep.matched:
        print(f"reproduced {key.name}: matches the sweep (metrics and weight digest identical)")
        return 0
    print(f"reproduced {key.name}: DIFFERS from the sweep in {len(rep.differences)} value(s):")
    for line in rep.differences:
        print(f"  {line}")
    return 1 if check else 0


def _print_result(m: dict) -> None:
    types = " ".join(f"{k[len('accuracy_'):]} {v:.4f}" for k, v in m.items()
                     if k.startswith("accuracy_") and k[len("accuracy_"):] in ("yesno", "number", "other"))
    print(f"result {m['trial']}: accuracy {m['accuracy']:.4f} ({types}) sparsity {m['sparsity']:.4f} "
          f"in {m['duration_s']:.1f}s", flush=True)


# -- plan ---------------------------------------------------------------------


def _size(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{1000 * gb:.0f} MB"


def cmd_plan(args: argparse.Namespace) -> int:
    from lxsweep.plan import Plan

    from lxsweep.preflight import preflight

    exp = _load(args, check=not args.no_checks)
    checks = [] if args.no_checks else preflight(exp)
    from lxsweep.sizes import needs

    plan = Plan(exp)
    s = {**plan.summary(), "needs": needs(exp)}
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"experiment {s['experiment']}  hash {s['hash']}  store {exp.storage.rstrip('/')}/{s['store']}")
    print(f"seeds {s['seeds']}  subnetworks {', '.join(s['subnetworks'])}  schedule {s['schedule']}")
    print("levels: " + ", ".join(f"L{lv['level']} {100 * lv['sparsity']:.1f}%" for lv in s["levels"]))
    print(f"fine-tunes: {s['fine_tunes']}  (a flat grid redoing each chain prefix: {s['naive_fine_tunes']})")
    print(f"critical path: {s['critical_path']} fine-tunes in sequence")
    if exp.search.mode == "frontier":
        from lxsweep.frontier import questions

        print(f"search: frontier — runs only the trials among these that decide, for each of "
              f"{', '.join(questions(exp))}, where it stops matching dense (±{100 * exp.search.margin:g} points), "
              f"chosen as results arrive; the costs below are the full grid's, an upper bound "
              f"(docs/EXPERIMENT.md#frontier-search)")
    if "makespan_fine_tunes" in s:
        print(f"with {exp.resources.max_concurrent_trials} concurrent trials: {s['makespan_fine_tunes']:.0f} fine-tune durations end to end")
    if "gpu_hours" in s:
        line = f"cost at {s['fine_tune_hours']} h per fine-tune: {s['gpu_hours']} GPU-hours; critical path {s['critical_path_hours']} h"
        if "wall_hours" in s:
            line += f"; wall time ~{s['wall_hours']} h"
        print(line)
        print("  basis: " + (s["fine_tune_basis"] or "not stated — say in resources.fine_tune_basis whether the hours "
                             "were measured (device, how) or estimated (from what)"))
    else:
        print("cost: set resources.fine_tune_hours to estimate GPU-hours")
    for line in checks:
        print(f"checked: {line}")
    n = {k: _size(v) if k.endswith("_gb") else v for k, v in s["needs"].items()}
    print(f"store: ~{n['store_gb']} ({n['finished_trial_gb']} per finished trial: kept weights, mask, metrics; "
          f"plus a {n['checkpoint_gb']} checkpoint per running trial)")
    print(f"per node: ~{n['worker_ram_gb']} RAM per trial worker; local disk ~{n['node_disk_gb']}"
          + (f" (the staged prepared data, {n['staged_data_gb']} for all 123,287 VQA v2 images, + a checkpoint)"
             if s["needs"]["staged_data_gb"] else " (a checkpoint)"))
    print("trials (run order; <- parent):")
    for t in s["trials"]:
        print(f"  {t['trial']:<16} sparsity {100 * t['sparsity']:5.1f}%" + (f"  <- {t['parent']}" if t["parent"] else ""))
    return 0


# -- launch / status / report -------------------------------------------------


def cmd_launch(args: argparse.Namespace) -> int:
    import os

    from lxsweep.preflight import check_ray_address, preflight
    from lxsweep.sweep import launch

    exp = _load(args)
    preflight(exp)  # before Ray starts
    check_ray_address(args.address or os.environ.get("RAY_ADDRESS"))  # seconds, not ray.init's minute of retries
    return launch(exp, address=args.address, resume=args.resume, progress=not args.quiet)


def cmd_status(args: argparse.Namespace) -> int:
    from lxsweep.status import print_status

    return print_status(_store_from_arg(args.target, args.overrides))


def cmd_report(args: argparse.Namespace) -> int:
    from lxsweep.report import write_report

    from lxsweep.plan import Plan
    from lxsweep.store import finished_trials

    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a directory — choose a directory for the report files")
    store = _store_from_arg(args.target, args.overrides)
    nominal, trials = None, None
    if args.target.endswith((".yaml", ".yml")):
        # An experiment file is a selection of its store (levels_of, subnetworks, nominal points: none of them
        # hashed): report that grid and its read-off points, not every trial another selection added.
        exp = _experiment(args.target, args.overrides, check=False)
        nominal, trials = exp.pruning.nominal or None, {k.name for k in Plan(exp).trials}
        others = len(finished_trials(store) - trials)
        if others:
            print(f"lxsweep: reporting the experiment's grid; {others} other finished trial(s) in the store are left "
                  f"out (report the store directory for all of them)", file=sys.stderr)
    try:
        paths = write_report(store, nominal, trials, args.out, say=print)
    except OSError as exc:  # an --out it cannot create or write (permissions, a read-only or full filesystem)
        if args.out is None:
            raise
        raise UserError(f"--out {args.out}: cannot write the report there ({exc.strerror or exc}) — choose a "
                        f"directory you can write") from None
    if not paths:
        raise UserError(f"{args.target}: no finished trial to report yet — wait for one (lxsweep status) or launch it")
    for p in paths:
        print(p)
    return 0


def _store_from_arg(target: str, overrides: list[str]):
    from lxsweep.store import EXPERIMENT_FILE, Store

    if target.endswith((".yaml", ".yml")):
        store = Store.for_experiment(_experiment(target, overrides, check=False))
        store.check_reachable()
        if not store.exists(EXPERIMENT_FILE):
            raise UserError(f"{target}: its store {store.root} does not exist yet — launch the experiment "
                            f"(or run one `lxsweep trial`) first")
        return store
    store = Store(target)
    store.check_reachable()
    if not store.exists(EXPERIMENT_FILE):
        raise UserError(f"{target}: not a store (no experiment.yaml) — pass a store directory or an experiment file")
    return store


def cmd_export(args: argparse.Namespace) -> int:
    from lxsweep.export import ExportError, export_trial
    from lxsweep.hooks import log_line

    store = _store_from_arg(args.target, args.overrides)
    try:
        done = export_trial(store, args.trial, args.out, log=log_line, shrink=args.shrink)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    mb = lambda n: f"{n / 1e6:.2f} MB"
    load = (f"AutoModelForQuestionAnswering.from_pretrained({str(done.out)!r}, trust_remote_code=True)" if args.shrink
            else f"LxmertForQuestionAnswering.from_pretrained({str(done.out)!r})")
    print(f"wrote {done.out}: {args.trial}, {done.pruned} weights pruned ({done.zeros} zeros in scope"
          f"{'; whole heads and neurons removed from the model' if args.shrink else ''}); load it with {load}")
    print(f"size on disk: dense {done.model_file.name} {mb(done.dense_bytes)}, sparse {done.sparse_file.name} "
          f"{mb(done.sparse_bytes)} ({done.sparse_bytes / done.dense_bytes:.2f}x); "
          f"back to dense: lxsweep.export.load_sparse({str(done.sparse_file)!r})")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from lxsweep.latency import measure

    for flag, value in (("--batch", args.batch), ("--reps", args.reps)):
        if value < 1:
            raise UserError(f"{flag} {value}: out of range — give an integer >= 1")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise UserError(f"--device {args.device[:100]}: unknown device — give cpu, cuda or cuda:N")
    store = _store_from_arg(args.target, args.overrides)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: no CUDA device here — use --device cpu, or run it on a GPU node")
    entry = measure(store, batch=args.batch, reps=args.reps, device=args.device, log=print)
    if not entry["trials"]:
        raise UserError(f"{store.root}: no finished trial kept its weights (training.keep_weights), so none can be "
                        f"timed — launch with training.keep_weights=all")
    print(f"wrote {store.path('latency.json')}: {len(entry['trials'])} trials on {entry['device']}, batch "
          f"{args.batch}; `lxsweep report {store.root}` draws accuracy against it")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lxsweep.data import VQAStoreError
    from lxsweep.data.prepared import load_vqa_store
    from lxsweep.export import ExportError, trial_model
    from lxsweep.hooks import log_line
    from lxsweep.predict import predict_split, write_results

    if (args.target is None) == (args.model is None):
        raise UserError("give a store (or experiment) with --trial, or --model DIR of an exported trial")
    if args.target is not None:
        if not args.trial:
            raise UserError("--trial NAME is required with a store — pick a finished trial, e.g. low-L2-s0")
        store = _store_from_arg(args.target, args.overrides)
        try:
            tm = trial_model(store, args.trial, log=log_line)
        except ExportError as exc:
            raise UserError(str(exc)) from None
        model, tokenizer, answers = tm.model, tm.tokenizer, tm.answers
        max_tokens, batch = tm.exp.data.max_tokens, tm.exp.training.eval_batch_size
        data = args.data or _prepared_data(tm.exp, store)
    else:
        from transformers import AutoTokenizer, LxmertForQuestionAnswering

        if args.data is None:
            raise UserError("--data DIR (a prepare-vqa store) is required with --model")
        model = LxmertForQuestionAnswering.from_pretrained(str(args.model))
        tokenizer = AutoTokenizer.from_pretrained(str(args.model))
        answers = [model.config.id2label[i] for i in range(model.config.num_qa_labels)]
        max_tokens = (getattr(model.config, "lxsweep", None) or {}).get("max_tokens", 20)
        batch, data = 256, args.data
    try:
        split = load_vqa_store(data, args.split, args.split).valid
    except VQAStoreError as exc:
        raise UserError(str(exc)) from None
    path = write_results(predict_split(model, tokenizer, answers, split, max_tokens, batch), args.out)
    print(f"wrote {path}: {len(split)} answers for split {args.split} of {data}")
    return 0


def _prepared_data(exp: Experiment, store) -> str:
    """The prepared store an experiment's trials read: ``data.path``, or the synthetic task's cache."""
    from lxsweep.data.source import synthetic_store

    return str(synthetic_store(exp.data.synthetic, store)) if exp.data.source == "synthetic" else exp.data.path


# -- data ---------------------------------------------------------------------


PREPARE_DESCRIPTION = """\
Convert official VQA v2 question/annotation JSON files and LXMERT's Faster
R-CNN feature TSVs into a memory-mapped store (float16 features) that
`data.source: vqa` experiments read."""
PREPARE_EPILOG = """\
example:
  lxsweep prepare-vqa --out data/vqa \\
    --split train v2_OpenEnded_mscoco_train2014_questions.json v2_mscoco_train2014_annotations.json \\
    --split minival v2_OpenEnded_mscoco_val2014_questions.json v2_mscoco_val2014_annotations.json \\
    --features train2014_obj36.tsv val2014_obj36.tsv --ans2label trainval_ans2label.json

Split names are free: an experiment's data.train_split / data.valid_split
(default train / minival) choose two of them. Without --ans2label the answer
vocabulary is every normalised multiple_choice_answer of the --vocab-split
splits (default: train) given at least --min-count times. Add --limit 1000
for a quick small store. The store is built beside --out and swapped in only
when complete, so a failed --overwrite leaves the previous store as it was.
"""


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value
    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="store directory to write")
    p.add_argument("--split", action="append", nargs=3, dest="splits", default=[],
                   metavar=("NAME", "QUESTIONS_JSON", "ANNOTATIONS_JSON"),
                   help="a split: its name and official VQA v2 questions and annotations files (repeat per split)")
    p.add_argument("--test-split", action="append", nargs=2, dest="test_splits", default=[],
                   metavar=("NAME", "QUESTIONS_JSON"),
                   help="a split with questions but no annotations (test-dev, test-std), for `lxsweep predict`")
    p.add_argument("--features", required=True, nargs="+", type=Path, metavar="TSV",
                   help="LXMERT feature TSVs (e.g. train2014_obj36.tsv val2014_obj36.tsv)")
    p.add_argument("--ans2label", type=Path, metavar="FILE",
                   help="LXMERT's trainval_ans2label.json; default: build the vocabulary from training answers")
    p.add_argument("--min-count", type=_positive_int, default=9, metavar="N",
                   help="without --ans2label: keep answers given at least N times (default 9)")
    p.add_argument("--vocab-split", action="append", dest="vocab_splits", metavar="NAME",
                   help="without --ans2label: split(s) the vocabulary is built from (default: train)")
    p.add_argument("--num-boxes", type=_positive_int, default=36, metavar="N",
                   help="regions per image; images with fewer are zero-padded (default 36)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="keep only the first N questions of each split")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("--answers-per-question", type=_non_negative_int, default=10, metavar="N",
                   help="annotator answers every annotation must hold (VQA v2: 10, the default; 0: any number)")


def cmd_prepare(args: argparse.Namespace) -> int:
    from lxsweep.data import VQAInputError, VQAStoreError
    from lxsweep.data.prepare import prepare_vqa
    from lxsweep.data.prepared import read_manifest

    splits: dict[str, tuple[Path, Optional[Path]]] = {}
    given = [("--split", *s) for s in args.splits] + [("--test-split", n, q, None) for n, q in args.test_splits]
    for flag, name, questions, annotations in given:
        if name in splits:
            raise UserError(f"{flag} {name} is given twice — give each split once")
        splits[name] = (Path(questions), Path(annotations) if annotations else None)
    try:
        out = prepare_vqa(args.out, splits=splits, feature_tsvs=args.features, ans2label=args.ans2label,
                          min_count=args.min_count, num_boxes=args.num_boxes, limit=args.limit,
                          vocab_splits=tuple(args.vocab_splits or ("train",)), overwrite=args.overwrite,
                          answers_per_question=args.answers_per_question)
        manifest = read_manifest(out)
    except (VQAInputError, VQAStoreError, OSError) as exc:  # OSError: e.g. disk full while writing
        raise UserError(str(exc)) from None
    split_text = ", ".join(f"{name} {info['questions']} questions"
                           + (f" ({info['dropped_without_features']} dropped)" if info["dropped_without_features"] else "")
                           for name, info in manifest["splits"].items())
    print(f"wrote {out}: {manifest['num_images']} images x {manifest['num_boxes']} boxes x {manifest['feat_dim']} "
          f"(float16), {manifest['answers']['count']} answers; {split_text}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from lxsweep.data.synth import prepare_command, write_synthetic

    exp = _load(args, check=False)  # writes the task's files: needs no model or prepared data on this machine
    if exp.data.source != "synthetic":
        raise UserError(f"{exp.source}: data.source is {exp.data.source!r}; `lxsweep synth` writes the synthetic "
                        f"task — use an experiment with data.source: synthetic")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory — choose a new or empty --out")
    files = write_synthetic(exp.data.synthetic, out)
    print(f"wrote the synthetic task of {exp.source} as official VQA v2 files in {out}; prepare them with:")
    print("  " + prepare_command(files, out / "prepared"))
    return 0


def cmd_vqa_eval(args: argparse.Namespace) -> int:
    from lxsweep.metric import MetricInputError, evaluate_files

    try:
        result = evaluate_files(args.questions, args.annotations, args.predictions)
    except MetricInputError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(result))
    return 0


# -- main ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lxsweep",
        description="Lottery-ticket pruning sweeps of LXMERT on VQA v2 (Ray Tune + Ray Train + W&B).",
        epilog=textwrap.dedent("""\
            start here:
              lxsweep plan experiments/smoke.yaml
              lxsweep launch experiments/smoke.yaml
              lxsweep report runs/smoke-<hash>"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _parser(sub, "launch", "run the whole grid of trials on Ray (local unless --address/RAY_ADDRESS)",
                "lxsweep launch experiments/smoke.yaml --set storage=/mnt/nfs/lxsweep")
    _experiment_args(p)
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (a plain re-launch does too)")
    p.add_argument("--quiet", action="store_true", help="no live status panel, only log lines")
    p.set_defaults(func=cmd_launch)

    p = _parser(sub, "plan", "show the trials, their dependencies and the cost; runs nothing",
                "lxsweep plan experiments/paper.yaml --set resources.fine_tune_hours=0.9")
    _experiment_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the preflight checks (budget a cluster run from a machine without its data or model)")
    p.set_defaults(func=cmd_plan)

    p = _parser(sub, "trial", "run one trial on this machine without Ray (the same function a Ray worker runs); "
                "a finished one is reproduced into <store>/reproductions/ and compared",
                "lxsweep trial experiments/smoke.yaml --level 2 --subnetwork low --seed 0 [--check]")
    _experiment_args(p)
    p.add_argument("--level", type=int, required=True, help="pruning level (0 = the dense model)")
    from lxsweep import subnetworks

    p.add_argument("--subnetwork", default=None,
                   help=f"one of {', '.join(subnetworks.names())} or one a plugin registers "
                        f"(default: {subnetworks.ticket()} above level 0; level 0 alone is the dense model)")
    p.add_argument("--seed", type=int, required=True, help="one of the experiment's seeds")
    p.add_argument("--check", action="store_true",
                   help="the trial is finished in the store: exit 1 unless the reproduction matches it")
    p.set_defaults(func=cmd_trial)

    p = _parser(sub, "status", "counts, best ticket and time left, from the store alone",
                "lxsweep status runs/smoke-<hash>   # or: lxsweep status experiments/smoke.yaml")
    p.add_argument("target", help="a store directory/URI or an experiment file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_status)

    p = _parser(sub, "report", "write results.csv, results.md and accuracy_vs_sparsity.png into the store",
                "lxsweep report runs/smoke-<hash>")
    p.add_argument("target", help="a store directory/URI (every trial in it) or an experiment file (its grid)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, metavar="DIR", help="write the report here instead of <store>/report")
    p.set_defaults(func=cmd_report)

    p = _parser(sub, "export", "a trial's subnetwork as a Hugging Face directory (pruned weights zero) plus a sparse file",
                "lxsweep export runs/smoke-<hash> --trial low-L2-s0 --out tickets/low-L2-s0")
    p.add_argument("target", help="a store directory/URI or an experiment file")
    p.add_argument("--trial", required=True, help="a finished trial of the store, e.g. low-L2-s0")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="new or empty directory to write")
    p.add_argument("--shrink", action="store_true", help="remove the heads and feed-forward neurons the mask removes "
                   "whole (a structured ticket): a physically smaller model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_export)

    p = _parser(sub, "latency", "each finished trial's inference latency against dense on this device (shrunk where "
                "its mask removes whole heads or neurons), into the store's latency.json for the report",
                "lxsweep latency runs/demo-<hash> --batch 32")
    p.add_argument("target", help="a store directory/URI or an experiment file")
    p.add_argument("--batch", type=int, default=32, help="questions per forward pass (default 32)")
    p.add_argument("--reps", type=int, default=20, help="timed passes of each trial and of its dense trial")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_latency)

    p = _parser(sub, "predict", "a trial's answers for a prepared split as official results JSON (for the VQA server)",
                "lxsweep predict runs/paper-<hash> --trial low-L5-s0 --data data/vqa --split test-dev --out results.json")
    p.add_argument("target", nargs="?", help="a store directory/URI or an experiment file (with --trial)")
    p.add_argument("--trial", help="a finished trial of the store whose weights were kept")
    p.add_argument("--model", type=Path, metavar="DIR", help="instead of a store: a directory `lxsweep export` wrote")
    p.add_argument("--data", metavar="DIR", help="prepare-vqa store (default: the experiment's data)")
    p.add_argument("--split", required=True, help="a split of that store, e.g. test-dev (questions only) or minival")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help='results JSON to write: [{"question_id", "answer"}]')
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("prepare-vqa", help="official VQA v2 JSON + LXMERT feature TSVs -> memory-mapped store",
                       description=PREPARE_DESCRIPTION, epilog=PREPARE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _prepare_arguments(p)
    p.set_defaults(func=cmd_prepare)

    p = _parser(sub, "synth", "write an experiment's synthetic task as official VQA v2 JSON + LXMERT feature TSVs",
                "lxsweep synth experiments/demo.yaml --out data/synthetic   # then run the printed prepare-vqa")
    _experiment_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty directory to write the files into")
    p.set_defaults(func=cmd_synth)

    p = _parser(sub, "vqa-eval", "the official VQA accuracy of a results file, as JSON",
                "lxsweep vqa-eval --questions v2_OpenEnded_mscoco_val2014_questions.json "
                "--annotations v2_mscoco_val2014_annotations.json --predictions results.json")
    p.add_argument("--questions", required=True, help="official questions JSON")
    p.add_argument("--annotations", required=True, help="official annotations JSON")
    p.add_argument("--predictions", required=True, help='results JSON: [{"question_id": ..., "answer": ...}]')
    p.set_defaults(func=cmd_vqa_eval)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError) as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"lxsweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lxsweep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lxsweep plan ... | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
