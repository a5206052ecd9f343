"""The client's exceptions::

GradserveError
├── SpecError       a module the catalogue cannot express (raised before any request)
├── APIError        the service answered 4xx/5xx (``status``, ``detail``)
├── JobFailed       a job waited on ended failed or cancelled (``job``)
└── SweepEnded      a sweep waited on ended cancelled or failed (``sweep``)
"""

from __future__ import annotations

from typing import Any


class GradserveError(Exception):
    pass


class SpecError(GradserveError, ValueError):
    """``node``: the fx node, ``op``: its source op (``F.relu``, ``Tensor.view``, ``Conv2d``)."""

    def __init__(self, message: str, *, node: str | None, op: str | None) -> None:
        super().__init__(message)
        self.node = node
        self.op = op


class ExportError(SpecError):
    """A module ``torch.export`` cannot capture, or inputs it cannot take; the message carries torch's reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message, node=None, op=None)


class APIError(GradserveError):
    def __init__(self, status: int, detail: Any, method: str, url: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {url} -> {status}: {_message(detail)}")


class JobFailed(GradserveError):
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        super().__init__(f"job {job.get('id')} ended {job.get('status')}: {job.get('error') or 'no error recorded'}")


class SweepEnded(GradserveError):
    def __init__(self, sweep: dict[str, Any]) -> None:
        self.sweep = sweep
        super().__init__(f"sweep {sweep.get('id')} ended {sweep.get('status')}")


def _message(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or a list of ``{"loc", "msg"}`` items."""
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)
