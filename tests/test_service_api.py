"""Every HTTP endpoint's happy path against the real tiny model, and the contract around them: one error
shape, model pinning (409 with the remedy), pagination, idempotent enrolment, request ids and timings."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import pytest

from runtime import load_artifact_embedder
from tests.support.servers import client, npy_bytes, pkl_bytes
from tests.support.walkers import walking_sequence


@pytest.fixture(scope="module")
def api(tiny_artifact, tmp_path_factory):
    with client(tiny_artifact, tmp_path_factory.mktemp("api-data")) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tiny_artifact):
    """The runtime called directly, one sequence per call: what every route must agree with."""
    embedder = load_artifact_embedder(tiny_artifact, backend="cpu")
    return lambda seq: embedder.embed([seq])[0].reshape(-1)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


def test_probes_and_docs(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    assert ready["status"] == "ready" and len(ready["model_hash"]) == 64
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/embed", "/search", "/galleries", "/galleries/{name}/subjects/{subject_id}/sequences"} <= set(
        paths
    )
    assert {"multipart/form-data", "application/json"} == set(
        paths["/embed"]["post"]["requestBody"]["content"]
    )


def test_embed_multipart_matches_the_runtime(api, reference):
    a, b = walking_sequence(1, 9), walking_sequence(2, 5)
    response = api.post(
        "/embed", files=[("files", ("a.npy", npy_bytes(a))), ("files", ("dir/../b.pkl", pkl_bytes(b)))]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["parts"], body["channels"], body["dim"]) == (31, 64, 31 * 64)
    assert body["count"] == 2
    assert [d["name"] for d in body["data"]] == ["a.npy", "b.pkl"]  # only the last path component is kept
    assert [d["frames"] for d in body["data"]] == [9, 5]
    for item, seq in zip(body["data"], (a, b), strict=True):
        np.testing.assert_allclose(item["embedding"], reference(seq), atol=1e-6)
        assert set(item["timings"]) == {"decode_ms", "queue_ms", "inference_ms"}
    assert float(response.headers["X-Inference-Time-Ms"]) > 0
    assert float(response.headers["X-Queue-Time-Ms"]) >= 0


def test_embed_json_base64(api, reference):
    seq = walking_sequence(3, 6)
    payload = {"sequences": [{"npy_b64": base64.b64encode(npy_bytes(seq)).decode(), "name": "walk"}]}
    response = api.post("/embed", json=payload, headers={"X-Request-ID": "client-id-1"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == "client-id-1"
    [item] = response.json()["data"]
    assert item["name"] == "walk.npy"
    np.testing.assert_allclose(item["embedding"], reference(seq), atol=1e-6)


def test_gallery_lifecycle(api):
    created = api.post("/galleries", json={"name": "lab", "metadata": {"site": "A"}})
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["model_matches"] and info["metadata"] == {"site": "A"}
    assert_error(api.post("/galleries", json={"name": "lab"}), 409, "gallery_exists")
    assert "lab" in [g["name"] for g in api.get("/galleries").json()["data"]]
    assert api.get("/galleries/lab").json()["sequence_count"] == 0
    assert api.delete("/galleries/lab").status_code == 204
    assert_error(api.get("/galleries/lab"), 404, "not_found")
    assert_error(api.delete("/galleries/lab"), 404, "not_found")
    assert_error(api.post("/galleries", json={"name": "../x"}), 422, "invalid_input")


def test_enroll_search_list_delete(api):
    assert api.post("/galleries", json={"name": "people"}).status_code == 201
    sequences = {f"s{i:02d}": walking_sequence(100 + i) for i in range(5)}
    for i, (sid, seq) in enumerate(sequences.items()):
        files = [("files", (f"{sid}.npy", npy_bytes(seq))), ("files", (f"{sid}b.npy", npy_bytes(seq[:5])))]
        response = api.post(
            f"/galleries/people/subjects/{sid}/sequences",
            files=files,
            data={"metadata": f'{{"take": {i}}}', "sequence_ids": [f"{sid}-a", f"{sid}-b"]},
        )
        assert response.status_code == 201, response.text
        assert [s["sequence_id"] for s in response.json()["data"]] == [f"{sid}-a", f"{sid}-b"]
        assert response.json()["data"][0]["metadata"] == {"take": i}

    page = api.get("/galleries/people/subjects", params={"offset": 1, "limit": 2}).json()
    assert page["count"] == 5 and [s["subject_id"] for s in page["data"]] == ["s01", "s02"]
    assert all(s["sequence_count"] == 2 for s in page["data"])
    detail = api.get("/galleries/people/subjects/s03").json()
    assert [s["sequence_id"] for s in detail["data"]] == ["s03-a", "s03-b"]
    assert api.get("/galleries/people/sequences/s03-b").json()["subject_id"] == "s03"

    found = api.post(
        "/search",
        files={"files": ("q.npy", npy_bytes(sequences["s02"]))},
        data={"gallery": "people", "k": "3"},
    )
    assert found.status_code == 200, found.text
    [probe] = found.json()["data"]
    hits = probe["data"]
    assert len(hits) == 3 and hits[0]["subject_id"] == "s02" and hits[0]["sequence_id"] == "s02-a"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert float(found.headers["X-Inference-Time-Ms"]) > 0

    # Search by embedding (JSON): the same ranking as by sequence.
    vector = api.post("/embed", files={"files": ("q.npy", npy_bytes(sequences["s02"]))}).json()["data"][0]
    by_vector = api.post("/search", json={"gallery": "people", "k": 3, "embeddings": [vector["embedding"]]})
    assert [h["subject_id"] for h in by_vector.json()["data"][0]["data"]] == [h["subject_id"] for h in hits]
    high = api.post(
        "/search", json={"gallery": "people", "k": 5, "threshold": 0.999, "embeddings": [vector["embedding"]]}
    )
    assert [h["subject_id"] for h in high.json()["data"][0]["data"]] == ["s02"]

    assert api.delete("/galleries/people/sequences/s02-a").status_code == 204
    assert api.delete("/galleries/people/subjects/s04").status_code == 204
    assert_error(api.delete("/galleries/people/subjects/s04"), 404, "not_found")
    assert_error(api.delete("/galleries/people/sequences/s02-a"), 404, "not_found")
    after = api.post(
        "/search", json={"gallery": "people", "k": 1, "embeddings": [vector["embedding"]]}
    ).json()
    assert after["data"][0]["data"][0]["sequence_id"] == "s02-b"  # the other sequence now matches best
    gallery = api.get("/galleries/people").json()
    assert (gallery["subject_count"], gallery["sequence_count"]) == (4, 7)


def test_enrolment_retry_is_idempotent_and_conflicts_are_409(api):
    assert api.post("/galleries", json={"name": "retry"}).status_code == 201
    seq = walking_sequence(7)
    entry = {
        "npy_b64": base64.b64encode(npy_bytes(seq)).decode(),
        "sequence_id": "take-1",
        "metadata": {"a": 1},
    }
    first = api.post("/galleries/retry/subjects/bob/sequences", json={"sequences": [entry]})
    again = api.post("/galleries/retry/subjects/bob/sequences", json={"sequences": [entry]})
    assert first.status_code == again.status_code == 201
    assert first.json()["data"] == again.json()["data"]
    assert api.get("/galleries/retry").json()["sequence_count"] == 1
    other = {**entry, "npy_b64": base64.b64encode(npy_bytes(walking_sequence(8))).decode()}
    assert_error(
        api.post("/galleries/retry/subjects/bob/sequences", json={"sequences": [other]}),
        409,
        "sequence_id_conflict",
    )
    assert_error(
        api.post("/galleries/retry/subjects/eve/sequences", json={"sequences": [entry]}),
        409,
        "sequence_id_conflict",
    )
    assert api.get("/galleries/retry").json()["sequence_count"] == 1


def test_gallery_of_another_model_is_409_with_the_remedy(api):
    engine = api.app.state.engine
    other_hash = hashlib.sha256(b"an older model").hexdigest()
    engine.store.create_gallery("old", other_hash, engine.layout)
    assert api.get("/galleries/old").json()["model_matches"] is False
    seq = npy_bytes(walking_sequence(9))
    for response in (
        api.post("/galleries/old/subjects/x/sequences", files={"files": ("x.npy", seq)}),
        api.post("/search", files={"files": ("x.npy", seq)}, data={"gallery": "old"}),
    ):
        error = assert_error(response, 409, "model_mismatch")
        assert "gaitlu enroll" in error["message"] and "gaitlu enroll" in error["detail"]["remedy"]
        assert error["detail"]["gallery_model_hash"] == other_hash
        assert error["detail"]["service_model_hash"] == engine.model_hash


def test_request_shape_errors(api):
    assert api.post("/galleries", json={"name": "shapes"}).status_code == 201
    assert_error(api.get("/no/such/route"), 404, "not_found")
    assert_error(api.delete("/embed"), 405, "method_not_allowed")
    assert_error(api.post("/embed", json={"sequences": []}), 422, "validation_error")
    assert_error(api.post("/embed", json={"sequences": [{"npy_b64": "%%%"}]}), 422, "validation_error")
    assert_error(api.post("/search", json={"gallery": "shapes", "k": 1}), 422, "validation_error")
    wrong_size = api.post("/search", json={"gallery": "shapes", "embeddings": [[0.1, 0.2]]})
    assert wrong_size.status_code == 200 and wrong_size.json()["data"][0]["error"]["code"] == "invalid_input"
    assert_error(api.post("/embed", files={"other": ("a.npy", b"x")}), 422, "missing_file")
    assert_error(api.post("/embed", files={"files": (None, "text")}), 422, "not_a_file")
    assert_error(api.post("/embed", data={"files": "urlencoded"}), 415, "unsupported_media_type")
    assert_error(api.get("/galleries/shapes/subjects", params={"limit": 0}), 422, "validation_error")
    response = api.get("/metrics")
    assert response.status_code == 200 and "gaitlu_http_requests_total" in response.text
    assert 'gaitlu_gallery_sequences{gallery="shapes"}' in response.text
