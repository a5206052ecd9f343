"""TensorBoard event files written by hand: TFRecord framing around ``Event`` protobufs.

Only the handful of fields TensorBoard reads for scalars and histograms are encoded, so the service needs
neither TensorFlow nor tensorboard's protobuf stubs at run time. Field numbers follow
tensorboard/compat/proto/{event,summary}.proto; the tests read the files back with tensorboard's own reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FILE_VERSION = b"brain.Event:2"
HISTOGRAM_BINS = 30


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses; zlib's crc32 is a different polynomial."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, payload, masked CRC of the payload."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked_crc(length)) + payload + struct.pack("<I", _masked_crc(payload))


# --- protobuf wire format: varint keys, fixed 64/32-bit numbers, length-delimited bytes ---
def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf encodes them
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _float(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _packed_doubles(field: int, values: Iterable[float]) -> bytes:
    return _bytes(field, b"".join(struct.pack("<d", float(v)) for v in values))


@dataclass(frozen=True)
class Histogram:
    """What ``HistogramProto`` holds: bucket i counts values in (limits[i-1], limits[i]]."""

    min: float
    max: float
    num: float
    sum: float
    sum_squares: float
    bucket_limits: Sequence[float]
    buckets: Sequence[float]

    @classmethod
    def of(cls, values: npt.ArrayLike, bins: int = HISTOGRAM_BINS) -> Histogram:
        """The histogram of the finite values (all of them, flattened), ``bins`` equal-width buckets."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0, [0.0], [0.0])
        counts, edges = np.histogram(flat, bins=bins)
        return cls(
            min=float(flat.min()),
            max=float(flat.max()),
            num=float(flat.size),
            sum=float(flat.sum()),
            sum_squares=float(np.dot(flat, flat)),
            bucket_limits=[float(e) for e in edges[1:]],
            buckets=[float(c) for c in counts],
        )

    def encode(self) -> bytes:
        return (
            _double(1, self.min)
            + _double(2, self.max)
            + _double(3, self.num)
            + _double(4, self.sum)
            + _double(5, self.sum_squares)
            + _packed_doubles(6, self.bucket_limits)
            + _packed_doubles(7, self.buckets)
        )


def _value(tag: str, value: float | Histogram) -> bytes:
    body = _bytes(1, tag.encode())
    body += _bytes(5, value.encode()) if isinstance(value, Histogram) else _float(2, value)
    return _bytes(1, body)  # Summary.value (repeated)


def event(*, wall_time: float, step: int, values: dict[str, float | Histogram]) -> bytes:
    """One ``Event`` record whose summary holds every (tag, scalar or histogram) of a step."""
    summary = b"".join(_value(tag, v) for tag, v in values.items())
    return tfrecord(_double(1, wall_time) + _key(2, 0) + _varint(step) + _bytes(5, summary))


def header(wall_time: float) -> bytes:
    """The first record of every event file: its format version."""
    return tfrecord(_double(1, wall_time) + _bytes(3, FILE_VERSION))
