"""Training-loader throughput and memory over a prepared VQA store with real shapes.

Stores are made the real way: ``write_vqa_fixture`` writes official-format
question/annotation JSON and an LXMERT feature TSV (36 regions x 2048 float32
features per image, 5 questions per image, about VQA v2's 5.4), and
``prepare_vqa`` converts them into the memory-mapped store (float16
features) a trial reads. Stores are cached under ``--cache`` (the TSVs are
deleted after conversion). Each measurement runs in a fresh process that
opens the store with ``load_vqa_store`` (memmap), tokenizes the questions to
20 tokens once, and iterates ``make_loader`` over the train split with the
trainer's settings (batch 32, shuffled, CPU runtime: no pinned memory) for
two epochs. Store sizes and worker counts are interleaved across repetitions.

Memory: VmRSS = RssAnon (private memory) + RssFile (pages of the mapped store
that this process has touched: shared page cache, reclaimable, not a copy).
"RssAnon before epochs" is taken after the store is opened and the questions
tokenized (that part grows with the number of *questions*); the peak during
the epochs shows what iterating adds.
With ``num_workers`` > 0 the reading happens in the workers; their numbers are
the sum over workers, sampled during the epoch.

    python bench/loader.py             # 2,000 and 8,000 images, workers 0 and 2, 2 repetitions
    python bench/loader.py --quick     # 500 and 2,000 images, 1 repetition of 1 epoch (< 60 s once cached)
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import child_pids, mib, print_machine, proc_status, table  # noqa: E402

BATCH_SIZE = 32  # lxsweep's default training.batch_size
MAX_TOKENS = 20  # LXMERT's question length
QUESTIONS_PER_IMAGE = 5
MEMORY_KEYS = ("VmRSS", "RssAnon", "RssFile")


def build_store(cache: Path, num_images: int) -> Path:
    """A prepared store of ``num_images`` images (half train, half minival), made once and cached."""
    from vqa_fixture import fixture_splits, write_vqa_fixture  # tests/: the fixture is test scaffolding

    from lxsweep.data.prepare import prepare_vqa
    from lxsweep.data.prepared import MANIFEST_FILE

    store = cache / f"store-{num_images}x36x2048-q{QUESTIONS_PER_IMAGE}"
    if (store / MANIFEST_FILE).exists():
        return store
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fixture-") as raw:
        files = write_vqa_fixture(raw, num_images=num_images, questions_per_image=QUESTIONS_PER_IMAGE)
        prepare_vqa(store, splits=fixture_splits(files), feature_tsvs=[files["features"]],
                    ans2label=files["ans2label"], overwrite=True)
    return store


def _sample_memory(peaks: dict[str, int], pids: list[int] | None) -> None:
    """Keep the maximum of each memory field (summed over ``pids``, or this process)."""
    statuses = [proc_status()] if pids is None else [proc_status(p) for p in pids]
    for key in MEMORY_KEYS:
        peaks[key] = max(peaks.get(key, 0), sum(s.get(key, 0) for s in statuses))


def measure(store: Path, workers: int, epochs: int) -> dict:
    """In this process: samples/s per epoch and memory of the loading process(es)."""
    import torch

    from lxsweep.data.loader import make_loader, tokenize
    from lxsweep.data.synthetic import write_tokenizer
    from lxsweep.data.prepared import load_vqa_store
    from lxsweep.model import load_tokenizer
    from lxsweep.train import Runtime

    torch.set_num_threads(1)
    data = load_vqa_store(store)
    with tempfile.TemporaryDirectory() as tok_dir:
        write_tokenizer(tok_dir)  # a word-level BERT tokenizer: the real tokenize() path, offline
        tokens = tokenize(load_tokenizer(tok_dir), data.train.questions, MAX_TOKENS)
    rt = Runtime(torch.device("cpu"))
    ready = proc_status()["RssAnon"]  # store opened, questions tokenized: what grows with questions
    rates, main_peak, worker_peak = [], {}, {}
    for epoch in range(epochs):
        loader = make_loader(data.train, tokens, BATCH_SIZE, rt, shuffle_seed=epoch, num_workers=workers)
        batches = len(loader)
        start, samples = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            samples += batch["features"].shape[0]
            if i % 20 == 0 or i == batches - 1:  # workers exit after the last batch: sample before
                _sample_memory(main_peak, None)
                if workers:
                    _sample_memory(worker_peak, child_pids())
        rates.append(samples / (time.perf_counter() - start))
    return {"samples": samples, "rates": rates, "ready_anon": ready, "main": main_peak, "workers": worker_peak,
            "features_bytes": (store / "features.f16.npy").stat().st_size}


def run_measure(store: Path, workers: int, epochs: int) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(store), "--workers", str(workers), "--epochs", str(epochs)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 and 2,000 images, one repetition")
    parser.add_argument("--images", type=int, nargs="+", help="store sizes in images (default 2000 8000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (default 0 2)")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    parser.add_argument("--epochs", type=int, help="epochs per measurement process (default 2; --quick: 1)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lxsweep-bench-stores",
                        help="where the prepared stores are kept between runs")
    parser.add_argument("--clean", action="store_true", help="delete the cached stores at the end")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.workers[0], args.epochs or 2)))
        return 0

    print_machine()
    sizes = args.images or ([500, 2000] if args.quick else [2000, 8000])
    reps = 1 if args.quick else args.reps
    args.epochs = args.epochs or (1 if args.quick else 2)
    stores = {}
    for n in sizes:
        start = time.perf_counter()
        stores[n] = build_store(args.cache, n)
        print(f"store {n} images: {stores[n]} ({time.perf_counter() - start:.1f}s)")

    cases = [(n, w) for n in sizes for w in args.workers]
    results: dict[tuple[int, int], list[dict]] = {c: [] for c in cases}
    for r in range(reps):
        for i in range(len(cases)):
            n, w = cases[(r + i) % len(cases)]
            results[(n, w)].append(run_measure(stores[n], w, args.epochs))

    rows = []
    for (n, w), runs in results.items():
        first = statistics.median(run["rates"][0] for run in runs)
        later = statistics.median(rate for run in runs for rate in run["rates"][1:]) if args.epochs > 1 else first
        main_mem = {k: statistics.median(run["main"][k] for run in runs) for k in MEMORY_KEYS}
        worker_mem = {k: statistics.median(run["workers"].get(k, 0) for run in runs) for k in MEMORY_KEYS}
        ready = statistics.median(run["ready_anon"] for run in runs)
        rows.append([n, mib(runs[0]["features_bytes"]), runs[0]["samples"], w, f"{first:.0f}", f"{later:.0f}",
                     mib(main_mem["VmRSS"]), mib(ready), mib(main_mem["RssAnon"]), mib(main_mem["RssFile"]),
                     *(mib(worker_mem[k]) if w else "" for k in ("RssAnon", "RssFile"))])
    print(f"\nbatch {BATCH_SIZE}, {MAX_TOKENS} tokens, 36x2048 float16 regions, {reps} repetition(s) x "
          f"{args.epochs} epochs per process")
    print(table(["images", "features file", "samples/epoch", "workers", "samples/s epoch 1", "samples/s later",
                 "main VmRSS", "main RssAnon before epochs", "main RssAnon peak", "main RssFile",
                 "workers RssAnon", "workers RssFile"], rows))
    if args.clean:
        shutil.rmtree(args.cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
