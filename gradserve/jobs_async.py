"""The async twin of ``gradserve.jobs``: the same request bodies (built there), awaited."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from torch import nn

from gradserve import dataset_files
from gradserve.errors import JobFailed
from gradserve.jobs import (
    POLL_S,
    Dataset,
    dataset_file,
    fork_changes,
    fork_step,
    job_request,
    local_module,
    metrics_frame,
)
from gradserve.protocol import codec
from gradserve.protocol.states import JOB_STOPPED

if TYPE_CHECKING:
    from gradserve.transport import AsyncTransport


class AsyncJob:
    def __init__(self, client: AsyncTransport, job_id: str, module: nn.Module | None = None) -> None:
        self._client = client
        self.id = job_id
        self.module = module
        self.last: dict[str, Any] = {}

    async def refresh(self) -> dict[str, Any]:
        self.last = (await self._client.request("GET", f"/v1/jobs/{self.id}")).json()
        return self.last

    async def wait(self, timeout: float | None = None, *, check: bool = True) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (doc := await self.refresh())["status"] not in JOB_STOPPED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {doc['status']} after {timeout} s")
            await asyncio.sleep(POLL_S)
        if check and doc["status"] not in {"succeeded", "paused"}:
            raise JobFailed(doc)
        return doc

    async def metrics(self, since: int | None = None, *, frame: bool = False) -> Any:
        params = {} if since is None else {"since": since}
        columns = (await self._client.request("GET", f"/v1/jobs/{self.id}/metrics", params=params)).json()
        return metrics_frame(columns) if frame else columns

    async def checkpoint(self, step: int | None = None) -> dict[str, torch.Tensor]:
        params = {} if step is None else {"step": step}
        blob = (await self._client.request("GET", f"/v1/jobs/{self.id}/checkpoint", params=params)).content
        return safetensors.torch.load(blob)

    async def to_local(self, module: nn.Module | None = None) -> nn.Module:
        doc = self.last if "request" in self.last else await self.refresh()
        local = local_module(doc, module or self.module, None)
        local.load_state_dict(await self.checkpoint())
        return local

    async def cancel(self) -> dict[str, Any]:
        cancelled: dict[str, Any] = (await self._client.request("POST", f"/v1/jobs/{self.id}/cancel")).json()
        return cancelled

    async def fork(self, step: int | None = None, **changes: Any) -> AsyncJob:
        """A new job from checkpoint ``step`` (default: the last) with ``changes``; see ``Job.fork``."""
        body = {"step": fork_step(await self.refresh(), step), "changes": fork_changes(changes)}
        answer = (await self._client.request("POST", f"/v1/jobs/{self.id}/fork", json=body)).json()
        fork = AsyncJob(self._client, answer["id"], self.module)
        await fork.refresh()  # its record (status, parent), as jobs.get gives it
        return fork


class AsyncJobs:
    def __init__(self, client: AsyncTransport) -> None:
        self._client = client

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncJob:
        """Queue a training job; the arguments of ``Client.jobs.submit``."""
        body, module = job_request(*args, **kwargs)
        answer = (await self._client.request("POST", "/v1/jobs", json=body)).json()
        job = AsyncJob(self._client, answer["id"], module)
        job.last = {"id": job.id, "status": "queued", "request": body}
        return job

    async def get(self, job_id: str) -> AsyncJob:
        job = AsyncJob(self._client, job_id)
        await job.refresh()
        return job

    async def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        data: list[dict[str, Any]] = (await self._client.request("GET", "/v1/jobs", params=params)).json()["data"]
        return data


class AsyncDatasets:
    def __init__(self, client: AsyncTransport) -> None:
        self._client = client

    async def upload(self, inputs: Any, targets: Any, test_inputs: Any = None, test_targets: Any = None) -> Dataset:
        blob = dataset_file(
            {"inputs": inputs, "targets": targets, "test_inputs": test_inputs, "test_targets": test_targets}
        )
        headers = {"Content-Type": codec.OCTET}
        meta = (await self._client.request("POST", "/v1/datasets", content=blob, headers=headers)).json()
        return Dataset.of(meta)

    async def upload_file(
        self, path: str | os.PathLike[str], *, label: str | None = None, features: list[str] | None = None
    ) -> Dataset:
        """``Datasets.upload_file``'s twin."""
        request = dataset_files.file_request(path, label, features)
        request["content"] = dataset_files.file_chunks_async(Path(path))
        return Dataset.of((await self._client.request("POST", "/v1/datasets", **request)).json())

    async def upload_folder(self, path: str | os.PathLike[str]) -> Dataset:
        """``Datasets.upload_folder``'s twin."""
        blob = dataset_files.folder_tar(path)
        headers = {"Content-Type": "application/x-tar"}
        return Dataset.of((await self._client.request("POST", "/v1/datasets", content=blob, headers=headers)).json())

    async def register(
        self,
        url: str,
        *,
        format: str | None = None,
        label: str | None = None,
        features: list[str] | None = None,
    ) -> Dataset:
        """``Datasets.register``'s twin."""
        body = dataset_files.reference_body(url, format, label, features)
        return Dataset.of((await self._client.request("POST", "/v1/datasets/references", json=body)).json())

    async def get(self, dataset_id: str) -> Dataset:
        return Dataset.of((await self._client.request("GET", f"/v1/datasets/{dataset_id}")).json())

    async def list(self, limit: int = 50, offset: int = 0) -> list[Dataset]:
        params = {"limit": limit, "offset": offset}
        answer = (await self._client.request("GET", "/v1/datasets", params=params)).json()
        return [Dataset.of(m) for m in answer["data"]]


class AsyncSessions:
    def __init__(self, client: AsyncTransport) -> None:
        self._client = client

    async def list(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        params = {"limit": limit, "offset": offset}
        data: list[dict[str, Any]] = (await self._client.request("GET", "/v1/sessions", params=params)).json()["data"]
        return data

    async def delete(self, session_id: str) -> None:
        await self._client.request("DELETE", f"/v1/sessions/{session_id}")
