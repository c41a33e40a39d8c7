"""A prepared store on S3 (the moto server) or NFS reaches each node's local disk once, checked, and is reused.

A trial opens its data through ``load_dataset`` (the call every Ray worker
makes): the first on a node fetches every file, later ones fetch nothing,
and a damaged local copy is fetched again with one line.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.fs as pafs
import pytest

from lxsweep import staging
from lxsweep.config import from_dict
from lxsweep.data.prepare import prepare_vqa
from lxsweep.data.prepared import FEATURES_FILE, MANIFEST_FILE, load_vqa_store
from lxsweep.data.source import load_dataset
from lxsweep.store import Store
from vqa_fixture import fixture_splits, write_vqa_fixture


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vqa")
    files = write_vqa_fixture(root / "raw", num_images=6, feat_dim=64)
    return prepare_vqa(root / "prepared", splits=fixture_splits(files), feature_tsvs=[files["features"]],
                       ans2label=files["ans2label"])


def _upload(s3, bucket: str, local: Path) -> str:
    s3.create_bucket(bucket)
    fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}")
    pafs.copy_files(str(local), f"{bucket}/prepared", destination_filesystem=fs)
    return f"s3://{bucket}/prepared"


def _experiment(path: str, **data) -> object:
    return from_dict({"data": {"source": "vqa", "path": path, **data}, "model": {"pretrained": "/unused"}})


def test_the_manifest_lists_every_file_with_its_checksum(prepared):
    manifest = json.loads((prepared / MANIFEST_FILE).read_text())
    files = {p.relative_to(prepared).as_posix() for p in prepared.rglob("*") if p.is_file()} - {MANIFEST_FILE}
    assert set(manifest["files"]) == files
    meta = manifest["files"][FEATURES_FILE]
    assert meta["bytes"] == (prepared / FEATURES_FILE).stat().st_size
    assert meta["sha256"] == staging.sha256_file(prepared / FEATURES_FILE)


def test_s3_data_is_fetched_once_per_node_and_a_damaged_copy_again(s3, prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(staging.CACHE_ENV, str(tmp_path / "node-cache"))
    uri = _upload(s3, "vqa-data", prepared)
    exp, store = _experiment(uri), Store(str(tmp_path / "store"))
    want = set(json.loads((prepared / MANIFEST_FILE).read_text())["files"]) | {MANIFEST_FILE}

    first = staging.stage(uri)  # empty cache: every file, the manifest last
    assert set(first.fetched) == want and first.fetched[-1] == MANIFEST_FILE
    assert first.path.is_relative_to(tmp_path / "node-cache")
    ds = load_dataset(exp, store)  # what a trial does: opens the node-local copy, memory-mapped
    expected = load_vqa_store(prepared)
    assert isinstance(ds.train.features, np.memmap) and Path(ds.train.features.filename).is_relative_to(first.path)
    assert np.array_equal(ds.train.features, expected.train.features) and ds.answers == expected.answers
    assert staging.stage(uri).fetched == []  # a second trial on the node: nothing fetched
    assert capsys.readouterr().err == ""

    features = first.path / FEATURES_FILE
    with open(features, "r+b") as handle:  # a damaged copy: same size, other bytes
        handle.seek(200)
        handle.write(b"\x13\x37" * 8)
    again = staging.stage(uri)
    assert again.fetched == [FEATURES_FILE]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and FEATURES_FILE in err[0] and "fetching them again" in err[0] and "sha256" in err[0]
    assert staging.sha256_file(features) == staging.sha256_file(prepared / FEATURES_FILE)

    (first.path / "train" / "question_ids.npy").unlink()  # a missing file: fetched alone
    assert staging.stage(uri).fetched == ["train/question_ids.npy"]


def test_an_nfs_path_is_staged_when_asked_and_read_in_place_otherwise(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv(staging.CACHE_ENV, str(tmp_path / "node-cache"))
    store = Store(str(tmp_path / "store"))
    in_place = load_dataset(_experiment(str(prepared)), store)
    assert Path(in_place.train.features.filename).is_relative_to(prepared)
    staged = load_dataset(_experiment(str(prepared), stage=True), store)
    assert Path(staged.train.features.filename).is_relative_to(tmp_path / "node-cache")
    assert staging.stage(str(prepared)).fetched == []


def test_a_source_that_is_not_what_its_manifest_says_is_one_line(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv(staging.CACHE_ENV, str(tmp_path / "node-cache"))
    source = tmp_path / "copy"
    pafs.copy_files(str(prepared), str(source))
    with open(source / FEATURES_FILE, "r+b") as handle:
        handle.seek(300)
        handle.write(b"\x00\x01" * 4)
    with pytest.raises(staging.StagingError) as info:
        staging.stage(str(source))
    message = str(info.value)
    assert "\n" not in message and FEATURES_FILE in message and "prepare-vqa" in message
    assert not list((tmp_path / "node-cache").rglob(FEATURES_FILE))  # nothing damaged placed


def test_no_room_on_the_node_is_one_line_before_any_copy(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv(staging.CACHE_ENV, str(tmp_path / "node-cache"))
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**12, used=10**12, free=1000))
    with pytest.raises(staging.StagingError, match=r"needs 0\.\d GB of local disk, 0\.0 GB are free .* LXSWEEP_CACHE"):
        staging.stage(str(prepared))
    assert not any(p.is_file() for p in (tmp_path / "node-cache").rglob("*.npy"))
