"""The service's error tree. Models and workers raise these; the API maps each to its HTTP status.

    GradserveError              500  (never raised directly)
     ├── InvalidInput           422  a field is wrong: ``loc`` points at it, ``msg`` says why
     ├── NotFound               404  unknown id, or another tenant's
     ├── Conflict               409  the current state forbids the call (backward with no forward)
     ├── PayloadTooLarge        413  over a size limit from settings
     ├── Unauthorized           401  missing or unknown API key
     ├── TooManyRequests        429  over a per-tenant quota (concurrent jobs); retry later
     ├── ServiceUnavailable     503  no worker or no Redis to serve the call
     └── Timeout                504  a worker took longer than the call timeout

Workers send errors back as ``to_dict()`` and the API rebuilds them with ``from_dict()``, so a
worker-side shape error reaches the client with the same status, ``loc`` and message.
"""

from __future__ import annotations

from typing import Any, ClassVar

Loc = tuple[str | int, ...]


class GradserveError(Exception):
    status: ClassVar[int] = 500
    kind: ClassVar[str] = "internal_error"

    def __init__(self, msg: str, loc: Loc = (), **extra: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.loc = tuple(loc)
        self.extra = extra

    def detail(self) -> list[dict[str, Any]] | str:
        """FastAPI's shape: a list of ``{loc, msg, type}`` for 422, a plain string otherwise."""
        if self.status == 422:
            return [{"loc": list(self.loc), "msg": self.msg, "type": self.kind, **self.extra}]
        return self.msg

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "msg": self.msg, "loc": list(self.loc), "extra": self.extra}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> GradserveError:
        cls = _BY_KIND.get(data.get("kind", ""), GradserveError)
        return cls(data.get("msg", "worker error"), tuple(data.get("loc", ())), **data.get("extra", {}))


def first_line(exc: BaseException) -> str:
    """The gist of a PyTorch or Python error for a message: its first line (C++ traces follow it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class InvalidInput(GradserveError):
    status = 422
    kind = "invalid_input"


class NotFound(GradserveError):
    status = 404
    kind = "not_found"


class Conflict(GradserveError):
    status = 409
    kind = "conflict"


class PayloadTooLarge(GradserveError):
    status = 413
    kind = "payload_too_large"


class Unauthorized(GradserveError):
    status = 401
    kind = "unauthorized"


class TooManyRequests(GradserveError):
    status = 429
    kind = "too_many_requests"


class ServiceUnavailable(GradserveError):
    status = 503
    kind = "service_unavailable"


class Timeout(GradserveError):
    status = 504
    kind = "timeout"


_BY_KIND = {
    cls.kind: cls
    for cls in (
        InvalidInput,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unauthorized,
        TooManyRequests,
        ServiceUnavailable,
        Timeout,
    )
}
