"""The one shape of every list: ``data``, ``count`` (this page), ``total`` (every match), ``next_offset``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query

# Integer query parameters stop here: exact in JSON (and JavaScript) numbers, far above any step or
# offset, and below Redis's 64-bit range, which larger values overflowed (a 500).
MAX_QUERY_INT = 2**53


class Paging:
    def __init__(
        self,
        offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> None:
        self.offset, self.limit = offset, limit


PagingDep = Annotated[Paging, Depends()]


def page_of(data: list[dict[str, Any]], total: int, offset: int) -> dict[str, Any]:
    """``data`` is one page, starting at ``offset`` of ``total`` matches."""
    end = offset + len(data)
    return {"data": data, "count": len(data), "total": total, "next_offset": end if end < total else None}


def newest_first(docs: list[dict[str, Any]], paging: Paging) -> dict[str, Any]:
    """A page of ``docs`` sorted by ``created_at``, newest first (ties by id, so pages are stable)."""
    docs.sort(key=lambda d: (d.get("created_at") or 0.0, d["id"]), reverse=True)
    return page_of(docs[paging.offset : paging.offset + paging.limit], len(docs), paging.offset)
