"""An image folder and a Parquet table from upload to trained model: the jobs equal a local loop over the
same decoded tensors bit for bit, random crops and flips included; a hostile archive is a 422 naming it."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load as st_load
from torch import nn

import gradserve
from gradserve.dataset_files import folder_tar
from models.data.formats import decode_upload
from models.data.transforms import Pipeline, parse
from tests.conftest import API_KEYS, Service, detail_of
from tests.integration.jobs_helpers import submit, wait_final

TRANSFORMS = [
    {"type": "random_crop", "size": 6, "padding": 1},
    {"type": "random_horizontal_flip"},
    {"type": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
]


@pytest.fixture
def gs(service: Service) -> Iterator[gradserve.Client]:
    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:
        yield c


class Linear(nn.Module):
    """The jobs' network written by hand: flatten, then one Linear named ``fc``."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _job(dataset: dict, input_shape: list[int], features: int, classes: int, steps: int) -> dict:
    layers = [{"type": "flatten", "start_dim": 1}, {"name": "fc", "type": "Linear", "in_features": features}]
    layers[1]["out_features"] = classes
    return {
        "network": {"name": "Linear", "input_shape": input_shape, "layers": layers},
        "dataset": dataset,
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9},
        "batch_size": 4,
        "steps": steps,
        "seed": 5,
    }


def _local(x: torch.Tensor, y: torch.Tensor, net: nn.Module, steps: int, pipe: Pipeline | None) -> dict:
    """The engine's loop written out: a seeded permutation per epoch, batches in order, transforms per batch."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    shuffler, done, epoch = torch.Generator().manual_seed(5), 0, 0
    while done < steps:
        for start, idx in zip(range(0, len(y), 4), torch.randperm(len(y), generator=shuffler).split(4), strict=True):
            if done == steps:
                break
            xb = x[idx] if pipe is None else pipe.augment(x[idx], epoch, start)
            F.cross_entropy(net(xb), y[idx]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
        epoch += 1
    return net.state_dict()


def _pets(root: Path) -> None:
    rng = np.random.default_rng(3)
    for i in range(12):
        kind = ("cat", "dog", "owl")[i % 3]
        (root / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / kind / f"{i}.png")


def test_image_folder_and_table_train_as_a_local_loop(
    client: httpx.Client, gs: gradserve.Client, tmp_path: Path
) -> None:
    _pets(tmp_path / "pets")
    images = gs.datasets.upload_folder(tmp_path / "pets")
    meta = client.get(f"/v1/datasets/{images.id}").json()
    assert meta["format"] == "image_folder" and meta["archive"] == "tar"
    assert meta["classes"] == ["cat", "dog", "owl"] and meta["shape"] == [3, 6, 6] and meta["num_samples"] == 12
    rng = np.random.default_rng(4)
    table = pa.table(
        {
            "id": [f"row{i}" for i in range(20)],  # not numeric: left out of the features
            "height": rng.normal(size=20),
            "label": rng.integers(0, 2, 20),
            "width": rng.normal(size=20).astype(np.float32),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    rows = gs.datasets.upload_file(tmp_path / "t.parquet")
    assert client.get(f"/v1/datasets/{rows.id}").json()["features"] == ["height", "width"]
    # Both jobs queue before either is waited on: the workers take them side by side.
    image_job = submit(
        client, _job({"source": "upload", "id": images.id, "transforms": TRANSFORMS}, [3, 6, 6], 108, 3, 7)
    )
    table_job = submit(client, _job({"source": "upload", "id": rows.id}, [2], 2, 2, 6))

    stored = decode_upload(folder_tar(tmp_path / "pets"), {"format": "image_folder", "archive": "tar", "size": [6, 6]})
    pipe = Pipeline(parse(TRANSFORMS), seed=5)
    torch.manual_seed(5)
    local_images = _local(pipe.apply_fixed(stored["inputs"]), stored["targets"], Linear(108, 3), 7, pipe)
    columns = torch.tensor(np.stack([table["height"].to_numpy(), table["width"].to_numpy()], 1), dtype=torch.float32)
    torch.manual_seed(5)
    local_table = _local(columns, torch.from_numpy(table["label"].to_numpy().copy()), Linear(2, 2), 6, None)
    for job_id, local in ((image_job, local_images), (table_job, local_table)):
        done = wait_final(client, job_id)
        assert done["status"] == "succeeded", done.get("error")
        remote = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
        assert remote.keys() == local.keys()
        for name, tensor in local.items():
            assert torch.equal(remote[name], tensor), (job_id, name)


def test_bad_archives_and_columns_are_422s_naming_them(client: httpx.Client) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../cat/1.png")
        tar.addfile(info, io.BytesIO(b""))
    response = client.post("/v1/datasets", content=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
    assert response.status_code == 422, response.text
    assert "member '../cat/1.png' points outside the archive" in detail_of(response)["msg"]
    out = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [0, 1]}), out)
    kind = {"Content-Type": "application/vnd.apache.parquet"}
    response = client.post("/v1/datasets", content=out.getvalue(), headers=kind)
    assert response.status_code == 422 and detail_of(response)["loc"] == ["query", "label"]
    assert "the label column 'label' is not in the table; its columns are x, y" in detail_of(response)["msg"]
    response = client.post("/v1/datasets?label=y&features=x,z", content=out.getvalue(), headers=kind)
    assert response.status_code == 422 and "feature column 'z' is not in the table" in detail_of(response)["msg"]
    response = client.post("/v1/datasets?label=y", content=b"x", headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 422 and detail_of(response)["loc"] == ["query", "label"]
