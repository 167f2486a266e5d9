"""Search that answers questions, through HTTP against the real tiny model: calibrated FARs and open-set
answers, /verify, metadata filters, several probes per call, embeddings in and out, the offline /docs."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np
import pytest

from gaitlu.manifest import read_manifest
from gaitlu.schemas import MAX_K
from tests.support.servers import client, npy_bytes
from tests.support.walkers import walking_sequence

SUBJECTS = 5  # s0..s4, two sequences each: walking_sequence(10 * s + w)


def sequence(subject: int, walk: int = 0) -> np.ndarray:
    return walking_sequence(10 * subject + walk, 12)


def enrol_people(api, gallery: str) -> None:
    assert api.post("/galleries", json={"name": gallery}).status_code == 201
    for s in range(SUBJECTS):
        files = [("files", (f"s{s}-{w}.npy", npy_bytes(sequence(s, w)))) for w in (0, 1)]
        metadata = [
            {
                "camera": f"c{s % 2}",
                "site": "lab",
                "captured_at": f"2026-05-0{s + 1}T08:00:00Z",
                "tags": ["day"],
            },
            {"camera": "c9", "tags": ["night"] if s == 3 else []},
        ]
        form = {"sequence_ids": [f"s{s}-0", f"s{s}-1"], "metadata": json.dumps(metadata)}
        response = api.post(f"/galleries/{gallery}/subjects/s{s}/sequences", files=files, data=form)
        assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def calibrated(calibrated_artifact, tmp_path_factory):
    with client(calibrated_artifact, tmp_path_factory.mktemp("calibrated-data")) as c:
        enrol_people(c, "people")
        yield c


@pytest.fixture(scope="module")
def plain(tiny_artifact, tmp_path_factory):
    with client(tiny_artifact, tmp_path_factory.mktemp("plain-data"), max_files=3) as c:
        enrol_people(c, "people")
        yield c


def search(api, *files: tuple[str, bytes], **form) -> dict:
    fields = {"gallery": "people", **{k: json.dumps(v) if k == "filter" else str(v) for k, v in form.items()}}
    response = api.post("/search", files=[("files", f) for f in files], data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def embedding_of(api, frames: np.ndarray) -> list[float]:
    return api.post("/embed", files={"files": ("q.npy", npy_bytes(frames))}).json()["data"][0]["embedding"]


# ----- calibrated scores and open-set answers


def test_the_model_route_reports_the_calibration(calibrated, plain, calibrated_artifact):
    info = calibrated.get("/model").json()
    manifest = read_manifest(calibrated_artifact)
    assert info["model_hash"] == manifest.model_sha256 and info["dim"] == 31 * 64
    cal = info["calibration"]
    assert (cal["dataset"], cal["subjects"], cal["centred"]) == ("walkers", 12, True)
    [subject, _] = cal["comparisons"]
    assert subject["comparison"] == "subject" and [t["far"] for t in subject["thresholds"]] == [
        1e-2,
        1e-3,
        1e-4,
    ]
    assert plain.get("/model").json()["calibration"] is None


def test_hits_carry_their_far_and_max_far_turns_the_ranking_into_an_answer(calibrated, calibrated_artifact):
    table = read_manifest(calibrated_artifact).calibration.subject
    known = ("known.npy", npy_bytes(sequence(2)))  # an enrolled walk: its own subject scores 1
    answer = search(calibrated, known, k=5)
    [probe] = answer["data"]
    assert probe["unknown"] is None and probe["match"] is None  # no threshold, no decision
    for hit in probe["data"]:
        assert hit["far"] == pytest.approx(table.far(hit["score"]))
    assert probe["data"][0]["subject_id"] == "s2" and probe["data"][0]["far"] == pytest.approx(
        table.far_floor
    )

    decided = search(calibrated, known, k=5, max_far=0.01)
    assert decided["threshold"] == table.threshold(0.01) and decided["max_far"] == 0.01
    [probe] = decided["data"]
    assert probe["match"]["subject_id"] == "s2" and probe["unknown"] is False
    assert all(h["score"] >= decided["threshold"] for h in probe["data"])  # the rest fall below it

    stranger = ("stranger.npy", npy_bytes(walking_sequence(999, 12)))  # nobody enrolled
    [probe] = search(calibrated, stranger, threshold=0.9999)["data"]
    assert (probe["match"], probe["unknown"], probe["data"]) == (None, True, [])

    body = {
        "gallery": "people",
        "max_far": 0.01,
        "threshold": 0.5,
        "embeddings": [embedding_of(calibrated, sequence(1))],
    }
    both = calibrated.post("/search", json=body)
    assert both.status_code == 422 and "not both" in both.text


def test_an_uncalibrated_model_has_no_far_and_refuses_max_far_naming_the_remedy(plain):
    [probe] = search(plain, ("q.npy", npy_bytes(sequence(1))))["data"]
    assert all(hit["far"] is None for hit in probe["data"])
    response = plain.post(
        "/search",
        files={"files": ("q.npy", npy_bytes(sequence(1)))},
        data={"gallery": "people", "max_far": "0.001"},
    )
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "not_calibrated" and "gaitlu calibrate" in error["message"]
    assert "gaitlu calibrate" in error["detail"]["remedy"]


# ----- verify


def test_verify_a_probe_against_a_subject_a_sequence_or_another_probe(calibrated, calibrated_artifact):
    tables = read_manifest(calibrated_artifact).calibration
    probe = embedding_of(calibrated, sequence(3))
    [found] = calibrated.post("/search", json={"gallery": "people", "k": 5, "embeddings": [probe]}).json()[
        "data"
    ]
    s3 = next(h for h in found["data"] if h["subject_id"] == "s3")

    body = {"gallery": "people", "subject_id": "s3", "max_far": 0.01, "embeddings": [probe]}
    verdict = calibrated.post("/verify", json=body).json()
    assert verdict["comparison"] == "subject" and verdict["sequence_id"] == s3["sequence_id"]
    assert verdict["score"] == pytest.approx(s3["score"], abs=1e-5)  # scored as /search scores subjects
    assert verdict["far"] == pytest.approx(tables.subject.far(verdict["score"]))
    assert verdict["threshold"] == tables.subject.threshold(0.01) and verdict["match"] is True

    other = calibrated.post(
        "/verify",
        json={"gallery": "people", "sequence_id": "s1-0", "threshold": 0.9999, "embeddings": [probe]},
    ).json()
    assert (other["comparison"], other["match"], other["sequence_id"]) == ("sequence", False, "s1-0")
    assert other["far"] == pytest.approx(tables.sequence.far(other["score"]))

    files = [("files", ("a.npy", npy_bytes(sequence(4)))), ("files", ("b.npy", npy_bytes(sequence(4))))]
    pair = calibrated.post("/verify", files=files, data={"max_far": "0.001"}).json()
    assert pair["comparison"] == "sequence" and pair["score"] == pytest.approx(1.0, abs=1e-5)
    assert pair["match"] is True and pair["gallery"] is None

    one = calibrated.post("/verify", json={"embeddings": [probe]})
    assert one.status_code == 422 and one.json()["error"]["code"] == "probe_count"
    neither = calibrated.post("/verify", json={"gallery": "people", "embeddings": [probe]})
    assert neither.status_code == 422 and neither.json()["error"]["code"] == "invalid_input"
    missing = calibrated.post(
        "/verify", json={"gallery": "people", "subject_id": "nobody", "embeddings": [probe]}
    )
    assert missing.status_code == 404


# ----- several probes in one call


def test_several_probes_are_answered_in_order_with_errors_of_their_own(plain):
    good = embedding_of(plain, sequence(0))
    body = {"gallery": "people", "k": 2, "embeddings": [good, [0.5] * 7, embedding_of(plain, sequence(4))]}
    answer = plain.post("/search", json=body).json()
    assert answer["count"] == 3 and [p["name"] for p in answer["data"]] == [
        "embedding-0",
        "embedding-1",
        "embedding-2",
    ]
    first, bad, last = answer["data"]
    assert first["data"][0]["subject_id"] == "s0" and last["data"][0]["subject_id"] == "s4"
    assert bad["data"] == [] and bad["error"]["code"] == "invalid_input" and bad["error"]["request_id"]

    files = [
        ("a.npy", npy_bytes(sequence(1))),
        ("notes.txt", b"not a sequence"),
        ("c.npy", npy_bytes(sequence(2))),
    ]
    multipart = search(plain, *files, k=1)
    assert [p["name"] for p in multipart["data"]] == ["a.npy", "notes.txt", "c.npy"]
    assert multipart["data"][1]["error"]["code"] == "invalid_sequence"
    assert [p["data"][0]["subject_id"] for p in multipart["data"][::2]] == ["s1", "s2"]

    too_many = plain.post("/search", json={**body, "embeddings": [good] * 4})  # max_files = 3 here
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "too_many_sequences"


def test_the_field_file_is_still_read_for_a_search(plain):
    response = plain.post(
        "/search", files={"file": ("q.npy", npy_bytes(sequence(3)))}, data={"gallery": "people"}
    )
    assert response.json()["data"][0]["data"][0]["subject_id"] == "s3"


def test_the_multipart_forms_document_the_limits_they_enforce(plain):
    schema = plain.get("/openapi.json").json()
    paths, models = schema["paths"], schema["components"]["schemas"]

    def form(path: str) -> dict:
        return paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]

    search_form, verify_form = form("/search"), form("/verify")
    assert search_form["properties"]["k"]["maximum"] == MAX_K
    assert search_form["required"] == ["files", "gallery"] and verify_form["required"] == ["files"]
    for fields, model in ((search_form, "SearchRequest"), (verify_form, "VerifyRequest")):
        for name, field in fields["properties"].items():  # a form field is its JSON field, limits and all
            if name in models[model]["properties"] and name != "filter":
                json_field = models[model]["properties"][name]
                json_field = next((o for o in json_field.get("anyOf", []) if o["type"] != "null"), json_field)
                limits = ("maximum", "minimum", "exclusiveMinimum", "maxLength", "type", "enum")
                assert {k: v for k, v in field.items() if k in limits} == {
                    k: v for k, v in json_field.items() if k in limits
                }, name
    for k, status in ((MAX_K, 200), (MAX_K + 1, 422)):  # and the documented maximum is the one enforced
        files = {"files": ("q.npy", npy_bytes(sequence(3)))}
        response = plain.post("/search", files=files, data={"gallery": "people", "k": str(k)})
        assert response.status_code == status, response.text


# ----- metadata and filters


def test_filters_select_inside_the_search_and_hits_return_attributes(plain):
    probe = ("q.npy", npy_bytes(sequence(1)))
    [odd] = search(plain, probe, k=5, filter={"camera": "c1"})["data"]
    assert [h["subject_id"] for h in odd["data"]] == ["s1", "s3"]  # camera c1: the odd subjects' first walks
    assert all(h["sequence_id"].endswith("-0") for h in odd["data"])
    assert odd["data"][0]["attributes"] == {
        "camera": "c1",
        "site": "lab",
        "captured_at": "2026-05-02T08:00:00Z",
        "tags": ["day"],
    }
    window = {"captured_from": "2026-05-02T00:00:00Z", "captured_to": "2026-05-04T00:00:00+00:00"}
    [timed] = search(plain, probe, k=5, filter=window)["data"]
    assert sorted(h["subject_id"] for h in timed["data"]) == ["s1", "s2"]
    body = {
        "gallery": "people",
        "k": 5,
        "filter": {"tags_any": ["night"]},
        "embeddings": [embedding_of(plain, sequence(1))],
    }
    [tagged] = plain.post("/search", json=body).json()["data"]
    assert [(h["subject_id"], h["sequence_id"]) for h in tagged["data"]] == [("s3", "s3-1")]

    naive = plain.post("/search", json={**body, "filter": {"captured_from": "2026-05-02T00:00:00"}})
    assert naive.status_code == 422 and naive.json()["error"]["code"] == "validation_error"
    unknown_key = plain.post("/search", json={**body, "filter": {"colour": "red"}})
    assert unknown_key.status_code == 422


def test_malformed_attributes_are_refused_at_enrolment_naming_the_key(plain):
    files = {"files": ("x.npy", npy_bytes(sequence(7)))}
    response = plain.post(
        "/galleries/people/subjects/x/sequences",
        files=files,
        data={"metadata": '{"captured_at": "last tuesday"}'},
    )
    assert response.status_code == 422 and "captured_at" in response.json()["error"]["message"]


def test_top_m_averages_a_subjects_best_sequences(plain):
    [one] = search(plain, ("q.npy", npy_bytes(sequence(2))), k=5)["data"]
    [two] = search(plain, ("q.npy", npy_bytes(sequence(2))), k=5, top_m=2)["data"]
    best = {h["subject_id"]: h["score"] for h in one["data"]}
    averaged = {h["subject_id"]: h["score"] for h in two["data"]}
    assert averaged["s2"] < best["s2"] == pytest.approx(1.0, abs=1e-5)  # its other walk pulls it down


# ----- embeddings in and out


def test_stored_embeddings_come_out_and_go_into_another_gallery(plain):
    stored = plain.get("/galleries/people/sequences/s2-1/embedding").json()
    np.testing.assert_allclose(stored["embedding"], embedding_of(plain, sequence(2, 1)), atol=1e-5)
    assert (stored["subject_id"], stored["dim"], stored["parts"]) == ("s2", 31 * 64, 31)
    assert plain.post("/galleries", json={"name": "copy"}).status_code == 201
    entry = {"embedding": stored["embedding"], "sequence_id": "moved", "metadata": {"site": "annex"}}
    body = {"model_hash": stored["model_hash"], "embeddings": [entry]}
    moved = plain.post("/galleries/copy/subjects/s2/sequences", json=body)
    assert moved.status_code == 201, moved.text
    assert moved.json()["data"][0]["sequence_id"] == "moved" and moved.json()["tracks"] == [None]
    again = plain.post("/galleries/copy/subjects/s2/sequences", json=body)  # a retry adds nothing
    assert again.status_code == 201 and plain.get("/galleries/copy").json()["sequence_count"] == 1
    [found] = search(plain, ("q.npy", npy_bytes(sequence(2, 1))), gallery="copy")["data"]
    assert found["data"][0]["sequence_id"] == "moved" and found["data"][0]["score"] == pytest.approx(
        1.0, abs=1e-5
    )

    other = hashlib.sha256(b"another model").hexdigest()
    mismatch = plain.post("/galleries/copy/subjects/x/sequences", json={**body, "model_hash": other})
    assert mismatch.status_code == 409 and mismatch.json()["error"]["code"] == "model_mismatch"
    unsigned = plain.post("/galleries/copy/subjects/x/sequences", json={"embeddings": [entry]})
    assert unsigned.status_code == 422
    assert plain.get("/galleries/copy/sequences/absent/embedding").status_code == 404


# ----- the API reference without the internet


def test_docs_load_nothing_from_another_host(plain):
    page = plain.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links)
    assert "http" not in page.text.replace("http-equiv", "")  # no absolute URL at all
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    for link in links:
        asset = plain.get(link)
        assert asset.status_code == 200 and len(asset.content) > 500
    assert plain.get("/docs/assets/index.html").status_code == 404
    assert plain.get("/redoc").status_code == 404  # ReDoc would come from a CDN: not served
    schema = plain.get("/openapi.json").json()
    assert schema["components"]["schemas"]["SearchRequest"]["examples"]
    assert {"/search", "/verify", "/model", "/galleries/{name}/sequences/{sequence_id}/embedding"} <= set(
        schema["paths"]
    )


def test_json_probes_may_be_base64_sequences(plain):
    body = {
        "gallery": "people",
        "k": 1,
        "sequences": [{"npy_b64": base64.b64encode(npy_bytes(sequence(4))).decode()}],
    }
    [probe] = plain.post("/search", json=body).json()["data"]
    assert probe["name"] == "sequence.npy" and probe["data"][0]["subject_id"] == "s4"


def test_the_cli_sends_a_video_as_it_is_and_a_sequence_checked(tmp_path):
    from client.api import file_upload

    video = tmp_path / "walk.MP4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 any container bytes")
    assert file_upload(video) == ("walk.MP4", video.read_bytes())  # the server extracts the person
    frames = tmp_path / "walk.npy"
    np.save(frames, sequence(1))
    name, data = file_upload(frames)
    assert name == "walk.npz" and data.startswith(b"PK")  # loaded here first, sent compressed
