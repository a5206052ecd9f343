"""Non-finite numbers leave the API as JSON ``null`` with the reason beside them.

A job's hash and gradient statistics hold them as the strings ``"nan"``, ``"inf"``, ``"-inf"``
(``models.wire.tensors.scalar``); a client reading ``loss`` then gets a number or ``null``, never a
string, and ``non_finite`` says which value it was. (Metric records are written that way already:
``worker.recorder``.)
"""

from __future__ import annotations

from typing import Any

NON_FINITE = frozenset({"nan", "inf", "-inf"})


def _is_non_finite(value: Any) -> bool:
    return (isinstance(value, str) and value in NON_FINITE) or (isinstance(value, float) and value != value)


def null_fields(doc: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """``doc`` with non-finite ``fields`` set to None and ``doc["non_finite"] = {field: "inf", ...}``."""
    reasons = {f: str(doc[f]) for f in fields if _is_non_finite(doc.get(f))}
    doc.update(dict.fromkeys(reasons))
    doc["non_finite"] = reasons
    return doc
