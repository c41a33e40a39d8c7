"""A rehearsal of the paper's study at VQA v2 and LXMERT-base shapes, on one box, from files in the real formats.

1. Builds inputs on local disk (``--root``, outside the repository): the
   official VQA v2 JSON at full question counts (443,757 train and 214,354
   minival questions, 10 answers each, question and answer types, a 3,129-answer
   vocabulary as LXMERT's ``trainval_ans2label.json``), mapped onto
   ``--images N`` images of LXMERT's feature TSV (36 boxes x 2048 float32,
   base64); LXMERT-base's config (hidden 768, 9/5/5 layers) with random weights
   and a tokenizer built here, both saved with ``save_pretrained``.
2. Runs the real path: ``lxsweep prepare-vqa`` (a subprocess: its peak RSS is
   the child's ``ru_maxrss``), the question tokens for both splits (cold, then
   from the node cache), the loader at real shapes, then ``lxsweep launch`` of
   paper.yaml's recipe with two trials (dense and random at level 1, one at a
   time) of ``--steps`` optimizer steps each through Ray Train.
3. Prints a table and writes ``--json``; the projections use ``lxsweep plan``'s
   cost model for paper.yaml and the sizes measured here.

    python bench/realsize.py --images 2000 --steps 20 --json out.json [--root /tmp/realsize] [--keep]

Nothing is downloaded. ``--root`` is deleted at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxsweep.data.prepared import ATTRS_FILE, BOXES_FILE, FEATURES_FILE, IMAGES_FILE, OBJECTS_FILE  # noqa: E402
from lxsweep.data.tsv import encode_feature_row, make_img_id  # noqa: E402
from lxsweep.data.vqa_json import annotation_entry, write_ans2label, write_official_split  # noqa: E402

TRAIN_QUESTIONS, VALID_QUESTIONS = 443_757, 214_354  # VQA v2 train2014 and val2014 (LXMERT's minival is a part)
COCO_IMAGES = 123_287  # train2014 + val2014: the images a full prepared store holds
IMAGE_FILES = (FEATURES_FILE, BOXES_FILE, OBJECTS_FILE, ATTRS_FILE, IMAGES_FILE)  # grow with the images
NUM_ANSWERS, NUM_BOXES, FEAT_DIM = 3129, 36, 2048
TYPES = (("yes/no", "is there a"), ("number", "how many"), ("other", "what color is the"))
WORDS = ("red blue green yellow white black cube sphere cylinder table chair dog cat man woman car bus sign "
         "left right top bottom near far big small wooden metal glass").split()


def _question(rng: np.random.Generator, kind: int) -> str:
    prefix = TYPES[kind][1]
    return f"{prefix} {' '.join(rng.choice(WORDS, size=int(rng.integers(2, 9))))}?"


def write_split(out: Path, name: str, count: int, images: np.ndarray, answers: list[str], seed: int) -> tuple[Path, Path]:
    """One split as the official pair of JSON files: ``count`` questions on ``images``, ten answers each."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 3, size=count)
    image_of = images[rng.integers(0, len(images), size=count)]
    # A Zipf-like answer distribution over the vocabulary, ten annotators agreeing often (as in VQA).
    popular = np.minimum(rng.zipf(1.3, size=(count, 10)) - 1, len(answers) - 1)
    agree = rng.random(count) < 0.6
    popular[agree] = popular[agree, :1]
    questions, annotations = [], []
    for i in range(count):
        qid = int(image_of[i]) * 1000 + i % 1000 + (i // 1000) * 10_000_000_000
        questions.append({"image_id": int(image_of[i]), "question": _question(rng, int(kinds[i])), "question_id": qid})
        annotations.append(annotation_entry(qid, int(image_of[i]), TYPES[kinds[i]][1], TYPES[kinds[i]][0],
                                            [answers[j] for j in popular[i]]))
    return write_official_split(out, data_type="mscoco", data_subtype=f"{name}2014", description="realsize rehearsal",
                                questions=questions, annotations=annotations)


def write_features(path: Path, images: np.ndarray, seed: int) -> Path:
    """LXMERT's feature TSV for ``images``: 36 boxes x 2048 float32 features per image, written as generate_tsv.py does."""
    import csv

    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="ascii") as handle:
        writer = csv.writer(handle, delimiter="\t")
        for image_id in images:
            h, w = 480, 640
            x1, y1 = rng.uniform(0, w - 64, NUM_BOXES), rng.uniform(0, h - 64, NUM_BOXES)
            boxes = np.stack([x1, y1, x1 + rng.uniform(16, 64, NUM_BOXES), y1 + rng.uniform(16, 64, NUM_BOXES)], 1)
            feats = np.abs(rng.standard_normal((NUM_BOXES, FEAT_DIM), dtype=np.float32))  # ReLU outputs: >= 0
            writer.writerow(encode_feature_row(make_img_id("COCO_train2014_", int(image_id)), h, w,
                                               boxes.astype(np.float32), feats,
                                               objects_id=rng.integers(0, 1600, NUM_BOXES),
                                               attrs_id=rng.integers(0, 400, NUM_BOXES)))
    return path


def write_tokenizer(out: Path) -> Path:
    """A BERT-style WordPiece tokenizer with bert-base-uncased's 30,522 entries, built here (nothing downloaded)."""
    from transformers import BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
             "is", "there", "a", "how", "many", "what", "color", "the", "?"]
    vocab += [f"##w{i}" for i in range(30522 - len(vocab))]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(str(out))
    return out


def write_model(out: Path) -> Path:
    """LXMERT-base (the hub checkpoint's config) with random weights and the tokenizer above."""
    import torch
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    write_tokenizer(out)
    torch.manual_seed(0)
    config = LxmertConfig(num_qa_labels=NUM_ANSWERS)  # defaults = unc-nlp/lxmert-base-uncased
    LxmertForQuestionAnswering(config).save_pretrained(str(out))
    return out


def answer_vocabulary() -> list[str]:
    """VQA v2's 3,129 answers in shape: yes/no, numbers, then two-word answers, padded to the count."""
    answers = ["yes", "no", *map(str, range(100)), *(f"{a} {b}" for a in WORDS for b in WORDS)]
    answers = list(dict.fromkeys(answers))[:NUM_ANSWERS]
    return answers + [f"answer {i}" for i in range(NUM_ANSWERS - len(answers))]


def build_inputs(root: Path, images: int, scale: float = 1.0) -> dict:
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    answers = answer_vocabulary()
    image_ids = np.arange(1, images + 1) * 7
    train = write_split(raw, "train", max(1, round(TRAIN_QUESTIONS * scale)), image_ids, answers, seed=1)
    valid = write_split(raw, "val", max(1, round(VALID_QUESTIONS * scale)), image_ids, answers, seed=2)
    ans2label = write_ans2label(raw / "trainval_ans2label.json", answers)
    tsv = write_features(raw / "obj36.tsv", image_ids, seed=3)
    json_s = time.time() - t0
    model = write_model(root / "lxmert-base-random")
    return {"train": train, "valid": valid, "ans2label": ans2label, "tsv": tsv, "model": model,
            "inputs_s": time.time() - t0, "json_and_tsv_s": json_s,
            "raw_bytes": sum(p.stat().st_size for p in raw.iterdir())}


def prepare(inputs: dict, out: Path) -> dict:
    """``lxsweep prepare-vqa`` as a user runs it; its wall time and the child's peak RSS."""
    args = [sys.executable, "-m", "lxsweep.cli", "prepare-vqa", "--out", str(out),
            "--split", "train", *map(str, inputs["train"]), "--split", "minival", *map(str, inputs["valid"]),
            "--features", str(inputs["tsv"]), "--ans2label", str(inputs["ans2label"])]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"prepare-vqa failed:\n{proc.stderr[-3000:]}")
    return {"prepare_s": round(time.time() - t0, 1),
            "prepare_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "prepared_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
            "prepared_image_bytes": sum((out / name).stat().st_size for name in IMAGE_FILES)}


def data_rss(prepared: Path) -> dict:
    """What opening both full splits adds to a fresh process's RSS, and how long it takes (a trial's data open)."""
    code = ("import json, resource, sys, time\n"
            "from lxsweep.data.prepared import load_vqa_store\n"
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 2**20\n"
            "before, t0 = rss(), time.time()\n"
            "data = load_vqa_store(sys.argv[1], 'train', 'minival')\n"
            "print(json.dumps({'data_open_s': round(time.time() - t0, 2), 'data_rss_mb': round(rss() - before, 1),"
            " 'questions_opened': len(data.train.questions) + len(data.valid.questions)}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(prepared)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"opening the prepared store failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tokens_and_loader(prepared: Path, model_dir: Path, cache: Path) -> dict:
    """Question tokens of both splits, cold then from the node cache; the loader's samples/s at batch 32."""
    import torch

    from lxsweep.data.loader import make_loader
    from lxsweep.data.prepared import load_vqa_store
    from lxsweep.data.tokens import question_tokens
    from lxsweep.model import load_tokenizer
    from lxsweep.train import Runtime

    data = load_vqa_store(prepared, "train", "minival")
    tokenizer = load_tokenizer(str(model_dir))
    times = []
    for _ in range(2):
        t0 = time.time()
        tokens = question_tokens(tokenizer, data.train.questions, 20, cache=cache)
        question_tokens(tokenizer, data.valid.questions, 20, cache=cache)
        times.append(time.time() - t0)
    out = {"tokenize_cold_s": round(times[0], 2), "tokenize_cached_s": round(times[1], 3)}
    rt = Runtime(torch.device("cpu"))
    for workers in (0, 2):
        loader = make_loader(data.train, tokens, 32, rt, shuffle_seed=0, num_workers=workers)
        it, n, t0 = iter(loader), 0, None
        for i, batch in enumerate(it):
            if i == 5:
                t0 = time.time()  # past the workers' start
            elif i > 5:
                n += len(batch["rows"])
            if i == 205:
                break
        out[f"loader_samples_per_s_{workers}_workers"] = round(n / (time.time() - t0))
        del it, loader
    out["loader_samples_per_s"] = out["loader_samples_per_s_0_workers"]
    # One process's rate decides how many loader processes a GPU that eats 13k samples/s needs (2 cores here).
    out["loader_processes_for_13k"] = -(-13_000 // max(out["loader_samples_per_s_0_workers"], 1))
    return out


def trials(root: Path, inputs: dict, prepared: Path, steps: int, cache: Path) -> dict:
    """Two trials of paper.yaml's recipe (dense, random at level 1) through `lxsweep launch`, one at a time."""
    from lxsweep.config import load_experiment
    from lxsweep.store import Store, driver_path, metrics_path

    sets = [f"model.pretrained={inputs['model']}", "model.answer_table=null", f"data.path={prepared}",
            f"data.limit_train={32 * steps}", "data.limit_valid=256", "data.loader_workers=0",
            "training.epochs=1", "training.eval_batch_size=64", "training.keep_checkpoints=true",
            "pruning.subnetworks=[random]", "pruning.levels=1", "pruning.levels_of={}", "seeds=[0]",
            "resources.gpus_per_worker=0", f"resources.cpus_per_worker={os.cpu_count()}",
            "resources.max_concurrent_trials=1", "resources.fine_tune_hours=null", "resources.fine_tune_basis=null",
            "tracking.backend=none", f"storage={root / 'runs'}"]
    paper = ROOT / "experiments" / "paper.yaml"
    exp = load_experiment(paper, sets)
    args = [sys.executable, "-m", "lxsweep.cli", "launch", str(paper), "--quiet", *(a for s in sets for a in ("--set", s))]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "LXSWEEP_CACHE": str(cache)})
    if proc.returncode != 0:
        raise SystemExit(f"launch failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    store = Store.for_experiment(exp)
    out: dict = {"launch_s": round(time.time() - t0, 1), "trials": {}}
    for name in ("dense-L0-s0", "random-L1-s0"):
        m, d = store.read_json(metrics_path(name)), store.read_json(driver_path(name))
        tl = m["timeline"]
        out["trials"][name] = {
            "first_step_s": round(m["first_step_at"] - d["started_at"], 2),
            "split": {"ray_to_worker_s": round(tl["worker_started_at"] - d["started_at"], 2),
                      "worker_imports_s": round(tl["imports_done_at"] - tl["worker_started_at"], 2),
                      "resume_lookup_and_facts_s": round(tl["trial_started_at"] - tl["imports_done_at"], 2),
                      "data_open_s": round(tl["data_opened_at"] - tl["trial_started_at"], 2),
                      "model_load_and_mask_s": round(tl["model_loaded_at"] - tl["data_opened_at"], 2),
                      "tokens_enforcer_optimizer_s": round(tl["fit_ready_at"] - tl["model_loaded_at"], 2),
                      "first_batch_and_step_s": round(m["first_step_at"] - tl["fit_ready_at"], 2)},
            "step_s": round((m["last_step_at"] - m["first_step_at"]) / max(m["steps"] - 1, 1), 2),
            "steps": m["steps"], "worker_peak_rss_mb": tl["peak_rss_mb"],
            "worker_data_rss_mb": round(tl["rss_data_mb"] - tl["rss_start_mb"], 1),
            "accuracy": m["accuracy"],
        }
    ckpts = [p for p in Path(store.path("ray")).rglob("checkpoint_*") if p.is_dir()]
    out["checkpoint_bytes"] = max(sum(f.stat().st_size for f in c.rglob("*") if f.is_file()) for c in ckpts)
    out["weights_bytes"] = Path(store.path("weights/random-L1-s0.safetensors")).stat().st_size
    out["mask_bytes"] = Path(store.path("masks/random-L1-s0.safetensors")).stat().st_size
    out["metrics_bytes"] = Path(store.path(metrics_path("random-L1-s0"))).stat().st_size
    return out


def projections(measured: dict, images: int) -> dict:
    """paper.yaml at full size: store (finished trials keep fp16 weights, mask, metrics; one full checkpoint per
    running trial) and GPU-hours from `lxsweep plan`'s cost model."""
    from lxsweep.config import load_experiment
    from lxsweep.plan import Plan

    exp = load_experiment(ROOT / "experiments" / "paper.yaml", check=False)
    summary = Plan(exp).summary()
    per_trial = measured["weights_bytes"] + measured["mask_bytes"] + measured["metrics_bytes"]
    in_flight = measured["checkpoint_bytes"] * exp.resources.max_concurrent_trials
    # Image files (features, boxes, box labels, the image index) scale with the images; the question arrays
    # are already at VQA v2's full counts.
    per_image = measured["prepared_image_bytes"] / images
    questions = measured["prepared_bytes"] - measured["prepared_image_bytes"]
    return {"projected_paper_store_gb": round((summary["fine_tunes"] * per_trial + in_flight) / 1e9, 1),
            "prepared_bytes_full": int(per_image * COCO_IMAGES + questions),
            "projected_paper_gpu_h": summary["gpu_hours"],
            "projected_paper_gpu_h_basis": f"lxsweep plan's resources.fine_tune_hours ({summary['fine_tune_hours']} h "
                                           f"per fine-tune, {summary['fine_tunes']} fine-tunes): "
                                           f"{summary['fine_tune_basis'][:120]}… (assumed, not measured: no GPU here)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--root", default="/tmp/lxsweep-realsize")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true", help="keep --root (inputs, prepared store, runs)")
    ap.add_argument("--questions-scale", type=float, default=1.0,
                    help="fraction of VQA v2's question counts (1 = the real size; less for a quick try)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = Path(args.root)
    if root.exists():
        shutil.rmtree(root)
    t0 = time.time()
    try:
        inputs = build_inputs(root, args.images, args.questions_scale)
        print(f"inputs: {inputs['raw_bytes'] / 1e9:.2f} GB raw in {inputs['inputs_s']:.0f} s", flush=True)
        prepared = root / "prepared"
        out: dict = {"images": args.images, "train_questions": round(TRAIN_QUESTIONS * args.questions_scale),
                     "valid_questions": round(VALID_QUESTIONS * args.questions_scale),
                     **prepare(inputs, prepared)}
        print(f"prepare-vqa: {out['prepare_s']} s, peak RSS {out['prepare_peak_rss_mb']} MB", flush=True)
        out.update(data_rss(prepared))
        print(f"data open: {out['data_open_s']} s, +{out['data_rss_mb']} MB RSS", flush=True)
        cache = root / "cache"
        out.update(tokens_and_loader(prepared, inputs["model"], cache))
        print(f"tokens: {out['tokenize_cold_s']} s cold, {out['tokenize_cached_s']} s cached; loader "
              f"{out['loader_samples_per_s']} samples/s", flush=True)
        t = trials(root, inputs, prepared, args.steps, cache)
        first, second = t["trials"]["dense-L0-s0"], t["trials"]["random-L1-s0"]
        out.update({"first_step_s": first["first_step_s"], "first_step_s_second": second["first_step_s"],
                    "first_step_split": first["split"], "first_step_split_second": second["split"],
                    "worker_peak_rss_mb": max(first["worker_peak_rss_mb"], second["worker_peak_rss_mb"]),
                    "worker_data_rss_mb": max(first["worker_data_rss_mb"], second["worker_data_rss_mb"]),
                    "cpu_step_s": statistics.fmean([first["step_s"], second["step_s"]]),
                    "checkpoint_bytes": t["checkpoint_bytes"], "weights_bytes": t["weights_bytes"],
                    "mask_bytes": t["mask_bytes"], "metrics_bytes": t["metrics_bytes"], "launch_s": t["launch_s"],
                    "trials": t["trials"]})
        out.update(projections(out, args.images))
        out["total_s"] = round(time.time() - t0, 1)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = [("prepare-vqa wall / peak RSS", f"{out['prepare_s']} s / {out['prepare_peak_rss_mb']} MB (limit 4096)"),
            ("prepared store here / projected to 123,287 images", f"{out['prepared_bytes'] / 1e9:.2f} GB / "
                                                                  f"{out['prepared_bytes_full'] / 1e9:.1f} GB"),
            ("open both full splits: wall / RSS added", f"{out['data_open_s']} s / {out['data_rss_mb']} MB "
                                                        f"(limit 1024)"),
            ("question tokens cold / cached", f"{out['tokenize_cold_s']} s / {out['tokenize_cached_s']} s"),
            ("loader, batch 32, 0 / 2 workers", f"{out['loader_samples_per_s_0_workers']} / "
                                                f"{out['loader_samples_per_s_2_workers']} samples/s (13k goal: "
                                                f"{out['loader_processes_for_13k']} processes)"),
            ("launch to first step, trial 1 / 2", f"{out['first_step_s']} s / {out['first_step_s_second']} s"),
            ("worker peak RSS (fp32 model, AdamW, batch 32)", f"{out['worker_peak_rss_mb']} MB"),
            ("CPU step, LXMERT-base, batch 32", f"{out['cpu_step_s']:.1f} s"),
            ("full checkpoint / kept fp16 weights / mask", f"{out['checkpoint_bytes'] / 1e9:.2f} GB / "
                                                           f"{out['weights_bytes'] / 1e9:.2f} GB / {out['mask_bytes'] / 1e6:.1f} MB"),
            ("paper.yaml store, projected", f"{out['projected_paper_store_gb']} GB"),
            ("paper.yaml GPU-hours (assumed MFU)", f"{out['projected_paper_gpu_h']} h"),
            ("rehearsal wall time", f"{out['total_s']} s")]
    for label, value in rows:
        print(f"{label:<52} {value}")
    print("launch-to-first-step split:", json.dumps({"first": out["first_step_split"], "second": out["first_step_split_second"]}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
