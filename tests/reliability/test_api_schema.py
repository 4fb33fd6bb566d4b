"""Issue 29, defect 13: the published OpenAPI schema says what the API accepts, and the answers
agree with it.

Schemathesis (``--checks all``) found an empty file answered 400 and a batch without ``files``
answered 422 while the schema allowed both, and a 422 whose ``detail`` was a list where every
other error's is a string. Now the schema states a non-empty ``file``, 1 to ``max_files``
``files``, and one error body (:class:`~breastpath.serve.routes.ErrorBody`) for every 4xx; each
answer below is validated against the schema of its own status.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.serve.app import ServeLimits, create_app
from conftest import synthetic_patch

MAX_FILES = 3


@pytest.fixture(scope="module")
def served(predictor):
    app = create_app(predictor, limits=ServeLimits(max_files=MAX_FILES))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, client.get("/openapi.json").json()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_patch(np.random.default_rng(0), 1)).save(buffer, format="PNG")
    return buffer.getvalue()


def _body_schema(spec: dict, path: str) -> dict:
    content = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = content["schema"]["$ref"].rsplit("/", 1)[-1]
    return spec["components"]["schemas"][name]


def _agrees(spec: dict, path: str, response) -> dict:
    """The answer's status is documented for ``path`` and its JSON body fits that status's
    schema; returns the body."""
    documented = spec["paths"][path]["post"]["responses"]
    assert str(response.status_code) in documented, (response.status_code, sorted(documented))
    schema = documented[str(response.status_code)]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    body = response.json()
    assert set(schema.get("required", [])) <= set(body) <= set(schema.get("properties", body))
    for key, value in body.items():
        kinds = [s.get("type") for s in schema["properties"][key].get("anyOf", [])]
        kinds = kinds or [schema["properties"][key].get("type")]
        python = {"string": str, "array": list, "null": type(None), "object": dict}
        assert any(isinstance(value, python[kind]) for kind in kinds), (key, value, kinds)
    return body


def test_the_schema_states_what_a_request_must_hold(served):
    _, spec = served
    single = _body_schema(spec, "/api/predict")
    assert single["required"] == ["file"]
    assert single["properties"]["file"]["minLength"] == 1
    batch = _body_schema(spec, "/api/predict/batch")
    assert batch["required"] == ["files"]
    files = batch["properties"]["files"]
    assert (files["minItems"], files["maxItems"]) == (1, MAX_FILES)


@pytest.mark.parametrize("path", ["/api/predict", "/api/predict/batch"])
def test_every_error_status_has_one_documented_body(served, path):
    _, spec = served
    responses = spec["paths"][path]["post"]["responses"]
    assert {"400", "408", "413", "415", "422", "503", "504"} <= set(responses)
    for status, response in responses.items():
        if status.startswith(("4", "5")):
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["detail"] and error["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_the_answers_agree_with_the_schema(served):
    client, spec = served
    empty = client.post("/api/predict", files={"file": ("e.png", b"", "image/png")})
    assert empty.status_code == 400
    assert "empty" in _agrees(spec, "/api/predict", empty)["detail"]

    missing = client.post("/api/predict", data={"other": "x"})
    assert missing.status_code == 422
    body = _agrees(spec, "/api/predict", missing)
    assert "multipart field 'file'" in body["detail"] and "'other'" in body["detail"]
    assert body["errors"][0]["loc"] == ["body", "file"]

    no_files = client.post("/api/predict/batch")
    assert no_files.status_code == 422
    assert "multipart field 'files'" in _agrees(spec, "/api/predict/batch", no_files)["detail"]

    too_many = [("files", (f"{i}.png", _png(), "image/png")) for i in range(MAX_FILES + 1)]
    over = client.post("/api/predict/batch", files=too_many)
    assert over.status_code == 413
    _agrees(spec, "/api/predict/batch", over)

    fine = client.post("/api/predict", files={"file": ("p.png", _png(), "image/png")})
    assert fine.status_code == 200
