"""A trial's data open at VQA v2's full question counts: the coded layout against the per-record one.

Every trial opens the prepared store afresh (a fresh Ray Train worker). This
writes official-format VQA v2 files at full size (443,757 train + 214,354
minival questions, 10 answers each; ``bench/realsize.py``'s generator, a few
images since image files are memory-mapped and do not scale the open), runs
``lxsweep prepare-vqa``, and opens both splits in fresh processes, side by
side: (a) the store as written (version 3: question text in one JSON list,
answers / answer types / question types as codes into their distinct values);
(b) the same store rewritten in version 2's layout (one JSON record per
question, read one line at a time with interned answers). Prints each wall
time and RSS added, and the ratio.

    python bench/data_open.py [--root /tmp/lxsweep-data-open] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realsize  # noqa: E402  (puts the repository on sys.path)
from lxsweep.data.prepared import COLUMNS, MANIFEST_FILE, QUESTIONS_FILE, RECORDS_FILE, load_vqa_store  # noqa: E402


def as_version_2(store: Path) -> None:
    """Rewrite a store's question columns the way version 2 kept them: one JSON record per question."""
    manifest = json.loads((store / MANIFEST_FILE).read_text())
    for name in manifest["splits"]:
        split = load_vqa_store(store, name, name).train  # read by lxsweep's own reader
        d = store / name
        with open(d / RECORDS_FILE, "w", encoding="utf-8") as handle:
            for record in zip(split.questions, split.answers, split.answer_types, split.question_kinds):
                handle.write(json.dumps(dict(zip(("question", "answers", "answer_type", "question_type"), record)),
                                        ensure_ascii=False) + "\n")
        for file in (QUESTIONS_FILE, *(f for f, _ in COLUMNS.values())):
            (d / file).unlink()
    (store / MANIFEST_FILE).write_text(json.dumps({**manifest, "version": 2}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/tmp/lxsweep-data-open", help="scratch directory (deleted at the end)")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    root = Path(args.root)
    try:
        inputs = realsize.build_inputs(root, args.images)
        prepared = root / "prepared"
        prep = realsize.prepare(inputs, prepared)
        coded = [realsize.data_rss(prepared) for _ in range(args.repeats)]
        as_version_2(prepared)
        records = [realsize.data_rss(prepared) for _ in range(args.repeats)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    out = {"questions": coded[0]["questions_opened"], "prepare_s": prep["prepare_s"],
           "coded_open_s": med(coded, "data_open_s"), "coded_rss_mb": med(coded, "data_rss_mb"),
           "records_open_s": med(records, "data_open_s"), "records_rss_mb": med(records, "data_rss_mb")}
    out["speedup"] = round(out["records_open_s"] / max(out["coded_open_s"], 1e-3), 1)
    print(f"{out['questions']:,} questions, both splits, fresh process, median of {args.repeats}:")
    print(f"  version 3 (coded columns):     {out['coded_open_s']:.2f} s, +{out['coded_rss_mb']:.0f} MB")
    print(f"  version 2 (a record per line): {out['records_open_s']:.2f} s, +{out['records_rss_mb']:.0f} MB")
    print(f"  -> {out['speedup']}x faster to open")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
