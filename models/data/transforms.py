"""Image transforms on torch ops, as torchvision's tensor transforms compute them (torchvision itself does not
import with the CPU torch here), seeded so a resume draws the same crops and flips.

The transforms before the first random one are applied once to the whole dataset; the rest to each batch,
with a generator seeded from the job's seed and the batch's place in the data order (epoch, first sample),
which a checkpoint holds: a resumed job, a fork and a replay of step K draw what the run drew.
A held-out split gets the same list with each random transform replaced by its eval counterpart (a centre
crop of the same size, no flip), as torchvision recipes pair ``RandomCrop`` with ``CenterCrop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from models.errors import InvalidInput, Loc
from models.spec.transforms import (
    RANDOM,
    CenterCrop,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    Size,
    TransformSpec,
)

_SPECS: TypeAdapter[list[TransformSpec]] = TypeAdapter(list[TransformSpec])
_MIX = 1_000_003  # a prime: (seed, epoch, start) map to distinct generator seeds for any realistic job


def parse(docs: Sequence[dict[str, Any]]) -> list[TransformSpec]:
    """The transforms of a stored request (``model_dump`` output) as specs again."""
    return _SPECS.validate_python(list(docs))


def output_shape(shape: Sequence[int], transforms: Sequence[TransformSpec], loc: Loc) -> list[int]:
    """One sample's (C, H, W) after the transforms; a 422 naming the transform that does not fit."""
    if transforms and len(shape) != 3:
        raise InvalidInput(f"transforms take images (C, H, W); this dataset's samples have shape {list(shape)}", loc)
    c, h, w = shape if transforms else (0, 0, 0)
    for i, t in enumerate(transforms):
        if isinstance(t, Resize):
            h, w = _resized(h, w, t.size)
        elif isinstance(t, CenterCrop):
            h, w = _pair(t.size)  # a crop larger than the image pads it, as torchvision's does
        elif isinstance(t, RandomCrop):
            th, tw = _pair(t.size)
            pad = t.padding
            if th > h + 2 * pad or tw > w + 2 * pad:
                raise InvalidInput(
                    f"random_crop to {th}x{tw} does not fit images of {h}x{w}" + (f" padded by {pad}" if pad else ""),
                    (*loc, i, "size"),
                )
            h, w = th, tw
        elif isinstance(t, Normalize) and not (len(t.mean) == len(t.std) == c):
            raise InvalidInput(
                f"normalize has {len(t.mean)} means and {len(t.std)} stds; the images have {c} channels", (*loc, i)
            )
    return [c, h, w] if transforms else list(shape)


def transformed_arrays(arrays: dict[str, dict[str, Any]], transforms: Sequence[TransformSpec], loc: Loc) -> Any:
    """A dataset's array descriptions with its inputs' shapes as the transforms leave them."""
    out = dict(arrays)
    for name in ("inputs", "test_inputs"):
        if name in arrays:
            n, *sample = arrays[name]["shape"]
            out[name] = {"shape": [n, *output_shape(sample, transforms, loc)], "dtype": arrays[name]["dtype"]}
    return out


class Pipeline:
    """A job's transforms, split where the first random one starts."""

    def __init__(self, transforms: Sequence[TransformSpec], seed: int) -> None:
        first = next((i for i, t in enumerate(transforms) if t.type in RANDOM), len(transforms))
        self.fixed, self.per_batch, self.seed = list(transforms[:first]), list(transforms[first:]), seed
        self.eval = [_eval_form(t) for t in transforms]

    def apply_fixed(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic head, once over the whole (N, C, H, W) dataset, a chunk at a time (each image is
        computed alone, so chunks change no number)."""
        if not self.fixed:
            return x
        return torch.cat([_run(self.fixed, chunk, None) for chunk in _chunks(x)])

    def augment(self, x: torch.Tensor, epoch: int, start: int) -> torch.Tensor:
        """The rest over one batch, the ``start``-th sample of ``epoch``'s order onwards."""
        if not self.per_batch:
            return x
        g = torch.Generator().manual_seed(((self.seed * _MIX + epoch) * _MIX + start) % 2**63)
        return _run(self.per_batch, x, g)

    def apply_eval(self, x: torch.Tensor) -> torch.Tensor:
        """The held-out split: every transform, the random ones in their eval form."""
        kept = [t for t in self.eval if t is not None]
        return torch.cat([_run(kept, chunk, None) for chunk in _chunks(x)]) if kept else x


def _run(transforms: Sequence[TransformSpec], x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    for t in transforms:
        if isinstance(t, Resize):
            x = resize(x, t.size)
        elif isinstance(t, CenterCrop):
            x = center_crop(x, t.size)
        elif isinstance(t, Normalize):
            mean = torch.tensor(t.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            std = torch.tensor(t.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            x = x.sub(mean).div(std)  # torchvision's F.normalize: tensor.sub_(mean).div_(std)
        elif isinstance(t, RandomCrop):
            assert g is not None  # random transforms run per batch, with the batch's generator
            x = random_crop(x, t.size, t.padding, g)
        else:
            assert g is not None
            flip = (torch.rand(x.shape[0], generator=g) < t.p).to(x.device)  # (B,)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


def resize(x: torch.Tensor, size: Size) -> torch.Tensor:
    """torchvision's tensor ``Resize``: bilinear, ``align_corners=False``, antialiased; a no-op at the same size."""
    h, w = x.shape[-2:]
    th, tw = _resized(h, w, size)
    if (th, tw) == (h, w):
        return x
    return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)


def center_crop(x: torch.Tensor, size: Size) -> torch.Tensor:
    """torchvision's ``CenterCrop``: zeros around an image smaller than the crop, then the middle."""
    h, w = x.shape[-2:]
    th, tw = _pair(size)
    if th > h or tw > w:
        left, top = (tw - w) // 2 if tw > w else 0, (th - h) // 2 if th > h else 0
        right, bottom = (tw - w + 1) // 2 if tw > w else 0, (th - h + 1) // 2 if th > h else 0
        x = F.pad(x, (left, right, top, bottom))
        h, w = x.shape[-2:]
    top, left = round((h - th) / 2.0), round((w - tw) / 2.0)  # torchvision's int(round(...)), half to even
    return x[..., top : top + th, left : left + tw]


def random_crop(x: torch.Tensor, size: Size, padding: int, g: torch.Generator) -> torch.Tensor:
    """Each sample cropped at its own place, drawn as torchvision draws it (top, then left)."""
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))  # zeros, torchvision's default fill
    h, w = x.shape[-2:]
    th, tw = _pair(size)
    tops = torch.randint(0, h - th + 1, (x.shape[0],), generator=g).tolist()
    lefts = torch.randint(0, w - tw + 1, (x.shape[0],), generator=g).tolist()
    return torch.stack([x[i, :, t : t + th, s : s + tw] for i, (t, s) in enumerate(zip(tops, lefts, strict=True))])


def _eval_form(t: TransformSpec) -> TransformSpec | None:
    if isinstance(t, RandomCrop):
        return CenterCrop(type="center_crop", size=t.size)
    if isinstance(t, RandomHorizontalFlip):
        return None
    return t


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def _resized(h: int, w: int, size: Size) -> tuple[int, int]:
    """torchvision's output size: [h, w] as given; one number is the shorter edge, the aspect ratio kept."""
    if not isinstance(size, int):
        return size[0], size[1]
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    return (new_long, size) if w <= h else (size, new_long)


def _chunks(x: torch.Tensor, size: int = 1024) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, x.shape[0], size)]
