"""The members of an uploaded zip (.npz, or an image folder) file, inflated a step at a time and never past a byte cap.

``zipfile`` bounds what it inflates per read for deflate, but hands bzip2 each compressed chunk whole:
a few KB of bzip2 can inflate to gigabytes, even when only an array's header is wanted. Here every
decompressor is asked for at most ``STEP`` bytes at a time.
"""

from __future__ import annotations

import bz2
import struct
import zipfile
import zlib
from collections.abc import Iterator

from models.errors import InvalidInput, Loc, PayloadTooLarge

STEP = 64 * 1024
# What numpy writes (np.savez: stored, np.savez_compressed: deflated), and bzip2, which zip tools offer.
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2"}
# A local file header (APPNOTE 4.3.7): signature, ..., name length [10], extra field length [11].
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_SIGNATURE = b"PK\x03\x04"


def member_prefix(blob: bytes, info: zipfile.ZipInfo, size: int, *, loc: Loc) -> bytes:
    """The first ``size`` bytes of a member (fewer if it is shorter), inflating no more than that."""
    out = bytearray()
    for piece in _inflate(blob, info, loc):
        out += piece
        if len(out) >= size:
            break
    return bytes(out[:size])


def member_bytes(blob: bytes, info: zipfile.ZipInfo, limit: int, *, loc: Loc) -> bytes:
    """A whole member, refused with a 413 as soon as it inflates past ``limit`` bytes."""
    out = bytearray()
    for piece in _inflate(blob, info, loc):
        out += piece
        if len(out) > limit:
            raise PayloadTooLarge(f"member '{info.filename}' inflates past {limit:,} bytes, more than it declares")
    if zlib.crc32(out) != info.CRC:
        raise InvalidInput(f"member '{info.filename}' is corrupt (its CRC does not match)", loc)
    return bytes(out)


def _inflate(blob: bytes, info: zipfile.ZipInfo, loc: Loc) -> Iterator[bytes]:
    if info.flag_bits & 0x1:
        raise InvalidInput(f"member '{info.filename}' is encrypted", loc)
    if info.compress_type not in METHODS:
        raise InvalidInput(
            f"member '{info.filename}' uses zip compression method {info.compress_type}; "
            f"accepted: {', '.join(METHODS.values())} (what numpy's savez and savez_compressed write)",
            loc,
        )
    data = _raw(blob, info, loc)
    if info.compress_type == zipfile.ZIP_STORED:
        for at in range(0, len(data), STEP):
            yield data[at : at + STEP]
        return
    try:
        if info.compress_type == zipfile.ZIP_DEFLATED:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            while not inflater.eof:
                piece = inflater.decompress(data, STEP)
                data = inflater.unconsumed_tail
                if not piece and not data:
                    return  # truncated: the CRC check says so
                yield piece
            return
        unbzip = bz2.BZ2Decompressor()
        while not unbzip.eof:
            piece = unbzip.decompress(data, STEP)
            data = b""  # the decompressor keeps what it has not used yet
            if not piece and unbzip.needs_input:
                return  # truncated: the CRC check says so
            yield piece
    except (OSError, zlib.error, EOFError) as exc:
        raise InvalidInput(f"member '{info.filename}' is corrupt: {exc}", loc) from exc


def _raw(blob: bytes, info: zipfile.ZipInfo, loc: Loc) -> bytes:
    """The member's compressed bytes, found through its local header."""
    at = info.header_offset
    try:
        fields = _LOCAL_HEADER.unpack_from(blob, at)
    except struct.error as exc:
        raise InvalidInput(f"member '{info.filename}' has no local header", loc) from exc
    if fields[0] != _SIGNATURE:
        raise InvalidInput(f"member '{info.filename}' has no local header", loc)
    start = at + _LOCAL_HEADER.size + fields[10] + fields[11]
    if start + info.compress_size > len(blob):
        raise InvalidInput(f"member '{info.filename}' runs past the end of the file", loc)
    return blob[start : start + info.compress_size]
