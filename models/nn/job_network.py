"""A job's network in either form, as job planning and the job worker see it.

A catalogue spec (``NetworkSpec``) plans as it always has. An exported network plans through its one
input's per-sample shape (as exported: a variable length takes the example's) and the summary its
admission computed; its programs and initial weights travel in a hash the job owns (``JobPart.INIT``),
copied from the network at submit, so deleting the network never breaks the job or its forks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from models.errors import InvalidInput, Loc
from models.nn.build import NetworkSummary
from models.nn.exported_admit import stored_form

SUMMARY_FIELDS = ("repr", "parameters", "num_parameters", "num_elements", "output_shape", "activation_bytes_per_sample")


class PlanNetwork(Protocol):
    """What planning a job reads of its network."""

    @property
    def input_shape(self) -> Sequence[int]: ...

    @property
    def input_dtype(self) -> str: ...

    def index_layers(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ExportedNetwork:
    """An exported network as a job holds it: description, summary and where its programs and weights are."""

    network_id: str | None
    form: dict[str, Any]  # ExportedForm's fields, ``repr`` included
    summary_doc: dict[str, Any]
    modes: tuple[str, ...]
    blobs_key: str  # a hash with ``{mode}_program`` and ``weights``

    @classmethod
    def from_network(cls, doc: dict[str, Any], blobs_key: str, loc: Loc) -> ExportedNetwork:
        form = stored_form(doc)
        inputs = form["inputs"]
        if len(inputs) != 1:
            names = ", ".join(i["name"] for i in inputs)
            raise InvalidInput(
                f"network '{doc['id']}' takes {len(inputs)} inputs ({names}); a job's dataset feeds one input tensor, "
                "so train it step by step in a session",
                loc,
            )
        summary = {k: doc[k] for k in SUMMARY_FIELDS}
        return cls(str(doc["id"]), form, summary, tuple(doc["modes"]), blobs_key)

    @classmethod
    def from_stored(cls, raw: bytes | str, blobs_key: str) -> ExportedNetwork:
        doc = json.loads(raw)
        return cls(doc.get("network_id"), doc["form"], doc["summary"], tuple(doc["modes"]), blobs_key)

    def stored(self) -> str:
        """The job hash's ``network`` field."""
        return json.dumps(
            {
                "format": "export",
                "network_id": self.network_id,
                "form": self.form,
                "summary": self.summary_doc,
                "modes": list(self.modes),
            }
        )

    @property
    def input_shape(self) -> list[int]:
        return list(self.form["inputs"][0]["example"])

    @property
    def input_dtype(self) -> str:
        return str(self.form["inputs"][0]["dtype"])

    def index_layers(self) -> list[dict[str, Any]]:
        return []  # an Embedding's bound is not known here: PyTorch's own error names a bad index

    def summary(self) -> NetworkSummary:
        return NetworkSummary(**self.summary_doc)
