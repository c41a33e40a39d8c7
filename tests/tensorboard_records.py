"""Read TensorBoard event files back (TFRecord framing of ``Event`` protobufs), without TensorBoard.

The format: per record a u64 length, a u32 masked CRC-32C of the length, the
serialized ``Event``, a u32 masked CRC-32C of the data (all little-endian).
The CRCs are checked, so a torn file fails loudly instead of reading short.
"""
from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def events(path: str | Path) -> list[Event]:
    data, pos, out = Path(path).read_bytes(), 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == _masked(header), f"{path}: bad length CRC at {pos}"
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == _masked(body), f"{path}: bad CRC"
        out.append(Event.FromString(body))
        pos += 16 + length
    return out


def run(directory: str | Path) -> dict:
    """Everything a run directory holds: ``scalars`` tag -> [(step, value)], ``texts`` tag -> text, ``images`` tags."""
    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    texts: dict[str, str] = {}
    images: set[str] = set()
    files = sorted(Path(directory).glob("events.out.tfevents.*"))
    assert files, f"no event files in {directory}"
    for f in files:
        for e in events(f):
            for v in e.summary.value:
                if v.HasField("simple_value"):
                    scalars[v.tag].append((e.step, v.simple_value))
                elif v.HasField("image"):
                    images.add(v.tag)
                elif v.tensor.string_val:
                    texts[v.tag.removesuffix("/text_summary")] = v.tensor.string_val[0].decode()
    return {"files": len(files), "scalars": dict(scalars), "texts": texts, "images": images}
