"""Hostile and malformed input: API keys, settings that fail closed, and uploads built to hurt (pickles
that run code, zip bombs, climbing zip names, absurd frame counts, wrong dtypes, oversized bodies).

Each must get a clear 4xx with the one error shape, run nothing, and leave the server ready.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import cv2
import numpy as np
import pytest

from engine import EngineOptions
from gaitlu.errors import ConfigError
from service.settings import load_settings
from tests.support.servers import FULL_KEY, READ_KEY, client, error_code, npy_bytes
from tests.support.walkers import walking_sequence

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def api(tiny_artifact, tmp_path_factory):
    limits = {"max_upload_bytes": 2 * MIB, "max_decoded_bytes": 8 * MIB, "max_frames": 300, "max_files": 4}
    with client(tiny_artifact, tmp_path_factory.mktemp("security-data"), **limits) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(tiny_artifact, tmp_path_factory):
    keys = {"api_keys": [FULL_KEY], "read_only_keys": [READ_KEY]}
    with client(tiny_artifact, tmp_path_factory.mktemp("keyed-data"), **keys) as c:
        yield c


# ----- auth


def test_api_keys_and_scopes(keyed):
    npy = npy_bytes(walking_sequence(1))
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    assert error_code(keyed.get("/galleries"), 401) == "unauthorized"
    assert keyed.get("/galleries").headers["WWW-Authenticate"] == "APIKey"
    assert error_code(keyed.get("/galleries", headers={"X-API-Key": "x" * 24}), 401) == "unauthorized"
    assert error_code(keyed.get("/metrics"), 401) == "unauthorized"
    read, full = {"X-API-Key": READ_KEY}, {"X-API-Key": FULL_KEY}
    assert keyed.get("/galleries", headers=read).status_code == 200
    assert keyed.post("/embed", files={"files": ("a.npy", npy)}, headers=read).status_code == 200
    assert keyed.get("/metrics", headers=read).status_code == 200
    assert error_code(keyed.post("/galleries", json={"name": "g"}, headers=read), 403) == "forbidden"
    assert keyed.post("/galleries", json={"name": "g"}, headers=full).status_code == 201
    enroll = "/galleries/g/subjects/a/sequences"
    assert error_code(keyed.post(enroll, files={"files": ("a.npy", npy)}, headers=read), 403) == "forbidden"
    assert keyed.post(enroll, files={"files": ("a.npy", npy)}, headers=full).status_code == 201
    assert error_code(keyed.delete("/galleries/g", headers=read), 403) == "forbidden"
    assert keyed.get("/galleries/g", headers=read).json()["sequence_count"] == 1
    assert 'gaitlu_rejected_requests_total{reason="forbidden"}' in keyed.get("/metrics", headers=read).text


@pytest.mark.parametrize(
    "values",
    [
        {"host": "0.0.0.0"},  # public address, no keys
        {"host": "192.168.1.5"},
        {"api_keys": ["changeme"]},  # placeholder-strength key
        {"api_keys": [FULL_KEY], "read_only_keys": [FULL_KEY]},
        {"read_only_keys": [READ_KEY]},  # read-only keys but nobody may write
        {"cors_origins": ["evil.example"]},  # not an origin
        {"max_batch": 0},
        {"max_files": 500, "max_queue": 10},
    ],
)
def test_unsafe_settings_are_refused(tmp_path, values):
    with pytest.raises(ConfigError):
        load_settings(artifact=tmp_path, data_dir=tmp_path, **values)


def test_the_engine_knobs_are_the_engines_own_with_one_default_each(tmp_path, monkeypatch):
    settings = load_settings(artifact=tmp_path, data_dir=tmp_path)
    assert settings.engine == EngineOptions() and settings.engine.decode_timeout_s == 30
    assert settings.engine_settings().options is settings.engine  # handed over whole, not copied by hand
    monkeypatch.setenv("GAITLU_DECODE_TIMEOUT_S", "5")  # the documented variable
    monkeypatch.setenv("GAITLU_ENGINE__VIDEO_WORKERS", "3")  # nested, as GAITLU_INDEX__NPROBE is
    settings = load_settings(artifact=tmp_path, data_dir=tmp_path, max_batch=2)
    assert (settings.engine.decode_timeout_s, settings.engine.video_workers, settings.engine.max_batch) == (
        5,
        3,
        2,
    )
    assert (
        load_settings(artifact=tmp_path, data_dir=tmp_path, decode_timeout_s=7).engine.decode_timeout_s == 7
    )
    monkeypatch.setenv("GAITLU_MAX_QUEUE", "many")
    with pytest.raises(ConfigError, match=r"engine\.max_queue"):
        load_settings(artifact=tmp_path, data_dir=tmp_path)


def test_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GAITLU_API_KEYS", f"{FULL_KEY}, {FULL_KEY}x")
    monkeypatch.setenv("GAITLU_MAX_BATCH", "3")
    settings = load_settings(artifact=tmp_path, data_dir=tmp_path, host="0.0.0.0")
    assert [k.get_secret_value() for k in settings.api_keys] == [FULL_KEY, FULL_KEY + "x"]
    assert settings.engine.max_batch == 3
    assert FULL_KEY not in repr(settings)  # secrets stay out of logs
    monkeypatch.delenv("GAITLU_API_KEYS")
    assert load_settings(artifact=tmp_path, data_dir=tmp_path, host="0.0.0.0", insecure=True).insecure


def test_index_settings_come_from_the_environment_and_reach_the_galleries(
    tiny_artifact, tmp_path, monkeypatch
):
    monkeypatch.setenv("GAITLU_INDEX__NPROBE", "64")
    monkeypatch.setenv("GAITLU_INDEX", '{"exact_max": 5000}')  # as JSON; the nested variable wins per key
    with client(tiny_artifact, tmp_path) as api:
        settings = api.app.state.engine.store.settings
    assert (settings.nprobe, settings.exact_max, settings.codec) == (64, 5000, "pqfs")
    monkeypatch.setenv("GAITLU_INDEX__NPROB", "64")  # a typo is refused, not ignored
    with pytest.raises(ConfigError, match=r"index\.nprob"):
        load_settings(artifact=tmp_path, data_dir=tmp_path)


# ----- hostile uploads


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _png(frame: np.ndarray) -> bytes:
    return cv2.imencode(".png", frame)[1].tobytes()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _object_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


HOSTILE = {
    "zip_bomb": ("bomb.zip", lambda: _zip({"0.png": bytes(64 * MIB)}), "invalid_sequence"),
    "npz_bomb": ("bomb.npz", lambda: _npz(seq=np.zeros((100_000, 8, 8), np.uint8)), "invalid_sequence"),
    "zip_traversal": (
        "walk.zip",
        lambda: _zip({"../../evil.png": _png(walking_sequence(1)[0])}),
        "invalid_sequence",
    ),
    "zip_absolute": (
        "walk.zip",
        lambda: _zip({"/tmp/evil.png": _png(walking_sequence(1)[0])}),
        "invalid_sequence",
    ),
    "zero_frames": ("empty.npy", lambda: npy_bytes(np.zeros((0, 64, 44), np.uint8)), "invalid_sequence"),
    "100k_frames": ("long.npy", lambda: npy_bytes(np.zeros((100_000, 1, 1), np.uint8)), "invalid_sequence"),
    "complex_dtype": ("c.npy", lambda: npy_bytes(np.zeros((4, 64, 44), np.complex64)), "invalid_sequence"),
    "float_0_255": ("f.npy", lambda: npy_bytes(walking_sequence(1).astype(np.float64)), "invalid_sequence"),
    "object_npy": ("o.npy", _object_npy, "invalid_sequence"),
    "4d_array": ("d.npy", lambda: npy_bytes(np.zeros((2, 3, 64, 44), np.uint8)), "invalid_sequence"),
    "garbage": ("walk.npy", lambda: b"\x93NUMPY garbage", "invalid_sequence"),
    "unknown_format": ("walk.bin", lambda: b"hello world", "invalid_sequence"),
    "empty_file": ("walk.pkl", lambda: b"", "invalid_sequence"),
    "no_silhouette": ("dark.npy", lambda: npy_bytes(np.zeros((5, 120, 90), np.uint8)), "invalid_sequence"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_uploads_get_a_clear_4xx(api, case):
    name, build, code = HOSTILE[case]
    response = api.post("/embed", files={"files": (name, build())})
    assert error_code(response, 422) == code
    assert response.json()["error"]["message"].startswith(name)  # names the file
    assert api.get("/readyz").status_code == 200


def test_malicious_pickle_runs_nothing(api, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsCode(str(marker)))
    for route, field, extra in (("/embed", "files", {}), ("/search", "file", {"gallery": "any"})):
        response = api.post(route, files={field: ("walk.pkl", payload)}, data=extra)
        if route == "/search":  # the gallery is checked first: no decoding for an unknown gallery
            assert error_code(response, 404) == "not_found"
        else:
            assert error_code(response, 422) == "unsafe_pickle"
    assert api.post("/galleries", json={"name": "p"}).status_code == 201
    response = api.post("/galleries/p/subjects/x/sequences", files={"files": ("walk.pkl", payload)})
    assert error_code(response, 422) == "unsafe_pickle"
    assert not marker.exists()
    assert api.get("/galleries/p").json()["sequence_count"] == 0
    assert api.get("/readyz").status_code == 200


def test_oversized_and_mistyped_requests(api):
    big = np.zeros((3 * MIB,), np.uint8).tobytes()
    response = api.post("/embed", files={"files": ("big.npy", big)})
    assert error_code(response, 413) == "payload_too_large"
    assert response.json()["error"]["detail"] == {"limit_bytes": 2 * MIB}
    for route in ("/embed", "/search", "/galleries/p/subjects/x/sequences", "/galleries"):
        response = api.post(route, content=b"walk", headers={"Content-Type": "text/plain"})
        assert error_code(response, 415) == "unsupported_media_type", route
    too_many = [("files", (f"{i}.npy", npy_bytes(walking_sequence(i)))) for i in range(5)]
    assert error_code(api.post("/embed", files=too_many), 400) == "bad_request"
    assert api.get("/readyz").status_code == 200
