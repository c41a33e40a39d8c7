"""The bad-input suite: every mistake a user can fix is one line, exit 2, and changes no file already there."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lxsweep.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"


def digests(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A store (made by a finished-looking experiment.yaml) and a tiny prepared VQA dataset, built once."""
    from tests.vqa_fixture import fixture_splits, write_vqa_fixture
    from lxsweep.data.prepare import prepare_vqa

    base = tmp_path_factory.mktemp("bad")
    files = write_vqa_fixture(base / "raw", num_images=4, questions_per_image=2, num_boxes=4, feat_dim=8)
    prepared = prepare_vqa(base / "vqa", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                           ans2label=files["ans2label"], num_boxes=4)
    runs = base / "runs"
    assert main(["plan", str(SMOKE), "--set", f"storage={runs}"]) == 0
    from lxsweep.config import load_experiment
    from lxsweep.config import write_experiment
    from lxsweep.store import Store

    exp = load_experiment(SMOKE, [f"storage={runs}"])
    write_experiment(Store.for_experiment(exp), exp)
    (base / "afile").write_text("x")
    return {"base": base, "files": files, "vqa": prepared, "runs": runs}


def check(world, capsys, argv: list[str], names: "str | list[str]") -> None:
    before = digests(world["runs"], world["vqa"])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and len(lines[0]) < 700, err[:2000]  # one line, never an echo of a huge value
    assert lines[0].startswith("lxsweep: error:") and " — " in lines[0] and "Traceback" not in err
    assert all(name in lines[0] for name in ([names] if isinstance(names, str) else names)), lines[0]
    assert digests(world["runs"], world["vqa"]) == before


# (id, YAML text of the experiment file, extra --set, the text the line must name)
YAML_CASES = [
    ("empty file", "", [], "is empty"),
    ("comments only", "# nothing\n", [], "is empty"),
    ("empty mapping", "{}\n", [], "is empty"),
    ("a list at top", "- a\n- b\n", [], "top level"),
    ("duplicate section", "training:\n  epochs: 2\ntraining:\n  lr: 0.1\n", [], "'training' is written twice"),
    ("duplicate key", "training:\n  epochs: 2\n  epochs: 3\n", [], "'epochs' is written twice"),
    ("bad yaml", "training: [unclosed\n", [], "not valid YAML"),
    ("tab indent", "training:\n\tepochs: 2\n", [], "not valid YAML"),
    ("alias bomb", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n", [], "once its aliases"),
    ("deep nesting", "x: " + "[" * 60 + "]" * 60 + "\n", [], "nested more than"),
    ("merged unknown key", "x-base: &b {epochz: 2}\ntraining:\n  <<: *b\n", [], "training.epochz"),
]
SET_CASES = [
    ("lr infinite", ["training.lr=.inf"], "training.lr"),
    ("lr nan", ["training.lr=.nan"], "training.lr"),
    ("weight decay nan", ["training.weight_decay=.nan"], "training.weight_decay"),
    ("grad clip -inf", ["training.grad_clip=-.inf"], "training.grad_clip"),
    ("warmup nan", ["training.warmup=.nan"], "training.warmup"),
    ("rate nan", ["pruning.rate=.nan"], "pruning.rate"),
    ("noise inf", ["data.synthetic.feature_noise=.inf"], "data.synthetic.feature_noise"),
    ("seed negative", ["seeds=[-1]"], "seeds[0]"),
    ("seed too big", ["seeds=[4294967296]"], "seeds[0]"),
    ("name too long", ["name=" + "n" * 101], "name"),
    ("unknown top key", ["epochz=3"], "epochz: unknown key"),
    ("unknown training key", ["training.epochz=3"], "training.epochz"),
    ("unknown model key", ["model.pretrain=x"], "model.pretrain"),
    ("int as text", ["training.epochs=three"], "training.epochs"),
    ("int as float", ["training.epochs=2.5"], "training.epochs"),
    ("bool as int", ["pruning.layerwise=1"], "pruning.layerwise"),
    ("number as text", ["training.lr=fast"], "training.lr"),
    ("list as int", ["seeds=3"], "seeds"),
    ("section as value", ["training=3"], "training"),
    ("literal", ["training.precision=fp16"], "training.precision"),
    ("literal schedule", ["pruning.schedule=gradual"], "pruning.schedule"),
    ("literal rewind", ["rewind.to=start"], "rewind.to"),
    ("rate 0", ["pruning.rate=0"], "pruning.rate"),
    ("rate 1", ["pruning.rate=1"], "pruning.rate"),
    ("negative levels", ["pruning.sparsities=null", "pruning.levels=-1"], "pruning.levels"),
    ("levels too many", ["pruning.sparsities=null", "pruning.levels=1000"], "pruning.levels"),
    ("levels too many rate", ["pruning.sparsities=null", "pruning.rate=0.9", "pruning.levels=400"], "pruning.levels"),
    ("empty sparsities", ["pruning.sparsities=[]"], "pruning.sparsities"),
    ("sparsity 1", ["pruning.sparsities=[0.5, 1.0]"], "pruning.sparsities[1]"),
    ("sparsity 0", ["pruning.sparsities=[0.0]"], "pruning.sparsities[0]"),
    ("sparsities decreasing", ["pruning.sparsities=[0.5, 0.3]"], "pruning.sparsities"),
    ("sparsities equal", ["pruning.sparsities=[0.5, 0.5]"], "pruning.sparsities"),
    ("empty subnetworks", ["pruning.subnetworks=[]"], "pruning.subnetworks"),
    ("unknown subnetwork", ["pruning.subnetworks=[low, medium]"], "pruning.subnetworks[1]"),
    ("subnetwork twice", ["pruning.subnetworks=[low, low]"], "pruning.subnetworks"),
    ("levels_of of an unknown subnetwork", ["pruning.levels_of={hgh: [1]}"], "pruning.levels_of.hgh"),
    ("levels_of out of range", ["pruning.levels_of={high: [9]}"], "pruning.levels_of.high"),
    ("levels_of empty", ["pruning.levels_of={high: []}"], "pruning.levels_of.high"),
    ("empty scope", ["pruning.scope=[]"], "pruning.scope"),
    ("unknown scope", ["pruning.scope=[text]"], "pruning.scope[0]"),
    ("epochs 0", ["training.epochs=0"], "training.epochs"),
    ("batch 0", ["training.batch_size=0"], "training.batch_size"),
    ("eval batch 0", ["training.eval_batch_size=0"], "training.eval_batch_size"),
    ("lr 0", ["training.lr=0"], "training.lr"),
    ("lr negative", ["training.lr=-1e-4"], "training.lr"),
    ("warmup 1", ["training.warmup=1.0"], "training.warmup"),
    ("weight decay negative", ["training.weight_decay=-0.1"], "training.weight_decay"),
    ("grad clip negative", ["training.grad_clip=-1"], "training.grad_clip"),
    ("keep weights", ["training.keep_weights=some"], "training.keep_weights"),
    ("weights dtype", ["training.weights_dtype=int8"], "training.weights_dtype"),
    ("max tokens", ["data.max_tokens=2"], "data.max_tokens"),
    ("limit train", ["data.limit_train=0"], "data.limit_train"),
    ("limit valid", ["data.limit_valid=0"], "data.limit_valid"),
    ("loader workers", ["data.loader_workers=-1"], "data.loader_workers"),
    ("source", ["data.source=coco"], "data.source"),
    ("synthetic boxes", ["data.synthetic.num_boxes=2"], "data.synthetic.num_boxes"),
    ("synthetic questions", ["data.synthetic.train_questions=0"], "data.synthetic.train_questions"),
    ("annotator noise", ["data.synthetic.annotator_noise=1.0"], "data.synthetic.annotator_noise"),
    ("feature noise", ["data.synthetic.feature_noise=-1"], "data.synthetic.feature_noise"),
    ("pretraining steps", ["model.pretraining.steps=0"], "model.pretraining.steps"),
    ("pretraining batch", ["model.pretraining.batch_size=1"], "model.pretraining.batch_size"),
    ("pretraining mask prob", ["model.pretraining.mask_prob=0"], "model.pretraining.mask_prob"),
    ("pretraining objectives empty", ["model.pretraining.objectives=[]"], "model.pretraining.objectives"),
    ("pretraining objective", ["model.pretraining.objectives=[mlm, vqa]"], "model.pretraining.objectives[1]"),
    ("question kind unknown", ["data.synthetic.kinds=[attribute, colour]"], "data.synthetic.kinds"),
    ("question kinds empty", ["data.synthetic.pretrain_kinds=[]"], "data.synthetic.pretrain_kinds"),
    ("question kind twice", ["data.synthetic.kinds=[count, count]"], "data.synthetic.kinds"),
    ("question kinds not a list", ["data.synthetic.kinds={a: 1}"], "data.synthetic.kinds"),
    ("test split negative", ["data.synthetic.test_questions=-1"], "data.synthetic.test_questions"),
    ("probe steps zero", ["training.probe_steps=0"], "training.probe_steps"),
    ("probe lr not finite", ["training.probe_lr=.inf"], "training.probe_lr"),
    ("model.config unknown", ["model.pretrained=null", "model.config={hidden_sise: 64}"], "model.config.hidden_sise"),
    ("model.config labels", ["model.pretrained=null", "model.config={num_qa_labels: 9}"], "model.config.num_qa_labels"),
    ("rewind step negative", ["rewind.to=step", "rewind.step=-1"], "rewind.step"),
    ("rewind step 0", ["rewind.to=step", "rewind.step=0"], "rewind.step"),
    ("rewind step unused", ["rewind.step=100"], "rewind.step"),
    ("workers 0", ["resources.workers_per_trial=0"], "resources.workers_per_trial"),
    ("gpus negative", ["resources.gpus_per_worker=-1"], "resources.gpus_per_worker"),
    ("gpus 1.5", ["resources.gpus_per_worker=1.5"], "resources.gpus_per_worker"),
    ("cpus negative", ["resources.cpus_per_worker=-1"], "resources.cpus_per_worker"),
    ("concurrency 0", ["resources.max_concurrent_trials=0"], "resources.max_concurrent_trials"),
    ("max failures", ["resources.max_failures=-1"], "resources.max_failures"),
    ("fine tune hours", ["resources.fine_tune_hours=0"], "resources.fine_tune_hours"),
    ("tracking backend", ["tracking.backend=mlflow"], "tracking.backend"),
    ("tracking mode", ["tracking.mode=cloud"], "tracking.mode"),
    ("old tracking key", ["tracking.wandb=offline"], "tracking.wandb"),
    ("name with space", ["name=my sweep"], "name"),
    ("name empty", ["name="], "name"),
    ("seeds empty", ["seeds=[]"], "seeds"),
    ("seeds twice", ["seeds=[0, 0]"], "seeds"),
    ("seed as text", ["seeds=[a]"], "seeds[0]"),
    ("plugin missing", ["plugins=[no_such_plugin]"], "plugins[0]"),
    ("override without =", ["training.epochs"], "expected key=value"),
    ("override into a value", ["name.x=1"], "--set name.x"),
    ("override duplicate", ["model.config={a: 1, a: 2}"], "written twice"),
    ("vqa without model", ["data.source=vqa", "model.pretrained=null", "data.path=/x"], "model.pretrained"),
    ("vqa without path", ["data.source=vqa"], "data.path"),
    ("vqa path missing", ["data.source=vqa", "data.path=/nonexistent/vqa"], "data.path"),
    ("pretrained missing", ["model.pretrained=./no/such/model"], "model.pretrained"),
    ("pretrained not hub", ["model.pretrained=a/b/c"], "model.pretrained"),
    ("tokenizer missing", ["model.tokenizer=./no/such/tok"], "model.tokenizer"),
    ("search mode", ["search.mode=frontiers"], "search.mode"),
    ("frontier with one seed", ["search.mode=frontier"], "needs at least two seeds"),
    ("frontier min seeds", ["seeds=[0, 1]", "search.mode=frontier", "search.min_seeds=3"], "search.min_seeds"),
    ("frontier max seeds", ["seeds=[0, 1, 2]", "search.mode=frontier", "search.max_seeds=1"], "search.max_seeds"),
    ("frontier margin", ["search.margin=2"], "search.margin"),
    ("frontier confidence", ["search.confidence=95"], "search.confidence"),
    ("frontier collapse", ["search.collapse=0"], "search.collapse"),
    ("frontier asks outside the grid", ["seeds=[0, 1]", "search.mode=frontier", "search.subnetworks=[reinit]"],
     "search.subnetworks[0]"),
    ("frontier asks twice", ["seeds=[0, 1]", "search.mode=frontier", "search.subnetworks=[low, low]"], "search.subnetworks"),
]


@pytest.mark.parametrize("text,sets,names", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_bad_file(world, capsys, text, sets, names):
    path = world["base"] / "bad.yaml"
    path.write_text(text)
    check(world, capsys, ["plan", str(path), *sum((["--set", s] for s in sets), [])], names)


@pytest.mark.parametrize("sets,names", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_bad_key(world, capsys, sets, names):
    check(world, capsys, ["plan", str(SMOKE), "--set", f"storage={world['runs']}",
                          *sum((["--set", s] for s in sets), [])], names)


def preflight_cases(world) -> list:
    b, vqa = world["base"], world["vqa"]
    empty_model = b / "empty-model"
    empty_model.mkdir(exist_ok=True)
    no_weights = b / "no-weights"
    no_weights.mkdir(exist_ok=True)
    (no_weights / "config.json").write_text("{}")
    real = ["data.source=vqa", f"data.path={vqa}"]
    return [
        ("storage is a file", [f"storage={b / 'afile'}"], "storage"),
        ("storage under a file", [f"storage={b / 'afile' / 'runs'}"], "storage"),
        ("storage unwritable", ["storage=/proc/lxsweep-runs"], "storage"),
        ("model dir empty", [f"model.pretrained={empty_model}"], "model.pretrained"),
        ("model dir no weights", [f"model.pretrained={no_weights}"], "model.pretrained"),
        ("train split missing", [*real, "data.train_split=nosuch"], "data.train_split"),
        ("valid split missing", [*real, "data.valid_split=nosuch"], "data.valid_split"),
        ("data path is a file", ["data.source=vqa", f"data.path={b / 'afile'}"], "data.path"),
    ]


PREFLIGHT_IDS = ["storage is a file", "storage under a file", "storage unwritable", "model dir empty",
                 "model dir no weights", "train split missing", "valid split missing", "data path is a file"]


@pytest.mark.parametrize("command", ["plan", "launch", "trial"])
@pytest.mark.parametrize("case", PREFLIGHT_IDS)
def test_preflight(world, capsys, command, case):
    sets, names = {c[0]: c[1:] for c in preflight_cases(world)}[case]
    if not any(s.startswith("storage=") for s in sets):
        sets = [f"storage={world['runs']}", *sets]
    extra = ["--level", "0", "--seed", "0"] if command == "trial" else []
    check(world, capsys, [command, str(SMOKE), *sum((["--set", s] for s in sets), []), *extra], names)


TRIAL_CASES = [
    ("subnetwork not in experiment", ["--set", "pruning.subnetworks=[low]", "--level", "1", "--subnetwork", "high",
                                      "--seed", "0"], "--subnetwork high"),
    ("unknown subnetwork", ["--level", "1", "--subnetwork", "medium", "--seed", "0"], "medium"),
    ("seed not in experiment", ["--level", "0", "--seed", "7"], "seed 7"),
    ("level too high", ["--level", "9", "--seed", "0"], "level 9"),
]


@pytest.mark.parametrize("args,names", [c[1:] for c in TRIAL_CASES], ids=[c[0] for c in TRIAL_CASES])
def test_bad_trial(world, capsys, args, names):
    check(world, capsys, ["trial", str(SMOKE), "--set", f"storage={world['runs']}", *args], names)


@pytest.mark.parametrize("command", ["status", "report"])
def test_store_that_does_not_exist(world, capsys, command):
    check(world, capsys, [command, str(SMOKE), "--set", f"storage={world['base'] / 'nothing'}"], "does not exist yet")


@pytest.mark.parametrize("command", ["status", "report", "export"])
def test_not_a_store(world, capsys, command):
    extra = ["--trial", "x", "--out", str(world["base"] / "out")] if command == "export" else []
    check(world, capsys, [command, str(world["base"]), *extra], "not a store")


def test_non_base64_tsv_field(world, capsys):
    tsv = world["base"] / "bad.tsv"
    lines = world["files"]["features"].read_text().splitlines()
    fields = lines[0].split("\t")
    fields[8] = fields[8][:10] + "!" + fields[8][10:]
    tsv.write_text("\r\n".join(["\t".join(fields), *lines[1:]]) + "\r\n")
    f = world["files"]
    check(world, capsys, ["prepare-vqa", "--out", str(world["base"] / "vqa2"),
                          "--split", "train", str(f["train_questions"]), str(f["train_annotations"]),
                          "--features", str(tsv), "--ans2label", str(f["ans2label"])], "base64")


def test_debug_shows_the_traceback(world, capsys):
    path = world["base"] / "bad.yaml"
    path.write_text("")
    assert main(["--debug", "plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("lxsweep: error:")


def test_s3_storage_that_cannot_be_reached(world, capsys, monkeypatch):
    """An s3:// store whose endpoint refuses connections fails the storage probe at once, naming what to check."""
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}.items():
        monkeypatch.setenv(name, value)
    check(world, capsys, ["plan", str(SMOKE), "--set", "storage=s3://lxsweep-nobucket/runs"], "AWS_ENDPOINT_URL")


def prepare_with(world, tsv: Path, **files) -> list[str]:
    f = {**world["files"], **files}
    import uuid

    return ["prepare-vqa", "--out", str(world["base"] / f"vqa-{uuid.uuid4().hex[:6]}"), "--split", "train", str(f["train_questions"]),
            str(f["train_annotations"]), "--features", str(tsv), "--ans2label", str(f["ans2label"])]


@pytest.mark.parametrize("row", [0, 1])  # the train images: prepare stops reading once it has them all
def test_bad_byte_in_tsv_is_reported_at_its_line(world, capsys, row):
    data = world["files"]["features"].read_bytes().split(b"\r\n")
    data[row] = data[row][:50] + b"\xff" + data[row][50:]
    tsv = world["base"] / f"badbyte{row}.tsv"
    tsv.write_bytes(b"\r\n".join(data))
    check(world, capsys, prepare_with(world, tsv), f"line {row + 1}:")


def test_annotation_for_a_question_not_in_the_file(world, capsys):
    import json

    ann = json.loads(world["files"]["train_annotations"].read_text())
    extra = dict(ann["annotations"][0], question_id=999_999_999)
    ann["annotations"].append(extra)
    path = world["base"] / "orphan_annotations.json"
    path.write_text(json.dumps(ann))
    check(world, capsys, prepare_with(world, world["files"]["features"], train_annotations=path), "999999999")


def test_annotation_given_twice(world, capsys):
    import json

    ann = json.loads(world["files"]["train_annotations"].read_text())
    ann["annotations"].append(dict(ann["annotations"][0]))
    path = world["base"] / "twice_annotations.json"
    path.write_text(json.dumps(ann))
    check(world, capsys, prepare_with(world, world["files"]["features"], train_annotations=path), "annotated twice")


@pytest.mark.parametrize("sets", [
    ["pruning.sparsities=null", "pruning.rate=0.5", "pruning.levels=30"],  # 2^-30 of the tiny model's weights: none
    ["pruning.sparsities=[0.5, 0.5000000001]"],  # the same count of weights twice
], ids=["levels past the last weight", "sparsities one weight apart"])
def test_schedule_counted_on_the_model(world, capsys, sets):
    check(world, capsys, ["plan", str(SMOKE), "--set", f"storage={world['runs']}",
                          *sum((["--set", s] for s in sets), [])], "prunable weights")


def _annotations_with(world, name: str, edit) -> Path:
    import json

    ann = json.loads(world["files"]["train_annotations"].read_text())
    edit(ann["annotations"])
    path = world["base"] / f"{name}_annotations.json"
    path.write_text(json.dumps(ann))
    return path


@pytest.mark.parametrize("count", [9, 11])
def test_answer_list_that_is_not_ten_long(world, capsys, count):
    def edit(annotations):
        answers = annotations[1]["answers"]
        annotations[1]["answers"] = (answers * 2)[:count]

    path = _annotations_with(world, f"answers{count}", edit)
    check(world, capsys, prepare_with(world, world["files"]["features"], train_annotations=path),
          ["annotations[1]", f"{count} answers", "--answers-per-question"])
    # the flag the message names accepts the file, and prepares it
    assert main([*prepare_with(world, world["files"]["features"], train_annotations=path),
                 "--answers-per-question", "0"]) == 0
    capsys.readouterr()


ANS2LABEL_CASES = [
    ("ids repeated", {"yes": 0, "no": 0}, "label ids must be exactly 0..1"),
    ("id not an integer", {"yes": 0, "no": "1"}, "label ids must be integers"),
    ("id a boolean", {"yes": 0, "no": True}, "label ids must be integers"),
    ("ids with a gap", {"yes": 0, "no": 2}, "missing 1"),
    ("empty table", {}, "non-empty JSON object"),
    ("list with a repeat", ["yes", "yes"], "distinct answer strings"),
    ("list of numbers", [1, 2], "distinct answer strings"),
    ("not a table", "yes", "non-empty JSON object"),
]


@pytest.mark.parametrize("table,names", [c[1:] for c in ANS2LABEL_CASES], ids=[c[0] for c in ANS2LABEL_CASES])
def test_malformed_answer_table(world, capsys, table, names):
    import json

    path = world["base"] / "bad_ans2label.json"
    path.write_text(json.dumps(table))
    check(world, capsys, prepare_with(world, world["files"]["features"], ans2label=path), [str(path), names])


def test_the_same_feature_file_twice(world, capsys):
    args = prepare_with(world, world["files"]["features"])
    at = args.index("--features") + 1
    args[at:at + 1] = [args[at], args[at]]
    check(world, capsys, args, [world["files"]["features"].name, "given twice", "pass each feature TSV once"])


def test_the_same_questions_in_two_splits(world, capsys):
    f = world["files"]
    args = [*prepare_with(world, f["features"]), "--split", "minival", str(f["train_questions"]), str(f["train_annotations"])]
    check(world, capsys, args, ["split minival's questions", "given twice"])


def test_a_damaged_search_record_stops_a_frontier_launch_before_ray(world, capsys):
    from lxsweep.config import load_experiment
    from lxsweep.store import SEARCH_FILE, Store

    store = Store.for_experiment(load_experiment(SMOKE, [f"storage={world['runs']}"]))
    record = Path(store.path(SEARCH_FILE))
    record.write_text('{"chosen": [')
    try:
        check(world, capsys, ["launch", str(SMOKE), "--set", f"storage={world['runs']}", "--set", "seeds=[0, 1]",
                              "--set", "search.mode=frontier"], [str(record), "move it aside", "re-derived"])
        assert record.read_text() == '{"chosen": ['  # left as it was
    finally:
        record.unlink()


@pytest.mark.parametrize("args,names", [
    (["report", "{store}", "--out", "{afile}"], ["--out", "is not a directory"]),
    (["latency", "{store}", "--batch", "0"], "--batch 0"),
    (["latency", "{store}", "--reps", "-3"], "--reps -3"),
    (["latency", "{store}", "--device", "tpu"], "--device tpu"),
    (["report", "s3://"], ["s3://", "names no bucket"]),
], ids=["report out is a file", "latency batch 0", "latency reps negative", "latency unknown device", "s3 without a bucket"])
def test_bad_report_and_latency_arguments(world, capsys, args, names):
    from lxsweep.config import load_experiment
    from lxsweep.store import Store

    store = Store.for_experiment(load_experiment(SMOKE, [f"storage={world['runs']}"])).root
    check(world, capsys, [a.format(store=store, afile=world["base"] / "afile") for a in args], names)
