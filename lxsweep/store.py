"""The store: one experiment's directory on local disk, NFS or object storage.

Layout (``<storage>/<name>-<hash>/``), every relative path built by a function below::

    experiment.yaml                  the resolved experiment and its hash (launch and trial write it)
    facts.json                       what the first trial resolved to (device, precision); no mixing
    search.json                      a frontier search's choices, each with why, and its answers (lxsweep/frontier.py)
    latency.json                     each trial's inference latency against dense, per device and batch (`lxsweep latency`)
    trials/<trial>/metrics.json      final metrics with the per-epoch history: the durable "done" marker
    trials/<trial>/sparsity.json     per-tensor sparsity of the mask it trained with
    trials/<trial>/attempts/<t>.json one file per start (time, host, resumed or not)
    trials/<trial>/failed.json       why it failed for good (removed on success)
    trials/<trial>/node.json         the Ray node of the last attempt (sweeps only)
    trials/<trial>/driver.json       start and end of its Ray Tune driver (sweeps only)
    masks/<trial>.safetensors        the mask trial <trial> trains with (bit-packed)
    weights/<trial>.safetensors      its trained weights (training.keep_weights, training.weights_dtype)
    reproductions/<trial>/<stamp>/   a re-run of a finished trial (`lxsweep trial`), laid out like a store
    rewind/dense-s<seed>-step<n>.safetensors   rewind-point weights (rewind.to: step)
    pretrained-<hash>/               the synthetic task's pretrained rewind point
    ray/                             Ray Tune/Train state and checkpoints
    wandb/, tensorboard/             tracker files (local and NFS stores; tracking.backend)
    report/                          results.csv, results.md, accuracy_vs_sparsity.png

Every write is atomic (temp file + rename locally; object stores put whole
objects), so a crash never leaves a half-written marker that reads as done.
Local paths and NFS use the filesystem directly; ``s3://`` and ``gs://``
go through ``pyarrow.fs``, the same layer Ray's own storage uses.

Object-store I/O is retried with exponential backoff (:func:`retrying`) for up
to ``LXSWEEP_STORE_RETRY_S`` seconds (default :data:`RETRY_SECONDS`), so an
outage of a few seconds costs nothing; a longer one ends in one
:class:`StoreError` line naming the path. A file that is there but cannot be
read as what it should be (empty, truncated, missing keys) raises
:class:`CorruptStoreFile`, naming it: ``status`` and ``report`` skip it with a
warning, ``trial`` and ``launch`` refuse to start; nothing deletes it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar


from lxsweep.errors import ConfigError, CorruptStoreFile, StoreError
from lxsweep import staging

if TYPE_CHECKING:
    from lxsweep.config import Experiment

T = TypeVar("T")
RETRY_ENV = "LXSWEEP_STORE_RETRY_S"
RETRY_SECONDS = 120.0  # how long an object-store outage is waited out before a trial or command gives up
RETRY_FIRST_DELAY = 0.5  # seconds; doubles after every failed try, capped at RETRY_MAX_DELAY
RETRY_MAX_DELAY = 16.0


def retry_seconds() -> float:
    """How long object-store I/O is retried (``LXSWEEP_STORE_RETRY_S``, default :data:`RETRY_SECONDS`)."""
    try:
        return max(0.0, float(os.environ.get(RETRY_ENV, RETRY_SECONDS)))
    except ValueError:
        raise ConfigError(f"{RETRY_ENV}={os.environ[RETRY_ENV]!r}: expected a number of seconds") from None


def retrying(what: str, op: Callable[[], T], seconds: float | None = None,
             warn: Callable[[str], None] | None = None) -> T:
    """``op()``, retried with exponential backoff while it raises a transient ``OSError``.

    Not-found is an answer, not an outage: ``FileNotFoundError`` (and
    ``IsADirectoryError``/``NotADirectoryError``) propagate at once. After
    ``seconds`` (default :func:`retry_seconds`) of failures, raises
    :class:`StoreError` naming ``what`` and the last error.
    """
    seconds = retry_seconds() if seconds is None else seconds
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    deadline = time.monotonic() + seconds
    delay, tries = RETRY_FIRST_DELAY, 0
    while True:
        try:
            return op()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise
        except OSError as exc:
            tries += 1
            last = " ".join(str(exc).split())[:300]
            if any(code in last for code in PERMANENT):
                raise StoreError(f"{what}: the store refused ({last}) — check the credentials "
                                 f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and the bucket name; nothing was "
                                 f"changed") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreError(f"{what}: the store did not answer for {seconds:.0f} s ({tries} tries; last error: "
                                 f"{last}) — check the storage endpoint, network and credentials, then re-run "
                                 f"(finished trials are kept), or raise {RETRY_ENV}") from None
            if tries == 1:
                warn(f"lxsweep: warning: {what}: {last}; retrying for up to {seconds:.0f} s")
            time.sleep(min(delay, left))
            delay = min(2 * delay, RETRY_MAX_DELAY)


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back (at import: no threads yet)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# Answers no retry can change: a wrong key, a denied bucket. Waiting them out would only hide the cause.
PERMANENT = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "HTTP response code 403")


def quick_filesystem(root: str):
    """``(filesystem, base path)`` for a URI, with seconds-long timeouts and no retries: for probes only."""
    import pyarrow.fs as pafs

    root = root.rstrip("/")
    if root.startswith("s3://"):
        fs = pafs.S3FileSystem(connect_timeout=3, request_timeout=3,
                               endpoint_override=os.environ.get("AWS_ENDPOINT_URL"),
                               retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
        return fs, root[len("s3://"):]
    return pafs.FileSystem.from_uri(root)




class Store:
    """Read and write an experiment's artifacts by relative path."""

    def __init__(self, root: str):
        if root.startswith("file://"):
            root = root[len("file://"):]
        self.uri = staging.is_remote(root)
        if self.uri:
            import pyarrow.fs as pafs

            scheme, _, rest = root.partition("://")
            if not rest.strip("/"):
                raise StoreError(f"{root[:200]}: names no bucket — give {scheme}://<bucket>/<path>")
            try:  # an s3:// URI resolves its bucket's region here: a network call that can fail
                self._fs, self._base = pafs.FileSystem.from_uri(root.rstrip("/"))
            except OSError as exc:
                raise StoreError(f"{root[:200]}: cannot reach the store ({str(exc).splitlines()[0][:200]}) — check "
                                 f"the bucket name, AWS_ENDPOINT_URL (for a non-AWS server) and the credentials") from None
            self.root = root.rstrip("/")
        else:
            self._fs, self._base = None, ""
            self.root = str(Path(root).expanduser().resolve())

    @classmethod
    def for_experiment(cls, exp: Experiment) -> "Store":
        storage = exp.storage.rstrip("/")
        return cls(f"{storage}/{exp.store_name}")

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def url(self, rel: str) -> str:
        """Where file ``rel`` lives, as a URL other tools follow: ``file:///…`` locally or on NFS, else the object URI."""
        return self.path(rel) if self.uri else Path(self.path(rel)).as_uri()

    def _remote(self, rel: str) -> str:
        return f"{self._base}/{rel}" if rel else self._base

    # -- bytes -------------------------------------------------------------
    def check_reachable(self) -> None:
        """Within seconds: :class:`StoreError` if an object store's endpoint does not answer (a command's first
        contact; later I/O retries an outage for ``LXSWEEP_STORE_RETRY_S``)."""
        if not self.uri:
            return
        try:
            fs, base = quick_filesystem(self.root)
            fs.get_file_info(base)
        except Exception as exc:  # noqa: BLE001 — pyarrow raises OSError/ArrowException with the service's text
            text = " ".join(str(exc).split())[:200]
            raise StoreError(f"{self.root}: cannot reach the store ({text}) — check the endpoint (AWS_ENDPOINT_URL), "
                             f"network and credentials; nothing was read or written (an outage after the first "
                             f"contact is waited out for {retry_seconds():.0f} s, {RETRY_ENV})") from None

    def exists(self, rel: str) -> bool:
        if not self.uri:
            return os.path.exists(self.path(rel))
        import pyarrow.fs as pafs

        info = retrying(self.path(rel), lambda: self._fs.get_file_info(self._remote(rel)))
        return info.type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        if not self.uri:
            return Path(self.path(rel)).read_bytes()

        def read() -> bytes:
            with self._fs.open_input_stream(self._remote(rel)) as f:
                return f.read()
        return retrying(self.path(rel), read)

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.uri:
            def write() -> None:  # the object appears when the stream closes, whole: a retry rewrites it whole
                with self._fs.open_output_stream(self._remote(rel)) as f:
                    f.write(data)
            retrying(self.path(rel), write)
            return
        target = Path(self.path(rel))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            # mkstemp makes 0600 files: give the store's files the mode any other file gets here (the umask's), so
            # a teammate's `status` on a shared NFS store can read them.
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def delete(self, rel: str) -> None:
        if not self.exists(rel):
            return
        if self.uri:
            self._remove_remote(rel, self._fs.delete_file)
        else:
            os.unlink(self.path(rel))

    def _remove_remote(self, rel: str, remove: Callable[[str], None]) -> None:
        try:
            retrying(self.path(rel), lambda: remove(self._remote(rel)))
        except FileNotFoundError:  # gone already: what was asked for
            pass

    def is_dir(self, rel: str) -> bool:
        """Whether ``rel`` is a directory (an object-store prefix with objects under it)."""
        if not self.uri:
            return Path(self.path(rel)).is_dir()
        import pyarrow.fs as pafs

        info = retrying(self.path(rel), lambda: self._fs.get_file_info(self._remote(rel)))
        return info.type == pafs.FileType.Directory

    def delete_tree(self, rel: str) -> None:
        """Remove the directory ``rel`` and everything under it (nothing if it does not exist)."""
        if self.uri:
            self._remove_remote(rel, self._fs.delete_dir)
        elif Path(self.path(rel)).is_dir():
            shutil.rmtree(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty if it does not exist)."""
        if not self.uri:
            p = Path(self.path(rel))
            return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self._remote(rel), allow_not_found=True)
        return sorted(Path(i.path).name for i in retrying(self.path(rel), lambda: self._fs.get_file_info(sel)))

    # -- JSON --------------------------------------------------------------
    def read_json(self, rel: str) -> Any:
        """The JSON file ``rel``; :class:`CorruptStoreFile` if it is empty, truncated or not JSON."""
        data = self.read_bytes(rel)
        if not data.strip():
            raise CorruptStoreFile(self.path(rel), "empty file")
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptStoreFile(self.path(rel), f"not valid JSON ({exc}); truncated or overwritten?") from None

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    # -- directories (pretrained models) -----------------------------------
    def upload_dir(self, local: str | Path, rel: str, last: str | None = None) -> None:
        """Copy a local directory into the store; it appears complete or not at all locally.

        An object store has no rename: files are put one by one, ``last`` (the
        file readers take as "complete", e.g. ``config.json``) after all others.
        """
        local = Path(local)
        if not self.uri:
            target = Path(self.path(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
            shutil.copytree(local, tmp, dirs_exist_ok=True)
            try:
                os.rename(tmp, target)
            except OSError:  # another process finished the same (deterministic) copy first
                shutil.rmtree(tmp, ignore_errors=True)
            return
        files = sorted((f for f in local.rglob("*") if f.is_file()), key=lambda f: f.relative_to(local).as_posix() == last)
        for f in files:
            self.write_bytes(f"{rel}/{f.relative_to(local).as_posix()}", f.read_bytes())

    def local_dir(self, rel: str, cache: str | Path | None = None) -> Path:
        """A local directory holding ``rel``: the store itself, or its node-local copy (:mod:`lxsweep.staging`)."""
        if not self.uri:
            return Path(self.path(rel))
        target = Path(cache) / Path(self.root).name / rel if cache else None
        return staging.stage(self.path(rel), target, fs=self._fs, base=self._remote(rel), retry=retrying).path


class OverlayStore(Store):
    """A store that writes into its own directory and reads through to a base store.

    A reproduction runs a finished trial into ``reproductions/<trial>/<stamp>/``
    of the sweep's store: it finds the sweep's masks, rewind point and data
    there, and everything it writes (metrics, masks, weights, attempts) lands
    in its own directory, never over the sweep's files.
    """

    def __init__(self, root: str, base: Store):
        super().__init__(root)
        self.base = base

    def exists(self, rel: str) -> bool:
        return super().exists(rel) or self.base.exists(rel)

    def read_bytes(self, rel: str) -> bytes:
        return super().read_bytes(rel) if super().exists(rel) else self.base.read_bytes(rel)

    def url(self, rel: str) -> str:
        return super().url(rel) if super().exists(rel) else self.base.url(rel)

    def delete(self, rel: str) -> None:
        if super().exists(rel):  # only this store's own files; the base store is read-only here
            super().delete(rel)

    def listdir(self, rel: str) -> list[str]:
        return sorted(set(super().listdir(rel)) | set(self.base.listdir(rel)))

    def local_dir(self, rel: str, cache: str | Path | None = None) -> Path:
        return super().local_dir(rel, cache) if super().exists(rel) else self.base.local_dir(rel, cache)


# -- the layout: every relative path in the store ----------------------------

EXPERIMENT_FILE = "experiment.yaml"
FACTS_FILE = "facts.json"  # what the first trial resolved to (lxsweep/facts.py)
SEARCH_FILE = "search.json"  # a frontier search's choices and answers (lxsweep/frontier.py)
LATENCY_FILE = "latency.json"  # each trial's measured inference latency per device (lxsweep/latency.py)
TRIALS_DIR = "trials"
RAY_DIR = "ray"
REPORT_DIR = "report"


def tracker_dir(backend: str) -> str:
    """A tracking backend's files: ``wandb/``, ``tensorboard/``, or a plugin backend's name."""
    return backend


def trial_dir(name: str) -> str:
    return f"{TRIALS_DIR}/{name}"


def _trial_file(filename: str) -> Callable[[str], str]:
    def path(name: str) -> str:
        return f"{trial_dir(name)}/{filename}"
    path.__name__ = path.__qualname__ = filename.split(".")[0] + "_path"
    return path


metrics_path = _trial_file("metrics.json")
sparsity_path = _trial_file("sparsity.json")
failed_path = _trial_file("failed.json")
node_path = _trial_file("node.json")
driver_path = _trial_file("driver.json")


def attempts_dir(name: str) -> str:
    return f"{trial_dir(name)}/attempts"


def attempt_path(name: str, started: float, tag: str) -> str:
    """One start of a trial; the name begins with the start time in ms (status reads it back)."""
    return f"{attempts_dir(name)}/{int(started * 1000)}-{tag}.json"


def attempt_started(filename: str) -> float:
    """The start time (s) encoded in an attempt file's name."""
    return float(filename.split("-")[0]) / 1000


# A running attempt rewrites its file with ``heartbeat_at`` every HEARTBEAT_SECONDS (lxsweep/train.py);
# one whose last beat is older than STALE_SECONDS, or whose process is gone from this host, is dead.
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 4 * HEARTBEAT_SECONDS


def mask_path(name: str) -> str:
    return f"masks/{name}.safetensors"


def weights_path(name: str) -> str:
    """Trial ``name``'s trained weights (safetensors, ``training.weights_dtype``)."""
    return f"weights/{name}.safetensors"


REPRODUCTIONS_DIR = "reproductions"


def reproduction_dir(name: str, stamp: str) -> str:
    """A re-run of finished trial ``name`` started at ``stamp``: a store of its own (see :class:`OverlayStore`)."""
    return f"{REPRODUCTIONS_DIR}/{name}/{stamp}"


def rewind_path(seed: int, step: int) -> str:
    return f"rewind/dense-s{seed}-step{step}.safetensors"


def pretrained_dir(digest: str) -> str:
    return f"pretrained-{digest}"


def report_path(filename: str) -> str:
    return f"{REPORT_DIR}/{filename}"


def finished_trials(store: Store) -> set[str]:
    """Names of the trials whose ``metrics.json`` is in the store."""
    return {n for n in store.listdir(TRIALS_DIR) if store.exists(metrics_path(n))}


# What every metrics.json holds (lxsweep/train.py writes more); without one of them it is incomplete.
METRICS_KEYS = {"trial": str, "level": int, "subnetwork": str, "seed": int, "accuracy": (int, float),
                "sparsity": (int, float), "started_at": (int, float), "duration_s": (int, float)}


def read_metrics(store: Store, name: str) -> dict:
    """Trial ``name``'s ``metrics.json``; :class:`CorruptStoreFile` if it is empty, truncated or incomplete."""
    rel = metrics_path(name)
    m = store.read_json(rel)
    if not isinstance(m, dict):
        raise CorruptStoreFile(store.path(rel), f"holds {type(m).__name__}, expected a JSON object")
    bad = [k for k, kind in METRICS_KEYS.items() if not isinstance(m.get(k), kind) or isinstance(m.get(k), bool)]
    if bad:
        raise CorruptStoreFile(store.path(rel), f"incomplete: no valid {', '.join(bad)}")
    if m["trial"] != name:
        raise CorruptStoreFile(store.path(rel), f"records trial {m['trial']!r}, but it is the file of {name}")
    return m


def unreadable_trials(store: Store) -> dict[str, CorruptStoreFile]:
    """Trials whose ``metrics.json`` is there but corrupt (``launch`` refuses such a store)."""
    out = {}
    for name in store.listdir(TRIALS_DIR):
        if store.exists(metrics_path(name)):
            try:
                read_metrics(store, name)
            except CorruptStoreFile as exc:
                out[name] = exc
    return out


def refuse_unreadable(store: Store) -> None:
    """Raise the first :class:`CorruptStoreFile` among the trials' ``metrics.json`` (saying how many more)."""
    bad = unreadable_trials(store)
    if bad:
        first = bad[sorted(bad)[0]]
        more = f" (and {len(bad) - 1} more unreadable metrics.json)" if len(bad) > 1 else ""
        raise CorruptStoreFile(first.path, first.why + more)
