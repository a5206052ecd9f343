"""WebDataset shards uploaded as application/x-tar: samples grouped by key in the shard's order, labelled by
their .cls files, decoded as an image folder's images are; a sample without its image or class is a 422."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from models.data.formats import decode_upload, inspect_upload
from models.errors import InvalidInput


def _shard(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _inspect(blob: bytes) -> dict:
    return inspect_upload(blob, "application/x-tar", label="label", features=None, max_bytes=10**8, max_elements=10**8)


def test_a_shard_is_samples_by_key_in_its_order() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(3)]
    blob = _shard(
        [
            ("s/000002.png", _png(images[0])),
            ("s/000002.cls", b"2\n"),
            ("s/000002.json", b"{}"),  # other parts of a sample are ignored
            ("s/000001.cls", b"0"),
            ("s/000001.png", _png(images[1])),
            ("s/000003.seg.png", _png(images[2])),  # the key ends at the first dot: "000003"
            ("s/000003.cls", b"1"),
        ]
    )
    meta = _inspect(blob)
    assert meta["format"] == "webdataset" and meta["num_samples"] == 3 and meta["shape"] == [3, 5, 4]
    assert meta["classes"] == ["0", "1", "2"]
    got = decode_upload(blob, meta["decode"])
    assert got["targets"].tolist() == [2, 0, 1]
    expected = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.float32).div(255)
    assert torch.equal(got["inputs"], expected)


def test_a_sample_without_its_image_or_class_is_refused() -> None:
    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    with pytest.raises(InvalidInput, match=r"sample 'b' .* has \.cls"):
        _inspect(_shard([("a.png", _png(pixels)), ("a.cls", b"0"), ("b.cls", b"1")]))
    with pytest.raises(InvalidInput, match="holds 'cat'"):
        _inspect(_shard([("a.png", _png(pixels)), ("a.cls", b"cat")]))
