"""Fast JSON for responses that carry tensors: orjson is several times faster than json at these sizes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class TensorJSONResponse(JSONResponse):  # a JSONResponse, so OpenAPI documents the route's model
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
