"""Read W&B offline ``.wandb`` files back (a LevelDB-style log of protobuf Records).

wandb 0.31 ships no reader; this is the format: a 7-byte file header
(``:W&B`` magic, a 2-byte key, a version byte), then 32 KiB blocks of records
each framed by a 7-byte header (crc32 u32, length u16, type u8: 1 full,
2 first, 3 middle, 4 last).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024


def records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer too small for a header: skip to next block
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 0 and length == 0:
            break
        if kind == 1:
            raw = chunk
        elif kind == 2:
            pending = chunk
            continue
        elif kind == 3:
            pending += chunk
            continue
        else:
            raw, pending = pending + chunk, b""
        rec = pb.Record()
        rec.ParseFromString(raw)
        out.append(rec)
    return out


def artifact_info(rec: pb.ArtifactRecord) -> dict:
    """One artifact record: name, type, digest, metadata, files, and whether it is an input.

    ``used`` is W&B's use-after-commit flag on a user-created artifact: what
    ``run.use_artifact(artifact)`` records, which ``wandb sync`` turns into an
    input edge; a run's outputs have it unset.
    """
    return {"name": rec.name, "type": rec.type, "digest": rec.digest, "description": rec.description,
            "metadata": json.loads(rec.metadata) if rec.metadata else {}, "aliases": list(rec.aliases),
            "used": rec.user_created and rec.use_after_commit,
            "files": [{"path": e.path, "digest": e.digest, "ref": e.ref, "local_path": e.local_path, "size": e.size}
                      for e in rec.manifest.contents]}


def run_info(path: str | Path) -> dict:
    """The run record, config, history rows, final summary and artifacts of one offline run file (and its folder)."""
    info: dict = {"history": [], "summary": {}, "config": {}, "artifacts": [], "dir": Path(path).parent}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            info.update(id=r.run_id, group=r.run_group, job_type=r.job_type, name=r.display_name,
                        tags=list(r.tags))
            info["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            info["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            info["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "artifact":
            info["artifacts"].append(artifact_info(rec.artifact))
        elif kind == "summary":
            for i in rec.summary.update:
                info["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return info


def lineage(run: dict) -> tuple[dict, dict]:
    """(inputs, outputs) of a run's mask and weights artifacts (lxsweep's types), by artifact name."""
    ours = [a for a in run["artifacts"] if a["type"] in ("mask", "model")]
    return {a["name"]: a for a in ours if a["used"]}, {a["name"]: a for a in ours if not a["used"]}
