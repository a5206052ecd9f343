"""Jobs, datasets and sessions from Python: ``client.jobs.submit(...)`` gives a ``Job`` to wait on, watch,
read metrics and checkpoints from, or cancel. The request bodies are built by pure functions shared
with the async twin (``gradserve.jobs_async``)."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import safetensors.torch
import torch
from torch import nn

from gradserve import dataset_files
from gradserve.errors import GradserveError, JobFailed
from gradserve.export_form import catalogue_spec, export_module, named_inputs
from gradserve.fx_spec import optimizer_spec, to_spec
from gradserve.protocol import codec
from gradserve.protocol.sse import parse_events
from gradserve.protocol.states import JOB_STOPPED
from gradserve.remote import RemoteNet
from gradserve.transport import check

if TYPE_CHECKING:
    from gradserve.transport import Transport

POLL_S = 0.25
RECONNECTS = 20  # a watch outlives this many dropped event streams


KEEP: Any = object()  # an argument left out, where None means something (no breakpoints)


@dataclass(frozen=True)
class StepBatch:
    """The batch a job took at ``step``, as a session opened there holds it."""

    step: int
    inputs: torch.Tensor
    targets: torch.Tensor


@dataclass(frozen=True)
class Dataset:
    """An uploaded dataset: pass it as ``dataset=`` to ``jobs.submit``."""

    id: str
    num_samples: int
    arrays: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"source": "upload", "id": self.id}

    @property
    def input_shape(self) -> list[int]:
        return list(self.arrays["inputs"]["shape"][1:])

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Dataset:
        """From the service's description (``GET /v1/datasets/{id}``, or the upload's answer)."""
        return cls(meta["id"], meta["num_samples"], meta["arrays"])


DatasetArg = Dataset | dict[str, Any] | str  # an upload, a dataset spec, or an uploaded dataset's id


def dataset_spec(dataset: DatasetArg) -> dict[str, Any]:
    """A dataset argument as the request's ``dataset``: an id (``"data_..."``) is the uploaded dataset it names."""
    if isinstance(dataset, Dataset):
        return dataset.spec()
    if isinstance(dataset, str):
        return {"source": "upload", "id": dataset}
    if not isinstance(dataset, dict):
        kind = type(dataset).__name__
        raise TypeError(f"dataset must be a Dataset, an uploaded dataset's id or a dataset spec (dict), not {kind}")
    return dict(dataset)


# --- request bodies ----------------------------------------------------------------------------------------------


def dataset_file(arrays: dict[str, Any]) -> bytes:
    """Tensors or numpy arrays (None left out) as the safetensors file ``POST /v1/datasets`` takes."""
    return codec.to_safetensors({k: torch.as_tensor(v) for k, v in arrays.items() if v is not None})


def job_body(
    network: nn.Module | dict[str, Any] | str,
    dataset: DatasetArg,
    criterion: nn.Module | dict[str, Any] | str,
    optimizer: dict[str, Any] | str | type[torch.optim.Optimizer],
    *,
    input_shape: list[int] | None,
    optimizer_args: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body. ``network``: a module (traced), a spec, or a network id."""

    body: dict[str, Any] = {"dataset": dataset_spec(dataset), "criterion": criterion_spec(criterion)}
    body["optimizer"] = optimizer_spec(optimizer, optimizer_args)
    if isinstance(network, str):
        body["network_id"] = network
    else:
        spec = to_spec(network) if isinstance(network, nn.Module) else dict(network)
        shape = input_shape or spec.get("input_shape") or _dataset_input_shape(dataset)
        if shape is None:
            raise ValueError("give input_shape=[...] (one sample's shape): the dataset does not say it")
        body["network"] = {**spec, "input_shape": list(shape)}
    return {**body, **extra}


def job_request(
    network: nn.Module | dict[str, Any] | str,
    dataset: DatasetArg,
    criterion: nn.Module | dict[str, Any] | str = "CrossEntropyLoss",
    optimizer: dict[str, Any] | str | type[torch.optim.Optimizer] = "SGD",
    *,
    input_shape: list[int] | None = None,
    lr: float | None = None,
    **fields: Any,
) -> tuple[dict[str, Any], nn.Module | None]:
    """``jobs.submit``'s arguments as the request body, and the module to load trained weights into."""
    args = {} if lr is None else {"lr": lr}
    body = job_body(network, dataset, criterion, optimizer, input_shape=input_shape, optimizer_args=args, extra=fields)
    return body, network if isinstance(network, nn.Module) else None


def _dataset_input_shape(dataset: DatasetArg) -> list[int] | None:
    if isinstance(dataset, Dataset):
        return dataset.input_shape
    if isinstance(dataset, str):  # Jobs.submit looks an id up first; the async twin sends it as it is
        return None
    if dataset.get("source") == "digits":
        size = dataset.get("image_size", 8)
        return [1, size, size]
    if dataset.get("source") == "random":
        return dataset.get("input_shape")
    if dataset.get("source") == "inline":
        return list(torch.as_tensor(dataset["inputs"]).shape[1:])
    return None


def _dataset_dtype(dataset: Dataset | dict[str, Any]) -> torch.dtype:
    """The inputs' dtype (token ids are int64), float32 when the dataset does not say."""
    if isinstance(dataset, Dataset):
        return torch.int64 if "int" in str(dataset.arrays["inputs"].get("dtype", "")) else torch.float32
    if dataset.get("source") == "inline":
        return torch.as_tensor(dataset["inputs"]).dtype
    return torch.float32


def criterion_spec(criterion: nn.Module | dict[str, Any] | str) -> dict[str, Any]:
    """``nn.CrossEntropyLoss()``, ``"CrossEntropyLoss"`` or a ready dict, as our criterion spec."""
    if isinstance(criterion, str):
        return {"type": criterion}
    if isinstance(criterion, dict):
        return dict(criterion)
    spec: dict[str, Any] = {"type": type(criterion).__name__, "reduction": getattr(criterion, "reduction", "mean")}
    for name in ("ignore_index", "label_smoothing", "beta", "delta", "log_target"):
        if hasattr(criterion, name):
            spec[name] = getattr(criterion, name)
    return spec


def fork_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """``job.fork``'s keyword changes as the fork request's ``changes``: an optimizer given as a class or
    name (with ``lr`` beside it) becomes its spec, an uploaded ``Dataset`` its reference; ``lr_scheduler=None``
    stays, since it removes the parent's scheduler."""

    out = dict(changes)
    if out.get("optimizer") is not None:
        if isinstance(out["optimizer"], dict) and "lr" in out["optimizer"] and "lr" in out:
            raise ValueError("give lr once: in the optimizer's spec or as lr=, not both")
        args = {"lr": out.pop("lr")} if "lr" in out else {}
        out["optimizer"] = optimizer_spec(out["optimizer"], args)
    if out.get("dataset") is not None:
        out["dataset"] = dataset_spec(out["dataset"])
    return out


def fork_step(doc: dict[str, Any], step: int | None) -> int:
    """The step to fork at: the one asked for, else the job's last checkpoint."""
    if step is not None:
        return step
    if not doc.get("checkpoint_step"):
        raise GradserveError(f"job {doc['id']} has no checkpoint yet to fork from (it is {doc['status']})")
    return int(doc["checkpoint_step"])


def metrics_frame(columns: dict[str, Any]) -> Any:
    """Per-step columns as a pandas DataFrame indexed by step (pandas is optional)."""
    try:
        import pandas as pd
    except ImportError as err:
        raise ImportError(
            "metrics(frame=True) needs pandas, which the client does not install: pip install 'gradserve[pandas]'"
        ) from err

    per_step = {k: v for k, v in columns.items() if isinstance(v, list) and len(v) == len(columns["step"])}
    return pd.DataFrame(per_step).set_index("step")


def local_module(job: dict[str, Any], module: nn.Module | None, network: dict[str, Any] | None) -> nn.Module:
    """A module to load a job's weights into: a copy of the submitted one, else built from the spec."""
    if module is not None:
        return copy.deepcopy(module)
    from models.nn.build import build_network  # the server's builder, only when no module was given
    from models.spec.network import NetworkSpec

    spec = network or (job.get("request") or {}).get("network")
    if spec is None:
        raise ValueError("the job's network spec is unknown here; pass the module: job.to_local(module)")
    return build_network(NetworkSpec.model_validate(spec))


# --- sync resources ----------------------------------------------------------------------------------------------


class Job:
    """A training job on the service."""

    def __init__(self, client: Transport, job_id: str, module: nn.Module | None = None) -> None:
        self._client = client
        self.id = job_id
        self.module = module
        self.last: dict[str, Any] = {}

    def refresh(self) -> dict[str, Any]:
        """The job's status and progress (``GET /v1/jobs/{id}``)."""
        self.last = self._client.request("GET", f"/v1/jobs/{self.id}").json()
        return self.last

    @property
    def status(self) -> str:
        return str(self.refresh()["status"])

    def wait(self, timeout: float | None = None, *, check: bool = True) -> dict[str, Any]:
        """Block until the job ends or a breakpoint pauses it (see ``doc["breakpoint"]``); ``JobFailed`` when it
        failed or was cancelled (unless ``check=False``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (doc := self.refresh())["status"] not in JOB_STOPPED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {doc['status']} after {timeout} s")
            time.sleep(POLL_S)
        if check and doc["status"] not in {"succeeded", "paused"}:
            raise JobFailed(doc)
        return doc

    def session(self, step: int | None = None, *, device: str = "auto") -> JobSession:
        """A live session holding the job's state before ``step`` (default: the step a breakpoint paused it
        on), with that step's batch as ``net.batch.inputs`` and ``net.batch.targets``: forward, the job's
        criterion and backward give the job's loss and gradients at that step, bit for bit."""
        body: dict[str, Any] = {"device": device} if step is None else {"device": device, "step": step}
        public = self._client.session_call("POST", f"/v1/jobs/{self.id}/sessions", json=body).json()
        net = JobSession.attach(self._client, public)
        blob = self._client.request("GET", f"/v1/sessions/{net.id}/batch", params={"format": "safetensors"}).content
        tensors = safetensors.torch.load(blob)
        net.batch = StepBatch(public["job"]["step"], tensors["inputs"], tensors["targets"])
        return net

    def resume(self, *, lr: float | None = None, skip_batch: bool = False, breakpoints: Any = KEEP) -> dict[str, Any]:
        """Queue a paused job again from the step it paused on: as it was, with a new ``lr``, without that
        step's batch (``skip_batch``), or with other ``breakpoints`` from here on (a dict of rules, or None)."""
        changes: dict[str, Any] = {} if lr is None else {"lr": lr}
        if skip_batch:
            changes["skip_batch"] = True
        if breakpoints is not KEEP:
            changes["breakpoints"] = breakpoints
        return dict(self._client.request("POST", f"/v1/jobs/{self.id}/resume", json={"changes": changes}).json())

    def watch(self, console: Any = None) -> dict[str, Any]:
        """Follow the job live (a progress bar on a terminal, plain lines otherwise); returns its final state."""
        from gradserve.progress import watch

        return watch(self, console)

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as ``(event, data)`` pairs, ending with the final state; a dropped
        connection is resumed from the last event seen (``Last-Event-ID``), so nothing is lost or repeated."""
        last = "0-0"
        for _ in range(RECONNECTS):
            try:
                headers = {"Last-Event-ID": last}
                path = f"/v1/jobs/{self.id}/events"
                with self._client.http.stream("GET", path, headers=headers, timeout=None) as response:
                    check(response)
                    for event in parse_events(response.iter_lines()):
                        last = event.id or last
                        yield event.event, event.json()
                return  # the service ends the stream at the job's latest stopped state
            except (httpx.RemoteProtocolError, httpx.ReadError):
                time.sleep(POLL_S)

    def metrics(self, since: int | None = None, *, frame: bool = False) -> Any:
        """Per-step columns (``step``, ``loss``, ``lr``, ... and ``eval``); ``frame=True``: a pandas DataFrame."""
        params = {} if since is None else {"since": since}
        columns = self._client.request("GET", f"/v1/jobs/{self.id}/metrics", params=params).json()
        return metrics_frame(columns) if frame else columns

    def checkpoint(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The job's weights (the last checkpoint, or ``step``'s) as a state_dict."""
        return safetensors.torch.load(self.checkpoint_bytes(step))

    def checkpoint_bytes(self, step: int | None = None) -> bytes:
        params = {} if step is None else {"step": step}
        return self._client.request("GET", f"/v1/jobs/{self.id}/checkpoint", params=params).content

    def to_local(self, module: nn.Module | None = None) -> nn.Module:
        """An ordinary ``nn.Module`` holding the job's trained weights."""
        doc = self.last if "request" in self.last else self.refresh()
        local = local_module(doc, module or self.module, None)
        local.load_state_dict(self.checkpoint())
        return local

    def cancel(self) -> dict[str, Any]:
        cancelled: dict[str, Any] = self._client.request("POST", f"/v1/jobs/{self.id}/cancel").json()
        return cancelled

    def request(self) -> dict[str, Any]:
        """The job's request as the service keeps it: a sweep's template, or a body to submit again."""
        doc = self.last if "request" in self.last else self.refresh()
        return dict(doc["request"])

    def fork(self, step: int | None = None, **changes: Any) -> Job:
        """A new job from this one's checkpoint ``step`` (default: its last) with ``changes`` (``lr``,
        ``optimizer``, ``lr_scheduler``, ``epochs``/``steps``, ``dataset``, ``clip_grad_norm``, ``name``, ``tags``).
        It keeps this job's history up to ``step``; with no changes it repeats this job's steps bit for bit."""
        body = {"step": fork_step(self.refresh(), step), "changes": fork_changes(changes)}
        answer = self._client.request("POST", f"/v1/jobs/{self.id}/fork", json=body).json()
        fork = Job(self._client, answer["id"], self.module)
        fork.refresh()  # its record (status, parent), as jobs.get gives it: printed, it says its real status
        return fork

    def __repr__(self) -> str:
        return f"Job('{self.id}', status={self.last.get('status', '?')!r})"


class JobSession(RemoteNet):
    """A session opened at a job's step (``job.session(step)``): a remote network that can go on as a job."""

    def continue_as_job(self, **changes: Any) -> Job:
        """A session opened at a job's step (``job.session(step)``) goes on as a job: from this session's
        weights and optimizer as they stand, with the job's RNG, scheduler and data order at the step, and
        ``changes`` as ``job.fork`` takes them. Left as it was opened, it repeats a fork at ``step - 1``."""
        body = {"changes": fork_changes(changes)}
        answer = self._client.request("POST", f"/v1/sessions/{self.id}/jobs", json=body).json()
        job = Job(self._client, answer["id"])
        job.refresh()
        return job


class Jobs:
    def __init__(self, client: Transport) -> None:
        self._client = client

    def submit(
        self,
        network: nn.Module | dict[str, Any] | str,
        dataset: DatasetArg,
        *args: Any,
        format: str = "auto",
        output: str | int | None = None,
        **kwargs: Any,
    ) -> Job:
        """Queue a training job: ``submit(network, dataset, criterion, optimizer, lr=..., batch_size=...,
        epochs=... or steps=..., seed=..., device=..., capture=...)``; see ``job_request``.

        A module the catalogue spec cannot express is exported (``format="export"`` forces it) on a batch of
        zeros shaped as the dataset's inputs, uploaded as a network, and the job trains that network. ``dataset``
        may be an uploaded dataset's id (``"data_..."``), looked up for its shape and dtype."""
        if isinstance(dataset, str):
            dataset = Datasets(self._client).get(dataset)
        if not isinstance(network, nn.Module):
            body, _ = job_request(network, dataset, *args, **kwargs)
            return self.submit_body(body)
        spec = catalogue_spec(network, format)
        if spec is None:
            shape = kwargs.pop("input_shape", None) or _dataset_input_shape(dataset)
            if shape is None:
                raise ValueError("give input_shape=[...] (one sample's shape): the dataset does not say it")
            example = torch.zeros((2, *shape), dtype=_dataset_dtype(dataset))
            upload = export_module(network, named_inputs(network, (example,), {}), output)
            network_id = self._client.upload_exported(upload)["id"]
            body, _ = job_request(network_id, dataset, *args, **kwargs)
        else:
            body, _ = job_request(spec, dataset, *args, **kwargs)
        return self.submit_body(body, network)

    def submit_body(self, body: dict[str, Any], module: nn.Module | None = None) -> Job:
        """Queue a job from a ready ``POST /v1/jobs`` body (what ``gradserve jobs submit FILE`` sends)."""
        job = Job(self._client, self._client.request("POST", "/v1/jobs", json=body).json()["id"], module)
        job.last = {"id": job.id, "status": "queued", "request": body}
        return job

    def get(self, job_id: str) -> Job:
        job = Job(self._client, job_id)
        job.refresh()
        return job

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The tenant's jobs, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        data: list[dict[str, Any]] = self._client.request("GET", "/v1/jobs", params=params).json()["data"]
        return data


class Datasets:
    def __init__(self, client: Transport) -> None:
        self._client = client

    def upload(self, inputs: Any, targets: Any, test_inputs: Any = None, test_targets: Any = None) -> Dataset:
        """Upload tensors or numpy arrays (one sample per row) as a dataset for jobs."""
        blob = dataset_file(
            {"inputs": inputs, "targets": targets, "test_inputs": test_inputs, "test_targets": test_targets}
        )
        meta = self._client.request("POST", "/v1/datasets", content=blob, headers={"Content-Type": codec.OCTET}).json()
        return Dataset.of(meta)

    def upload_file(
        self, path: str | os.PathLike[str], *, label: str | None = None, features: list[str] | None = None
    ) -> Dataset:
        """Upload a dataset file, its format from the suffix: .npz, .safetensors, .parquet (``label``: the label
        column, default 'label'; ``features``: the feature columns, default every other numeric one), or .tar
        and .zip (an image folder, one subfolder per class)."""
        request = dataset_files.file_request(path, label, features)
        return Dataset.of(self._client.request("POST", "/v1/datasets", **request).json())

    def upload_folder(self, path: str | os.PathLike[str]) -> Dataset:
        """Upload a directory with one subfolder per class of PNG or JPEG images (torchvision's ImageFolder)."""
        blob = dataset_files.folder_tar(path)
        headers = {"Content-Type": "application/x-tar"}
        return Dataset.of(self._client.request("POST", "/v1/datasets", content=blob, headers=headers).json())

    def register(
        self,
        url: str,
        *,
        format: str | None = None,
        label: str | None = None,
        features: list[str] | None = None,
    ) -> Dataset:
        """A dataset by reference, not copied: ``s3://bucket/path/file.parquet`` (read with your tenant's keys,
        which the operator sets) or ``file:///path`` under a directory the operator allows. The service checks
        it once now, as an upload; each job that uses it reads the URL again and fails if the file changed.
        ``format``: npz, safetensors, parquet, tar or zip (an image folder), by default from the suffix."""
        body = dataset_files.reference_body(url, format, label, features)
        return Dataset.of(self._client.request("POST", "/v1/datasets/references", json=body).json())

    def get(self, dataset_id: str) -> Dataset:
        """An uploaded dataset by its id (``GET /v1/datasets/{id}``): its sample count and arrays' shapes."""
        return Dataset.of(self._client.request("GET", f"/v1/datasets/{dataset_id}").json())

    def list(self, limit: int = 50, offset: int = 0) -> list[Dataset]:
        """The tenant's uploaded datasets, newest first."""
        params = {"limit": limit, "offset": offset}
        return [Dataset.of(m) for m in self._client.request("GET", "/v1/datasets", params=params).json()["data"]]

    def delete(self, dataset_id: str) -> None:
        self._client.request("DELETE", f"/v1/datasets/{dataset_id}")


class Sessions:
    def __init__(self, client: Transport) -> None:
        self._client = client

    def list(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The tenant's sessions (``GET /v1/sessions``)."""
        params = {"limit": limit, "offset": offset}
        data: list[dict[str, Any]] = self._client.request("GET", "/v1/sessions", params=params).json()["data"]
        return data

    def get(self, session_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = self._client.request("GET", f"/v1/sessions/{session_id}").json()
        return doc

    def delete(self, session_id: str) -> None:
        self._client.request("DELETE", f"/v1/sessions/{session_id}")
