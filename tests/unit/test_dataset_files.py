"""Uploaded dataset files: limits are checked before numpy inflates anything."""

from __future__ import annotations

import io

import numpy as np
import pytest

from models.data.arrays import parse_dataset
from models.errors import PayloadTooLarge
from models.settings import Settings


def test_compressed_npz_is_refused_by_its_inflated_size() -> None:
    # 8 MB of zeros compress to a few KB; numpy would inflate all of it before any limit was checked.
    buf = io.BytesIO()
    np.savez_compressed(buf, inputs=np.zeros((1000, 1000)), targets=np.zeros(1000))
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(PayloadTooLarge, match="inflates to 8,00"):
        parse_dataset(buf.getvalue(), Settings(max_dataset_elements=100_000))
    fmt, tensors = parse_dataset(buf.getvalue(), Settings(max_dataset_elements=2_000_000))
    assert fmt == "npz" and list(tensors["inputs"].shape) == [1000, 1000]
