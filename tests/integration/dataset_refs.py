"""Settings of the stack that the streamed-upload and by-reference tests share (test_artifacts' ``s3_stack``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import S3Server

MiB = 1024 * 1024
# alice's keys for her s3:// datasets; moto takes any. Distinct from the store's, so a leak is told apart.
DATA_KEY_ID = "AKIADATAALICE0000001"
DATA_SECRET = "alice-data-secret-never-echoed-0123456789"
UPLOAD_LIMIT = 64 * MiB


def refs_env(allowed: Path, server: S3Server) -> dict[str, str | None]:
    creds = {"alice": {"access_key_id": DATA_KEY_ID, "secret_access_key": DATA_SECRET, "endpoint": server.endpoint}}
    return {
        "GRADSERVE_DATA_DIRS": str(allowed),
        "GRADSERVE_DATA_CREDENTIALS": json.dumps(creds),
        "GRADSERVE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "GRADSERVE_MAX_DATASET_BYTES": str(UPLOAD_LIMIT),
    }
