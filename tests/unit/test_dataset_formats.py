"""Image folders and Parquet tables: decoded as torchvision's ImageFolder + ToTensor and pyarrow give them,
and hostile archives refused with a 4xx naming the member at fault."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gradserve.dataset_files import folder_tar
from models.data.formats import decode_upload, inspect_upload
from models.errors import GradserveError, InvalidInput, PayloadTooLarge

TAR, ZIP, PARQUET = "application/x-tar", "application/zip", "application/vnd.apache.parquet"


def _inspect(blob: bytes, kind: str, label: str = "label", features: list[str] | None = None) -> dict:
    return inspect_upload(blob, kind, label=label, features=features, max_bytes=10**8, max_elements=10**7)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _folder(root: Path) -> dict[str, np.ndarray]:
    """Two classes, one image in a nested folder, one grayscale, one JPEG, and files ImageFolder skips."""
    rng = np.random.default_rng(0)
    images = {
        "dog/b.png": rng.integers(0, 256, (4, 5, 3), dtype=np.uint8),
        "dog/a.png": rng.integers(0, 256, (4, 5, 3), dtype=np.uint8),
        "cat/z/1.png": rng.integers(0, 256, (4, 5), dtype=np.uint8),  # grayscale: RGB with three equal planes
        "cat/2.png": np.array([[[255, 0, 51]] * 5] * 4, dtype=np.uint8),
    }
    for rel, pixels in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png(pixels))
    Image.fromarray(images["dog/a.png"]).save(root / "dog" / "c.jpg", format="JPEG")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0")
    return images


def test_image_folder_decodes_as_image_folder_and_to_tensor(tmp_path: Path) -> None:
    images = _folder(tmp_path / "pets")
    blob = folder_tar(tmp_path / "pets")
    meta = _inspect(blob, TAR)
    assert meta["classes"] == ["cat", "dog"] and meta["shape"] == [3, 4, 5] and meta["num_samples"] == 5
    data = decode_upload(blob, meta["decode"])
    x, y = data["inputs"], data["targets"]
    assert x.dtype == torch.float32 and list(x.shape) == [5, 3, 4, 5]
    # ImageFolder's order: by class, then by sorted folder (cat/ before cat/z/), then by sorted name.
    assert y.tolist() == [0, 0, 1, 1, 1]
    # ToTensor by hand: 255 -> 1, 0 -> 0, 51 -> 51/255 = 0.2 (float32's nearest).
    assert x[0, :, 0, 0].tolist() == [1.0, 0.0, torch.tensor(0.2).item()]
    gray = torch.from_numpy(images["cat/z/1.png"]).to(torch.float32) / 255
    assert all(torch.equal(x[1, c], gray) for c in range(3))
    rgb = torch.from_numpy(images["dog/a.png"]).permute(2, 0, 1).to(torch.float32) / 255  # (C, H, W)
    assert torch.equal(x[2], rgb)
    jpeg = np.asarray(Image.open(tmp_path / "pets" / "dog" / "c.jpg").convert("RGB"))
    assert torch.equal(x[4], torch.from_numpy(jpeg.copy()).permute(2, 0, 1).to(torch.float32) / 255)
    # The same folder as a zip, its root one folder down, decodes to the same tensors.
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for member in tar.getmembers():
            z.writestr("export/pets/" + member.name, tar.extractfile(member).read())  # type: ignore[union-attr]
    zipped = decode_upload(buf.getvalue(), _inspect(buf.getvalue(), ZIP)["decode"])
    assert torch.equal(zipped["inputs"], x) and torch.equal(zipped["targets"], y)


def test_table_stacks_numeric_columns_in_order(tmp_path: Path) -> None:
    table = pa.table(
        {
            "b": pa.array([1, 2, 3], pa.int16()),
            "name": ["x", "y", "z"],
            "a": pa.array([0.5, 1.5, 2.5], pa.float64()),
            "label": ["dog", "cat", "dog"],
            "score": pa.array([0.25, 0.5, 1.0], pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    blob = (tmp_path / "t.parquet").read_bytes()
    meta = _inspect(blob, PARQUET)
    assert meta["features"] == ["b", "a", "score"] and meta["classes"] == ["cat", "dog"] and meta["shape"] == [3]
    data = decode_upload(blob, meta["decode"])
    assert torch.equal(data["inputs"], torch.tensor([[1, 0.5, 0.25], [2, 1.5, 0.5], [3, 2.5, 1.0]]))
    assert data["targets"].tolist() == [1, 0, 1]
    # A float label is a value to regress, (N, 1); features named keep the order given.
    data = decode_upload(blob, _inspect(blob, PARQUET, label="score", features=["a", "b"])["decode"])
    assert torch.equal(data["inputs"], torch.tensor([[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]]))
    assert torch.equal(data["targets"], torch.tensor([[0.25], [0.5], [1.0]]))
    with pytest.raises(InvalidInput, match="label column 'y' is not in the table; its columns are b, name"):
        _inspect(blob, PARQUET, label="y")
    with pytest.raises(InvalidInput, match="feature column 'name' has type string; features must be numeric"):
        _inspect(blob, PARQUET, features=["a", "name"])
    pq.write_table(pa.table({"x": [1.0, None], "label": [0, 1]}), tmp_path / "n.parquet")
    with pytest.raises(InvalidInput, match=r"column 'x' has 1 empty values \(the first at row 1\)"):
        _inspect((tmp_path / "n.parquet").read_bytes(), PARQUET)


def _tar(members: list[tarfile.TarInfo], data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isfile() else None)
    return buf.getvalue()


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    return info


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares a size and that holds next to no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


GOOD = _png(np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize(
    ("blob", "error", "message"),
    [
        (_tar([_member("../cat/1.png", GOOD)], GOOD), InvalidInput, r"member '\.\./cat/1\.png' points outside"),
        (_tar([_member("/cat/1.png", GOOD)], GOOD), InvalidInput, r"member '/cat/1\.png' points outside"),
        (
            _tar([_member("cat/1.png", kind=tarfile.SYMTYPE, link="/etc/passwd")]),
            InvalidInput,
            r"member 'cat/1\.png' is a link to '/etc/passwd'",
        ),
        (_tar([_member("cat/1.png", GOOD[:40])], GOOD[:40]), InvalidInput, r"member 'cat/1\.png' is not a readable"),
        (
            _tar([_member("cat/1.png", _png_declaring(100_000, 100_000))], _png_declaring(100_000, 100_000)),
            PayloadTooLarge,
            r"member 'cat/1\.png' declares too many pixels",
        ),
        (_tar([_member("1.png", GOOD)], GOOD), InvalidInput, r"no class folders.*found images at its root: 1\.png"),
        (b"not a tar at all" * 64, InvalidInput, "not a readable tar file"),
    ],
    ids=["traversal", "absolute", "symlink", "corrupt-png", "pixel-bomb", "no-classes", "not-tar"],
)
def test_hostile_tar_is_refused_naming_the_member(blob: bytes, error: type[GradserveError], message: str) -> None:
    with pytest.raises(error, match=message):
        _inspect(blob, TAR)


def test_hostile_zip_is_refused_naming_the_member() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("cat/1.png", b"\0" * 20_000_000)  # 20 MB of zeros, a few KB compressed
    with pytest.raises(PayloadTooLarge, match="the zip inflates to 20,000,000 bytes; the limit is 1,000,000"):
        inspect_upload(buf.getvalue(), ZIP, label="label", features=None, max_bytes=10**6, max_elements=10**7)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        link = zipfile.ZipInfo("cat/1.png")
        link.external_attr = 0o120777 << 16  # S_IFLNK: how zip tools store a symbolic link
        z.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidInput, match=r"member 'cat/1\.png' is a symbolic link"):
        _inspect(buf.getvalue(), ZIP)
    mixed = io.BytesIO()
    with zipfile.ZipFile(mixed, "w") as z:
        z.writestr("cat/1.png", GOOD)
        z.writestr("dog/2.png", _png(np.zeros((3, 2, 3), np.uint8)))
    with pytest.raises(InvalidInput, match=r"member 'dog/2\.png' is 2x3 but 'cat/1\.png' is 2x2"):
        _inspect(mixed.getvalue(), ZIP)


def test_transforms_compute_as_torchvision_and_draw_by_the_batch_place() -> None:
    from models.data.transforms import Pipeline, center_crop, output_shape, parse, resize

    # Antialiased bilinear 2x2 -> 1x1 averages the four pixels; the shorter edge sets the scale.
    assert resize(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), 1).item() == 2.5
    assert list(resize(torch.zeros(1, 3, 4, 6), 2).shape) == [1, 3, 2, 3]
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    assert center_crop(grid, 1).item() == 10.0  # top = left = round(1.5) = 2, as torchvision rounds
    assert center_crop(grid, [2, 4]).flatten().tolist() == list(range(4, 12))
    specs = parse(
        [
            {"type": "normalize", "mean": [0.5], "std": [0.25]},
            {"type": "random_crop", "size": 3, "padding": 1},
            {"type": "random_horizontal_flip", "p": 1.0},
        ]
    )
    assert output_shape([1, 4, 4], specs, ("t",)) == [1, 3, 3]
    pipe = Pipeline(specs, seed=7)
    assert [t.type for t in pipe.fixed] == ["normalize"] and len(pipe.per_batch) == 2
    x = pipe.apply_fixed(grid.repeat(8, 1, 1, 1) / 16)
    assert torch.equal(x[0], (grid[0] / 16 - 0.5) / 0.25)
    a, b = pipe.augment(x, 0, 8), pipe.augment(x, 0, 8)
    assert torch.equal(a, b) and not torch.equal(a, pipe.augment(x, 0, 16)) and list(a.shape) == [8, 1, 3, 3]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for crop, image in zip(a, padded, strict=True):  # each a flipped 3x3 window of its padded image
        windows = image.unfold(1, 3, 1).unfold(2, 3, 1).reshape(-1, 3, 3)  # (9, 3, 3)
        assert any(torch.equal(crop[0].flip(-1), w) for w in windows)
    # A held-out split: the raw images through every transform, a centre crop for the random one, no flip.
    assert torch.equal(pipe.apply_eval(grid / 16), x[:1, :, 0:3, 0:3])  # top = left = round(0.5) = 0
    with pytest.raises(InvalidInput, match="random_crop to 9x9 does not fit images of 4x4 padded by 1") as err:
        output_shape([1, 4, 4], parse([{"type": "random_crop", "size": 9, "padding": 1}]), ("t",))
    assert err.value.loc == ("t", 0, "size")
    with pytest.raises(InvalidInput, match="normalize has 3 means and 3 stds; the images have 1 channels"):
        output_shape([1, 4, 4], parse([{"type": "normalize", "mean": [0, 0, 0], "std": [1, 1, 1]}]), ("t",))
