"""WebDataset shards: a plain tar whose members are grouped into samples by key, ``000001.png`` with
``000001.cls`` (the key is the path up to the first dot of the file name, as the ``webdataset`` library splits
it). A sample is one PNG or JPEG image and its class index (``.cls``: a decimal integer); other members of a
sample (``.json``, ``.txt``...) are ignored. Samples keep the shard's order.

Read with ``tarfile`` through ``models.data.archive`` rather than the ``webdataset`` library: the archive reader
already refuses links, names that leave the archive and sizes past the caps, and the library's default
decoders unpickle ``.pyd``/``.pickle`` members, which client data must never be.
"""

from __future__ import annotations

from models.errors import InvalidInput, Loc

LABEL = ".cls"
SUFFIXES = (".png", ".jpg", ".jpeg")  # the images models.data.image_folder decodes
Samples = list[tuple[str, int]]  # (the image's path in the tar, class index), in the shard's order


def is_shard(files: dict[str, bytes]) -> bool:
    """A tar with ``.cls`` members is a WebDataset shard; an image folder has class folders instead."""
    return any(path.endswith(LABEL) for path in files)


def read_shard(files: dict[str, bytes], *, loc: Loc) -> Samples:
    """The shard's samples; a 422 naming a sample without its image or class."""
    groups: dict[str, dict[str, str]] = {}
    for path in files:
        folder, _, name = path.rpartition("/")
        if name.startswith(".") or "." not in name:
            continue
        stem, _, ext = name.partition(".")
        key = f"{folder}/{stem}" if folder else stem
        groups.setdefault(key, {})["." + ext.lower()] = path
    samples: Samples = []
    for key, members in groups.items():
        images = [p for ext, p in members.items() if ext.endswith(SUFFIXES)]
        if len(images) != 1 or LABEL not in members:
            raise InvalidInput(
                f"sample '{key}' of the WebDataset shard has {', '.join(sorted(members))}; each sample needs one "
                f"image ({', '.join(SUFFIXES)}) and one {LABEL} file",
                loc,
            )
        raw = files[members[LABEL]].strip()
        if not raw.isdigit() or len(raw) > 9:
            shown = raw[:20].decode("latin-1")
            raise InvalidInput(f"member '{members[LABEL]}' holds {shown!r}; a {LABEL} file holds a class index", loc)
        samples.append((images[0], int(raw)))
    if not samples:
        raise InvalidInput("the WebDataset shard holds no samples", loc)
    return samples
