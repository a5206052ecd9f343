"""A dataset source or upload format is named in a few places (CONTRIBUTING.md lists them); they agree."""

from __future__ import annotations

import typing

from api.schemas.jobs import DatasetPublic
from gradserve.dataset_files import SUFFIXES
from models.data.formats import CONTENT_TYPES
from models.nn.job_plan import PLANNERS
from models.spec.job import DatasetSpec
from worker.datasets import SOURCES


def test_every_source_is_planned_by_the_api_and_built_by_the_worker() -> None:
    union = typing.get_args(DatasetSpec)[0]
    sources = {typing.get_args(t.model_fields["source"].annotation)[0] for t in typing.get_args(union)}
    assert sources == set(PLANNERS) == set(SOURCES), (sources, set(PLANNERS), set(SOURCES))


def test_every_stored_format_is_public_and_uploadable_from_the_client() -> None:
    public = set(typing.get_args(DatasetPublic.model_fields["format"].annotation))
    assert {fmt for fmt, _ in CONTENT_TYPES.values()} <= public
    # npz and safetensors travel as octet-stream and are converted; every other suffix is a stored format
    assert set(SUFFIXES.values()) - {"application/octet-stream"} == set(CONTENT_TYPES)
