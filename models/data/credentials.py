"""Per-tenant keys for datasets by reference (GRADSERVE_DATA_CREDENTIALS): parsed, never echoed.

A tenant's ``s3://`` URLs are read with its own entry and nobody else's; a tenant without one cannot register
``s3://`` URLs at all. ``repr`` and every error message leave the keys out, so neither an answer nor a log
line can carry them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

FIELDS = ("access_key_id", "secret_access_key", "endpoint", "region")


@dataclass(frozen=True)
class DataCredentials:
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    endpoint: str = ""  # empty: AWS itself
    region: str = "us-east-1"


def parse_credentials(raw: str) -> dict[str, DataCredentials]:
    """Tenant -> its credentials; a ValueError naming the tenant and field at fault (never a value)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ValueError("GRADSERVE_DATA_CREDENTIALS is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError('GRADSERVE_DATA_CREDENTIALS must map tenants to {"access_key_id", "secret_access_key", ...}')
    out = {}
    for tenant, entry in doc.items():
        if not isinstance(entry, dict) or not {"access_key_id", "secret_access_key"} <= set(entry):
            raise ValueError(f"GRADSERVE_DATA_CREDENTIALS[{tenant!r}] needs access_key_id and secret_access_key")
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown or not all(isinstance(v, str) for v in entry.values()):
            raise ValueError(
                f"GRADSERVE_DATA_CREDENTIALS[{tenant!r}] takes string fields {', '.join(FIELDS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        out[str(tenant)] = DataCredentials(**entry)
    return out
