"""A folder of images with one subfolder per class, read as torchvision's ``ImageFolder`` reads it.

ImageFolder's rules, kept here: classes are the sorted names of the root's subfolders, a class's
images are found through its nested folders too, samples go class by class, then by sorted folder,
then by sorted file name; every image is converted to RGB (its ``pil_loader``) and ``ToTensor`` makes
float32 CHW in [0, 1] as ``uint8 / 255``. Departures: PNG and JPEG only (by content, not just the
name), hidden files and macOS's ``__MACOSX`` folder are skipped, and all images must share one size
(the dataset is one tensor, so resize them before uploading).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.data import webdataset
from models.data.archive import Archive, archive_files
from models.errors import InvalidInput, Loc, PayloadTooLarge

SUFFIXES = webdataset.SUFFIXES
FORMATS = {"PNG", "JPEG"}
MAX_MEMBERS = 1_000_000


@dataclass(frozen=True)
class ImageFolder:
    """The samples of an image folder, in ImageFolder's order, before any pixel is decoded."""

    classes: list[str]
    samples: list[tuple[str, int]]  # (path in the archive, class index)
    files: dict[str, bytes]
    webdataset: bool = False  # read from a WebDataset shard (models.data.webdataset): samples by key


def read_folder(blob: bytes, archive: Archive, *, max_bytes: int, loc: Loc) -> ImageFolder:
    """The class folders and image files of an archive; a 422 naming what is missing or out of place."""
    files = archive_files(blob, archive, max_members=MAX_MEMBERS, max_bytes=max_bytes, loc=loc)
    if archive == "tar" and webdataset.is_shard(files):  # classes are the indices 0..max of its .cls files
        shard = webdataset.read_shard(files, loc=loc)
        classes = [str(i) for i in range(max(c for _, c in shard) + 1)]
        return ImageFolder(classes, shard, {p: files[p] for p, _ in shard}, webdataset=True)
    images = {p: d for p, d in files.items() if _is_image_name(p)}
    parts = {p: p.split("/") for p in images}
    # ``tar -cf data.tar mydata`` puts every path under ``mydata/``: that folder is the root, as
    # ImageFolder("mydata") would be given it.
    while parts and all(len(v) > 2 for v in parts.values()) and len({v[0] for v in parts.values()}) == 1:
        parts = {p: v[1:] for p, v in parts.items()}
    in_classes = {p: v for p, v in parts.items() if len(v) >= 2}
    if not in_classes:
        found = f"; found images at its root: {', '.join(sorted(parts)[:3])}" if parts else ""
        if any(p.endswith(".npy") for p in files):
            found = "; it holds .npy files: send an .npz as application/octet-stream"
        raise InvalidInput(
            "the archive has no class folders: an image folder holds one subfolder per class with PNG or JPEG "
            f"files inside (e.g. cat/1.png, dog/2.png){found}",
            loc,
        )
    classes = sorted({v[0] for v in in_classes.values()})
    index = {c: i for i, c in enumerate(classes)}
    # ImageFolder walks sorted(os.walk(class_dir)) and sorted file names: (class, folder, name).
    order = sorted(in_classes, key=lambda p: (in_classes[p][0], "/".join(in_classes[p][:-1]), in_classes[p][-1]))
    samples = [(p, index[in_classes[p][0]]) for p in order]
    return ImageFolder(classes, samples, {p: images[p] for p in order})


def _is_image_name(path: str) -> bool:
    parts = path.split("/")
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return not hidden and path.lower().endswith(SUFFIXES)


def image_size(folder: ImageFolder, *, max_elements: int, loc: Loc) -> tuple[int, int]:
    """(height, width) that every image shares, read from headers only; refused before decoding when the
    decoded tensors would pass ``max_elements``."""
    size: tuple[int, int] | None = None
    first = ""
    for path, _ in folder.samples:
        with _open(path, folder.files[path], loc) as img:
            w, h = img.size
        if size is None:
            size, first = (h, w), path
            total = len(folder.samples) * 3 * h * w
            if total > max_elements:
                raise PayloadTooLarge(
                    f"{len(folder.samples):,} images of {w}x{h} decode to {total:,} values; the limit is "
                    f"{max_elements:,} (GRADSERVE_MAX_DATASET_ELEMENTS)",
                    loc,
                )
        elif (h, w) != size:
            raise InvalidInput(
                f"member '{path}' is {w}x{h} but '{first}' is {size[1]}x{size[0]}: all images of a dataset must "
                "share one size (resize them before uploading)",
                loc,
            )
    assert size is not None  # read_folder found at least one image
    return size


def decode_pixels(folder: ImageFolder, size: tuple[int, int], *, loc: Loc) -> torch.Tensor:
    """Every image as uint8 (N, 3, H, W), in the folder's sample order."""
    h, w = size
    out = torch.empty((len(folder.samples), 3, h, w), dtype=torch.uint8)  # (N, C, H, W)
    for i, (path, _) in enumerate(folder.samples):
        with _open(path, folder.files[path], loc) as img:
            try:
                img.load()
                rgb = img.convert("RGB")  # ImageFolder's pil_loader
            except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for damaged data
                raise InvalidInput(f"member '{path}' is not a readable {img.format} image: {exc}", loc) from exc
            if rgb.size != (w, h):
                raise InvalidInput(f"member '{path}' is {rgb.size[0]}x{rgb.size[1]}, not {w}x{h}", loc)
            out[i] = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return out


def to_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """torchvision's ``ToTensor`` on uint8 pixels: ``img.to(float32).div(255)``, so equal bit for bit."""
    return pixels.to(torch.float32).div(255)


def labels(folder: ImageFolder) -> torch.Tensor:
    return torch.tensor([c for _, c in folder.samples], dtype=torch.int64)  # (N,)


def _open(path: str, data: bytes, loc: Loc) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, never decoded
            img = Image.open(io.BytesIO(data), formats=sorted(FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"member '{path}' declares too many pixels: {exc}", loc) from exc
    except Exception as exc:  # Pillow raises UnidentifiedImageError, SyntaxError, struct.error... for bad headers
        raise InvalidInput(f"member '{path}' is not a readable PNG or JPEG image: {exc}", loc) from exc
    return img
