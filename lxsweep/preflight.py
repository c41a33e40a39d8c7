"""Checks of the environment an experiment needs, run before any work starts.

``launch`` runs them before Ray starts, ``trial`` before training, ``plan``
without starting anything. The experiment file itself is validated in
:mod:`lxsweep.config`; here are the things only this machine can answer:
the storage is writable, the model directory holds a model, the prepared
VQA store has the splits. Each failure is one :class:`ConfigError` line.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from lxsweep.config import ConfigError, Experiment


def preflight(exp: Experiment) -> list[str]:
    """Run every check; returns one line per check passed, raises :class:`ConfigError` at the first failure."""
    return [check_tracking(exp), check_storage(exp), check_model(exp), check_answer_table(exp), check_data(exp),
            check_schedule(exp)]


def check_tracking(exp: Experiment) -> str:
    """``tracking.backend`` names a registered backend (built in, or registered by one of ``plugins``)."""
    from lxsweep.tracking.registry import tracker_names

    if exp.tracking.backend not in tracker_names():
        raise ConfigError(f"{exp.source}: tracking.backend: unknown backend {exp.tracking.backend!r} — use one of "
                          f"{', '.join(tracker_names())} (or a name registered with lxsweep.tracking.register_tracker)")
    return f"tracking: {exp.tracking.backend}"


def check_storage(exp: Experiment) -> str:
    """A probe file is written into ``storage`` and deleted again."""
    from lxsweep.staging import is_remote

    where, storage = exp.source, exp.storage
    if is_remote(storage):
        return _check_remote_storage(exp)
    root = Path(storage.removeprefix("file://")).expanduser()
    for parent in (root, *root.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{where}: storage: {parent} is a file, not a directory — point storage at a directory")
            break
    probe = root / f".lxsweep-probe-{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{where}: storage: cannot write to {root} ({exc.strerror or exc}) — choose a writable "
                          f"directory or fix its permissions") from None
    return f"storage {root}: writable"


def _check_remote_storage(exp: Experiment) -> str:
    from lxsweep.store import quick_filesystem

    where, storage = exp.source, exp.storage.rstrip("/")
    try:
        fs, base = quick_filesystem(storage)
        probe = f"{base}/.lxsweep-probe-{uuid.uuid4().hex[:8]}"
        with fs.open_output_stream(probe) as f:
            f.write(b"probe")
        fs.delete_file(probe)
    except Exception as exc:  # pyarrow raises OSError/ArrowException with the service's text
        text = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{where}: storage: cannot write to {storage} ({text}) — check the credentials "
                          f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), that the bucket exists, and AWS_ENDPOINT_URL") from None
    return f"storage {storage}: writable"


def check_model(exp: Experiment) -> str:
    """``model.pretrained`` loads its config (a hub name only from the local cache when HF_HUB_OFFLINE is set)."""
    where, name = exp.source, exp.model.pretrained
    if name is None:
        return "model: a tiny LXMERT pretrained from model.config"
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"{where}: model.pretrained: {name} holds no config.json, so no model — point it at a "
                              f"directory written by save_pretrained (or a hub name)")
        if not any(local.glob("*.safetensors")) and not any(local.glob("*.bin")):
            raise ConfigError(f"{where}: model.pretrained: {name} holds no weights (*.safetensors or *.bin) — point "
                              f"it at a directory written by save_pretrained")
    _pretrained_config(exp)
    return f"model {name}: config loads"


def _pretrained_config(exp: Experiment):
    """``model.pretrained``'s LxmertConfig (a hub name only from the local cache when HF_HUB_OFFLINE is set)."""
    from transformers import LxmertConfig

    name = exp.model.pretrained
    try:
        return LxmertConfig.from_pretrained(
            name, local_files_only=not Path(name).expanduser().is_dir() and bool(os.environ.get("HF_HUB_OFFLINE")))
    except Exception as exc:  # transformers raises OSError/ValueError with its own text
        text = " ".join(str(exc).split())[:160]
        raise ConfigError(f"{exp.source}: model.pretrained: cannot load the config of {name!r} ({text}) — check the "
                          f"name and the network, or download it and point model.pretrained at the directory") from None


def check_answer_table(exp: Experiment) -> str:
    """``model.answer_table`` reads as a list of distinct answers, one per row of ``model.pretrained``'s answer head."""
    from lxsweep.model import AnswerTableError, read_answer_table

    where, path = exp.source, exp.model.answer_table
    if path is None:
        return "answer head: a fresh one seeded per seed (no model.answer_table)"
    fix = "pass LXMERT's data/lxmert/all_ans.json (it ships in the airsplay/lxmert repository)"
    try:
        table = read_answer_table(path)
    except AnswerTableError as exc:
        raise ConfigError(f"{where}: model.answer_table: {exc} — {fix}") from None
    if exp.model.pretrained is None:  # the embedded rewind point is pretrained later: its head is checked then
        return f"answer table {path}: {len(table)} answers"
    rows = _pretrained_config(exp).num_qa_labels
    if rows != len(table):
        raise ConfigError(f"{where}: model.answer_table: {path} lists {len(table)} answers but {exp.model.pretrained}'s "
                          f"answer head has {rows} (num_qa_labels) — {fix}, the table of that checkpoint")
    return f"answer table {path}: {len(table)} answers, one per row of {exp.model.pretrained}'s answer head"


def check_data(exp: Experiment) -> str:
    """The prepared VQA store has ``data.train_split`` and ``data.valid_split`` (and ``data.test_split``, if set)."""
    from lxsweep.data import VQAStoreError
    from lxsweep.data.prepared import read_manifest

    if exp.data.source != "vqa":
        return "data: the synthetic task (made in the store when first needed)"
    try:
        manifest = _remote_manifest(exp) if "://" in exp.data.path else read_manifest(exp.data.path)
    except VQAStoreError as exc:
        raise ConfigError(f"{exp.source}: data.path: {exc}") from None
    for key in ("train_split", "valid_split", "test_split"):
        split = getattr(exp.data, key)
        if split is not None and split not in manifest["splits"]:
            raise ConfigError(f"{exp.source}: data.{key}: {exp.data.path} has no split {split!r} — use one of "
                              f"{', '.join(sorted(manifest['splits']))} or prepare it with `lxsweep prepare-vqa`")
    test = f", {exp.data.test_split}" if exp.data.test_split else ""
    return f"data {exp.data.path}: splits {exp.data.train_split}, {exp.data.valid_split}{test} present"


def check_schedule(exp: Experiment) -> str:
    """Every level removes more weights than the one before and keeps at least one, counted on the real model.

    The model is built on the meta device (shapes only, no memory), from ``model.pretrained``'s config or
    ``model.config``; the counts use the one rounding rule of every mask (``pruning.removed_count``).
    """
    import torch
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    from lxsweep.pruning import prunable_names, removed_count

    if exp.model.pretrained is not None:
        cfg = LxmertConfig.from_pretrained(exp.model.pretrained)
    else:
        cfg = LxmertConfig(**{"visual_pos_dim": 4, **exp.model.config})
    with torch.device("meta"):
        model = LxmertForQuestionAnswering(cfg)
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in prunable_names(params, exp.pruning.scope))
    previous = 0
    for level in range(1, exp.num_levels + 1):
        removed = removed_count(exp.sparsity(level), total)
        if removed >= total or removed <= previous:
            what = "removes every one" if removed >= total else f"removes no more than level {level - 1}"
            key = "pruning.sparsities" if exp.pruning.sparsities is not None else "pruning.levels"
            raise ConfigError(f"{exp.source}: {key}: level {level} (sparsity {exp.sparsity(level):.6f}) {what} of the "
                              f"{total} prunable weights — use fewer levels (at most {level - 1})")
        previous = removed
    return f"schedule: {exp.num_levels} levels over {total} prunable weights, each removing more"


def _remote_manifest(exp: Experiment) -> dict:
    """The manifest of a prepared store on an object store (each node stages the rest when a trial starts)."""
    import json

    from lxsweep.store import quick_filesystem

    path = exp.data.path.rstrip("/")
    try:
        fs, base = quick_filesystem(path)
        with fs.open_input_stream(f"{base}/manifest.json") as stream:
            return json.loads(stream.read())
    except Exception as exc:  # noqa: BLE001 — pyarrow raises OSError/ArrowException with the service's text
        text = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{exp.source}: data.path: cannot read {path}/manifest.json ({text}) — upload the whole "
                          f"prepared store (`lxsweep prepare-vqa --out DIR`, then copy DIR there) or fix data.path, "
                          f"the endpoint (AWS_ENDPOINT_URL) and credentials") from None


RAY_CLIENT_PORT, RAY_GCS_PORT = 10001, 6379  # the defaults of `ray://host` and of `ray start --head`
PROBE_SECONDS = 5.0


def check_ray_address(address: str | None) -> str:
    """A Ray head at ``address`` (``host:port`` or ``ray://host[:port]``) accepts a TCP connection within
    :data:`PROBE_SECONDS`; a local Ray (None, "local", "auto") is not probed.

    ``ray.init`` on a dead head retries for a minute or more before it gives up; this says so in seconds.
    """
    import socket

    if not address or address in ("local", "auto"):
        return "ray: a local Ray on this machine" if not address or address == "local" else "ray: address auto"
    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        port = int(port_text) if port_text else (RAY_CLIENT_PORT if address.startswith("ray://") else RAY_GCS_PORT)
    except ValueError:
        raise ConfigError(f"--address {address[:200]!r}: the port {port_text[:20]!r} is not a number — write "
                          f"host:port (e.g. 10.0.0.5:6379) or ray://host:10001") from None
    if not host or not 0 < port < 65536:
        raise ConfigError(f"--address {address[:200]!r}: expected host:port (e.g. 10.0.0.5:6379) or ray://host:10001")
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=PROBE_SECONDS):
            pass
    except OSError as exc:
        why = f"no answer within {PROBE_SECONDS:g} s" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__)
        raise ConfigError(f"--address {address[:200]}: cannot reach a Ray head there ({why}) — start it (`ray up cluster.yaml`, or `ray start --head` on that "
                          f"machine), check the host and port (RAY_ADDRESS too), or leave out --address for a "
                          f"local Ray") from None
    return f"ray: head {address} reachable"
