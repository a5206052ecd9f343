"""The regular files of an uploaded tar or zip, read in memory and never extracted to disk.

Nothing here writes a file, so a hostile name could do no harm; names that climb out of the archive
(``../x``, ``/etc/x``) and links are still refused, as ``tar --extract`` and ``unzip`` users expect
an archive that does such things to be a mistake or an attack, not a dataset.
"""

from __future__ import annotations

import io
import posixpath
import stat
import tarfile
import zipfile
from typing import Literal

from models.errors import InvalidInput, Loc, PayloadTooLarge
from models.wire.zip_members import member_bytes

Archive = Literal["tar", "zip"]


def archive_files(blob: bytes, kind: Archive, *, max_members: int, max_bytes: int, loc: Loc) -> dict[str, bytes]:
    """Path -> bytes of every regular file; directories are implied by the paths."""
    if kind == "tar":
        return _tar_files(blob, max_members, max_bytes, loc)
    return _zip_files(blob, max_members, max_bytes, loc)


def _tar_files(blob: bytes, max_members: int, max_bytes: int, loc: Loc) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    total = 0
    try:
        # "r:" reads plain tar only: no decompressor means no archive inflates past the body's own size.
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise PayloadTooLarge(f"the tar has more than {max_members:,} members", loc)
                name = _safe_name(member.name, loc)
                if member.issym() or member.islnk():
                    target = member.linkname
                    raise InvalidInput(f"member '{member.name}' is a link to '{target}'; links are refused", loc)
                if member.isdir():
                    continue
                if not member.isfile() or member.issparse():
                    # A sparse member's holes read back as zeros: a few bytes can declare gigabytes.
                    raise InvalidInput(f"member '{member.name}' is not a regular file or folder", loc)
                total += member.size
                if total > max_bytes:
                    raise PayloadTooLarge(
                        f"the tar's files pass {max_bytes:,} bytes at member '{member.name}' "
                        "(GRADSERVE_MAX_DATASET_BYTES)",
                        loc,
                    )
                data = tar.extractfile(member)
                assert data is not None  # a regular file always has data
                out[name] = data.read()
    except tarfile.TarError as exc:
        raise InvalidInput(f"not a readable tar file: {exc}", loc) from exc
    return out


def _zip_files(blob: bytes, max_members: int, max_bytes: int, loc: Loc) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidInput(f"not a readable zip file: {exc}", loc) from exc
    if len(members) > max_members:
        raise PayloadTooLarge(f"the zip has {len(members):,} members; the limit is {max_members:,}", loc)
    # The directory's sizes first (a few KB can declare gigabytes), then each member inflated under a cap
    # of what it declares, as the directory may lie.
    declared = sum(info.file_size for info in members)
    if declared > max_bytes:
        raise PayloadTooLarge(
            f"the zip inflates to {declared:,} bytes; the limit is {max_bytes:,} (GRADSERVE_MAX_DATASET_BYTES)", loc
        )
    out: dict[str, bytes] = {}
    for info in members:
        name = _safe_name(info.filename, loc)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidInput(f"member '{info.filename}' is a symbolic link; links are refused", loc)
        if info.is_dir():
            continue
        out[name] = member_bytes(blob, info, info.file_size, loc=loc)
    return out


def _safe_name(name: str, loc: Loc) -> str:
    """The member's path relative to the archive's root, or a 422 for one that leaves it."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise InvalidInput(f"member '{name}' points outside the archive; paths must stay inside it", loc)
    return posixpath.normpath(name.replace("\\", "/")).removeprefix("./")
