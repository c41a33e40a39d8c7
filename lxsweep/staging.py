"""Node-local copies of a directory on an object store or NFS: fetched once per node, checked, reused.

A prepared VQA store is read through memory maps: every trial pages through
its features (~18 GB for VQA v2's 123,287 images). That works from node-local
disk, not from an object store, and an NFS server feeding many readers at once
is the slow part of a cluster. So each node copies the directory once into its
cache (``$LXSWEEP_CACHE/staged/``, default ``~/.cache/lxsweep``) and every later
trial on that node reuses the copy:

- What a copy must hold comes from the source: its ``manifest.json``'s
  ``files`` (bytes and sha256 of each file, written by ``prepare-vqa``) or,
  for a directory without one, the listing's sizes.
- Each file streams into a temporary name beside its place, hashed as it is
  written, and is renamed into place only when its size and checksum are
  right (never read whole into memory); the manifest is placed last.
- Trials starting together on a node take one file lock: the first fetches,
  the others wait and reuse.
- A reused copy is checked against what was verified when it was made (size
  and modification time of every file); a file that changed since is hashed
  again, and one that is missing or differs is fetched again, with one line.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

from lxsweep.errors import StoreError

CACHE_ENV = "LXSWEEP_CACHE"
MANIFEST = "manifest.json"
RECORD = ".lxsweep-staged.json"  # what this copy holds and was verified as: {rel: [bytes, mtime_ns, sha256]}
CHUNK = 16 << 20
T = TypeVar("T")


class StagingError(StoreError):
    """A node-local copy cannot be made (no room, a source file that is not what its manifest says)."""


@dataclass
class Staged:
    path: Path  # the node-local directory
    fetched: list[str] = field(default_factory=list)  # files copied by this call (empty: the copy was reused)


def cache_root() -> Path:
    """``$LXSWEEP_CACHE`` or ``~/.cache/lxsweep``: node-local files lxsweep can always rebuild."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lxsweep").expanduser()


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def filesystem(source: str):
    """``(pyarrow filesystem, base path)`` of a URI or local path."""
    import pyarrow.fs as pafs

    source = source.rstrip("/")
    if source.startswith("file://"):
        source = source[len("file://"):]
    if not is_remote(source):
        return pafs.LocalFileSystem(), str(Path(source).expanduser().resolve())
    return pafs.FileSystem.from_uri(source)


def _no_retry(what: str, op: Callable[[], T]) -> T:
    return op()


def files_of_manifest(manifest: dict) -> Optional[dict[str, tuple[int, Optional[str]]]]:
    """``{relative path: (bytes, sha256)}`` that a prepared store's manifest lists, or None if it lists none."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return None
    return {rel: (int(meta["bytes"]), meta.get("sha256")) for rel, meta in files.items()}


def stage(source: str, target: Optional[Path] = None, *, fs=None, base: Optional[str] = None,
          retry: Callable[[str, Callable[[], T]], T] = _no_retry,
          log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> Staged:
    """A node-local copy of the directory ``source`` (a URI, an NFS or local path), made or reused.

    ``target`` defaults to ``<cache>/staged/<name>-<digest of source>``; ``fs``
    and ``base`` (a pyarrow filesystem and path) replace the ones ``source``
    names, ``retry(what, op)`` wraps every remote operation.
    """
    if fs is None:
        fs, base = filesystem(source)
    source = source.rstrip("/")
    if target is None:
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        target = cache_root() / "staged" / f"{Path(base).name}-{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        return _stage_locked(source, fs, base, target, retry, log)


def _stage_locked(source: str, fs, base: str, target: Path, retry, log) -> Staged:
    want, manifest = _wanted(source, fs, base, retry)
    record = _read_record(target, source)
    fetch, why = [], ""
    for rel, (size, sha) in want.items():
        problem = _check_copy(target / rel, size, sha, record.get(rel))
        if problem is None:
            stat = (target / rel).stat()
            record[rel] = [stat.st_size, stat.st_mtime_ns, sha]
        else:
            fetch.append(rel)
            why = why or f"{rel}: {problem}"
    if not fetch:
        return Staged(target)
    if record or any((target / rel).exists() for rel in fetch):
        log(f"lxsweep: node-local copy {target} of {source}: {len(fetch)} file(s) missing or damaged ({why}) — "
            f"fetching them again")
    need = sum(want[rel][0] for rel in fetch)
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free
    if need > free:
        raise StagingError(f"{target}: staging {source} needs {need / 1e9:.1f} GB of local disk, {free / 1e9:.1f} GB "
                           f"are free — free space there or point {CACHE_ENV} at a larger local disk")
    fetch.sort(key=lambda rel: rel == MANIFEST)  # the manifest last: a copy that has it has everything
    for rel in fetch:
        size, sha = want[rel]
        if rel == MANIFEST and manifest is not None:
            _place(target / rel, lambda out: out.write(manifest), size, sha, f"{source}/{rel}")
        else:
            retry(f"{source}/{rel}", lambda: _place(target / rel, _copier(fs, f"{base}/{rel}"), size, sha,
                                                    f"{source}/{rel}"))
        stat = (target / rel).stat()
        record[rel] = [stat.st_size, stat.st_mtime_ns, sha]
    for extra in {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} - set(want) - {RECORD}:
        (target / extra).unlink()  # left by an older version of the source
    _write_record(target, source, record)
    return Staged(target, fetch)


def _wanted(source: str, fs, base: str, retry) -> tuple[dict[str, tuple[int, Optional[str]]], Optional[bytes]]:
    """What a complete copy holds: the manifest's file list (with checksums), else the listing's sizes."""
    import pyarrow.fs as pafs

    info = retry(f"{source}/{MANIFEST}", lambda: fs.get_file_info(f"{base}/{MANIFEST}"))
    manifest = None
    if info.type == pafs.FileType.File:
        manifest = retry(f"{source}/{MANIFEST}", lambda: _read_all(fs, f"{base}/{MANIFEST}"))
        try:
            files = files_of_manifest(json.loads(manifest))
        except (ValueError, KeyError, TypeError) as exc:
            raise StagingError(f"{source}/{MANIFEST}: unreadable ({exc}) — run `lxsweep prepare-vqa` again") from None
        if files is not None:
            return {**files, MANIFEST: (len(manifest), hashlib.sha256(manifest).hexdigest())}, manifest
    selector = pafs.FileSelector(base, recursive=True)
    listing = retry(source, lambda: fs.get_file_info(selector))
    want = {Path(i.path).relative_to(base).as_posix(): (i.size, None)
            for i in listing if i.type == pafs.FileType.File}
    if not want:
        raise StagingError(f"{source}: no files to stage — check the path (a prepared store holds {MANIFEST})")
    if manifest is not None:
        want[MANIFEST] = (len(manifest), hashlib.sha256(manifest).hexdigest())
    return want, manifest


def _check_copy(path: Path, size: int, sha: Optional[str], recorded: Optional[list]) -> Optional[str]:
    """None when ``path`` is a verified copy; else what is wrong with it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    if stat.st_size != size:
        return f"{stat.st_size} bytes, the source has {size}"
    if recorded is not None and recorded == [stat.st_size, stat.st_mtime_ns, sha]:
        return None  # unchanged since it was verified
    if sha is None:
        return None if recorded is not None else "not verified"
    got = sha256_file(path)
    return None if got == sha else f"sha256 {got[:12]}…, the source's manifest says {sha[:12]}…"


def _copier(fs, remote: str) -> Callable:
    def copy(out) -> None:
        with fs.open_input_stream(remote) as stream:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
    return copy


def _place(path: Path, write: Callable, size: int, sha: Optional[str], what: str) -> None:
    """Write ``path`` through ``write(handle)`` under a temporary name; rename it into place if size and sha fit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    digest = hashlib.sha256()
    with open(tmp, "wb") as raw:
        write(_Hashing(raw, digest))
    got = tmp.stat().st_size
    if got != size or (sha is not None and digest.hexdigest() != sha):
        tmp.unlink()
        found = f"{got} bytes" if got != size else f"sha256 {digest.hexdigest()[:12]}…"
        raise StagingError(f"{what}: arrived as {found}, its manifest says {size} bytes"
                           f"{f', sha256 {sha[:12]}…' if sha else ''} — the source is damaged or changed while "
                           f"staging; run `lxsweep prepare-vqa` again (or wait for the upload to finish)")
    os.replace(tmp, path)


class _Hashing:
    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.raw.write(data)


def _read_all(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()



def _read_record(target: Path, source: str) -> dict:
    try:
        record = json.loads((target / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record.get("files", {}) if record.get("source") == source else {}


def _write_record(target: Path, source: str, files: dict) -> None:
    tmp = target / f".{RECORD}.partial"
    tmp.write_text(json.dumps({"source": source, "files": files}, indent=1))
    os.replace(tmp, target / RECORD)
