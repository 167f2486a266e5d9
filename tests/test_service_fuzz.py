"""Property-based fuzzing of every operation in the service's own OpenAPI schema: no input is a 5xx.

Hand-rolled hypothesis strategies (schemathesis would add a large dependency tree to the dev venv): for
each operation, path and query parameters, and bodies in each declared content type (plus undeclared
ones) are drawn from its schema, mixed with arbitrary JSON, random bytes and a few valid sequences so
that requests also get past validation into decoding, inference and the galleries.
"""

from __future__ import annotations

import base64
import string
from collections import Counter
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.servers import client, npy_bytes, pkl_bytes
from tests.support.walkers import walking_sequence

VALID_FILES = [npy_bytes(walking_sequence(1, 4)), pkl_bytes(walking_sequence(2, 3))]
finite_floats = st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or infinity
NAMES = ["g", "fuzz", "s1", "seq-1", "missing"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def api(tiny_artifact, tmp_path_factory):
    with client(tiny_artifact, tmp_path_factory.mktemp("fuzz-data"), max_files=4) as c:
        c.post("/galleries", json={"name": "g"})
        c.post("/galleries/g/subjects/s1/sequences", files={"files": ("a.npy", VALID_FILES[0])})
        yield c


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in sorted(schema["paths"].items())
        for method, op in sorted(item.items())
        if path not in ("/docs", "/redoc")
    ]


def from_schema(schema: dict[str, Any], components: dict[str, Any], name: str = "") -> st.SearchStrategy:
    """Values that mostly match `schema` (JSON Schema subset FastAPI emits), sometimes not."""
    if "$ref" in schema:
        target = components[schema["$ref"].rsplit("/", 1)[-1]]
        return st.deferred(lambda: from_schema(target, components, name))
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return st.one_of([from_schema(s, components, name) for s in schema[key]])
    kind = schema.get("type")
    if name == "embedding":
        dim = 31 * 64
        # Only what JSON can carry (NaN has no JSON form: tests/test_service_hostile.py sends it raw).
        return st.sampled_from([[0.0] * dim, [1.0] * dim, [2e19] * dim, [1e308] * dim]) | st.lists(
            finite_floats, max_size=5
        )
    if schema.get("contentEncoding") == "base64" or name == "npy_b64":
        raw = st.sampled_from(VALID_FILES) | st.binary(max_size=64)
        return raw.map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=12)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, components, k) for k, v in props.items() if k in required},
            optional={k: from_schema(v, components, k) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, name), max_size=3)
    if kind == "string":
        return st.sampled_from(NAMES) | st.text(max_size=16)
    if kind == "integer":
        return st.integers(-3, 2000) | st.sampled_from([2**63, 2**64, -(2**63) - 1])  # past SQLite's ints
    if kind == "number":
        return finite_floats | st.integers(-2, 2)
    if kind == "boolean":
        return st.booleans()
    return json_values


def multipart(schema: dict[str, Any]) -> st.SearchStrategy:
    """(files, data) for httpx from a multipart object schema."""
    file_fields = [k for k, v in schema["properties"].items() if v.get("type") == "array" and "items" in v
                   and v["items"].get("format") == "binary"]  # fmt: skip
    text_fields = [k for k in schema["properties"] if k not in file_fields]
    upload = st.tuples(
        st.sampled_from(["a.npy", "b.pkl", "c.zip", "d.png", "e.npz", "noext", "../x.npy"]),
        st.sampled_from(VALID_FILES) | st.binary(max_size=80),
    )
    files = st.lists(st.tuples(st.sampled_from(file_fields or ["files"]), upload), max_size=3)
    text = st.sampled_from(NAMES) | st.text(string.printable, max_size=12) | st.integers(-2, 50).map(str)
    data = st.dictionaries(st.sampled_from(text_fields or ["x"]), text, max_size=len(text_fields) or 1)
    return st.tuples(files, data)


@st.composite
def requests(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.get("components", {}).get("schemas", {})
    path, method, op = draw(st.sampled_from(operations(schema)))
    url = path
    query = {}
    for param in op.get("parameters", []):
        value = draw(from_schema(param.get("schema", {}), components, param["name"]) | st.text(max_size=8))
        if param["in"] == "path":
            url = url.replace("{" + param["name"] + "}", quote(str(value), safe="") or "x")
        elif param["in"] == "query" and draw(st.booleans()):
            query[param["name"]] = str(value)
    request: dict[str, Any] = {"method": method.upper(), "url": url, "params": query}
    content = op.get("requestBody", {}).get("content", {})
    kind = draw(st.sampled_from([*sorted(content), "text/plain", "none"]))
    if kind == "application/json":
        request["json"] = draw(from_schema(content[kind]["schema"], components) | json_values)
    elif kind == "multipart/form-data":
        files, data = draw(multipart(content[kind]["schema"]))
        request["files"] = files or [("files", ("empty.npy", b""))]
        request["data"] = data
    elif kind == "text/plain":
        request["content"] = draw(st.binary(max_size=40))
        request["headers"] = {"Content-Type": "text/plain"}
    return request


def test_openapi_operations_never_answer_5xx(api):
    schema = api.get("/openapi.json").json()
    assert len(operations(schema)) >= 14  # every route is fuzzed, including the probes

    seen: Counter[int] = Counter()

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(requests(schema))
    def check(request: dict[str, Any]) -> None:
        method = request.pop("method")
        response = api.request(method, **request)
        seen[response.status_code] += 1
        assert response.status_code < 500, (method, request.get("url"), response.text)
        assert "X-Request-ID" in response.headers
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["code"] and error["message"]

    check()
    # The fuzzing reached past validation (successes) and many distinct refusals.
    assert sum(n for status, n in seen.items() if status < 300) >= 10
    assert {404, 415, 422} <= set(seen)
    assert api.get("/readyz").status_code == 200
    assert np.isfinite(
        api.post("/embed", files={"files": ("a.npy", VALID_FILES[0])}).json()["data"][0]["embedding"]
    ).all()
