"""What ``/docs`` adds to the generated OpenAPI schema: request examples for the session calls and the dataset
upload (whose bodies FastAPI cannot describe from their models alone), and the bearer API key scheme, so
Swagger UI's "Authorize" button sends ``Authorization: Bearer <key>``."""

from __future__ import annotations

from typing import Any

UPLOAD_HOWTO = """A safetensors or `.npz` file with arrays `inputs`, `targets` (and optionally `test_inputs`,
`test_targets`), as the raw body or as the `file` field of a multipart form. From Python:

```python
import torch, httpx
from safetensors.torch import save
blob = save({"inputs": torch.randn(100, 6), "targets": torch.randint(3, (100,))})
httpx.post(url + "/v1/datasets", content=blob, headers={"Content-Type": "application/octet-stream"})
```
then train on it with `"dataset": {"source": "upload", "id": "data_..."}`."""

EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/sessions/{session_id}/forward", "post"): {
        "randn": {"summary": "A generated mini-batch", "value": {"input": {"randn": [1, 1, 32, 32], "seed": 7}}},
        "list": {"summary": "A nested list (batch of 2, 3 features)", "value": {"input": [[0.1, 0.2, 0.3], [1, 2, 3]]}},
    },
    ("/v1/sessions/{session_id}/loss", "post"): {
        "mse": {
            "summary": "MSELoss against a random target",
            "value": {"criterion": {"type": "MSELoss"}, "target": {"randn": [1, 10], "seed": 1}},
        },
        "cross_entropy": {
            "summary": "CrossEntropyLoss with class indices",
            "value": {"criterion": {"type": "CrossEntropyLoss"}, "target": [3]},
        },
    },
    ("/v1/sessions/{session_id}/backward", "post"): {
        "from_loss": {"summary": "loss.backward()", "value": {}},
        "from_output": {
            "summary": "output.backward(gradient)",
            "value": {"gradient": {"randn": [1, 10], "seed": 2}, "retain_graph": False},
        },
    },
}


def _binary_upload() -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    return {
        "application/octet-stream": {"schema": binary},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": binary}, "required": ["file"]}},
    }


def enrich(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the examples, the upload's body description and the bearer scheme to ``schema`` (in place)."""
    paths = schema.get("paths", {})
    for (path, method), examples in EXAMPLES.items():
        content = paths.get(path, {}).get(method, {}).get("requestBody", {}).get("content", {})
        if "application/json" in content:
            content["application/json"]["examples"] = examples
    upload = paths.get("/v1/datasets", {}).get("post")
    if upload is not None:
        upload.setdefault("requestBody", {})["content"] = _binary_upload()
        upload["description"] = UPLOAD_HOWTO
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from GRADSERVE_API_KEYS; not needed in single-user mode.",
    }
    schema["security"] = [{"bearer": []}, {}]  # {}: optional, as in single-user mode
    return schema
