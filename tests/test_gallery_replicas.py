"""Two API replicas share one gallery on a Milvus server (milvus-lite on loopback): what one
acknowledges the other serves at once, deletes propagate, and a replica killed with SIGKILL loses
nothing it acknowledged (the gallery lives on the server, not in the replica)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import httpx
import pytest

from tests.support.cli import run_cli
from tests.support.milvus import MilvusStandalone, standalone_python, unique_db
from tests.support.ports import free_port
from tests.support.servers import ServerProcess, npy_bytes
from tests.support.walkers import walking_sequence


def replica(artifact, root, name: str, uri: str, db: str) -> ServerProcess:
    env = {"gallery_backend": "milvus", "milvus_uri": uri, "milvus_db": db}
    return ServerProcess(artifact, root / name, root / f"{name}.log", **env)


def enrol(url: str, sequence_id: str, subject: str, seed: int) -> httpx.Response:
    files = {"files": (f"{sequence_id}.npy", npy_bytes(walking_sequence(seed, 4)))}
    return httpx.post(
        f"{url}/galleries/g/subjects/{subject}/sequences",
        files=files,
        data={"sequence_ids": sequence_id},
        timeout=30,
    )


def best(url: str, seed: int) -> dict:
    query = {"files": ("q.npy", npy_bytes(walking_sequence(seed, 4)))}
    found = httpx.post(f"{url}/search", files=query, data={"gallery": "g", "k": "1"}, timeout=30)
    assert found.status_code == 200, found.text
    [probe] = found.json()["data"]
    return probe["data"][0] if probe["data"] else {}


@pytest.mark.slow
def test_two_replicas_share_a_gallery_and_a_killed_one_loses_nothing(tiny_artifact, tmp_path, milvus_uri):
    db = unique_db()
    a = replica(tiny_artifact, tmp_path, "a", milvus_uri, db).start()
    b = replica(tiny_artifact, tmp_path, "b", milvus_uri, db).start()
    try:
        assert httpx.post(f"{a.url}/galleries", json={"name": "g"}).status_code == 201
        assert (
            httpx.post(f"{b.url}/galleries", json={"name": "g"}).json()["error"]["code"] == "gallery_exists"
        )
        assert httpx.get(f"{b.url}/readyz").status_code == 200
        # Enrol through A, found through B at once (no refresh, no wait); and the other way round.
        for i in range(3):
            assert enrol(a.url, f"q{i}", f"s{i}", seed=i).status_code == 201
            hit = best(b.url, seed=i)
            assert (hit["sequence_id"], hit["subject_id"]) == (f"q{i}", f"s{i}")
            assert hit["score"] == pytest.approx(1.0, abs=1e-4)
        assert httpx.delete(f"{b.url}/galleries/g/sequences/q1").status_code == 204
        assert best(a.url, seed=1).get("sequence_id") != "q1"
        assert httpx.get(f"{a.url}/galleries/g/sequences/q1").status_code == 404
        assert httpx.get(f"{a.url}/galleries/g").json()["sequence_count"] == 2

        # Enrol through A in a loop and kill it mid-flight; B then holds every acknowledged sequence.
        acked: dict[str, str] = {}
        sent: set[str] = set()

        def loop(worker: int) -> None:
            n = worker
            with contextlib.suppress(httpx.TransportError):  # the replica is gone
                while time.monotonic() < until:
                    sequence_id, subject = f"k{n}", f"s{n % 4}"
                    sent.add(sequence_id)
                    if enrol(a.url, sequence_id, subject, seed=100 + n).status_code == 201:
                        acked[sequence_id] = subject
                    n += 2

        until = time.monotonic() + 60
        threads = [threading.Thread(target=loop, args=(w,)) for w in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acked) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        a.kill()  # SIGKILL with an enrolment in flight
        for thread in threads:
            thread.join(30)
        assert len(acked) >= 8
        gallery = httpx.get(f"{b.url}/galleries/g").json()
        assert len(acked) + 2 <= gallery["sequence_count"] <= len(sent) + 2
        for sequence_id, subject in acked.items():
            stored = httpx.get(f"{b.url}/galleries/g/sequences/{sequence_id}")
            assert stored.status_code == 200 and stored.json()["subject_id"] == subject
        n = int(max(acked, key=lambda s: int(s[1:]))[1:])
        hit = best(b.url, seed=100 + n)
        assert hit["sequence_id"] == f"k{n}"
        metrics = httpx.get(f"{b.url}/metrics").text
        assert 'gaitlu_gallery_sequences{gallery="g"}' in metrics
    finally:
        a.kill()
        b.stop()


def test_a_centred_model_on_milvus_is_refused_at_start_naming_the_remedy(
    calibrated_artifact, tmp_path, milvus_uri, capsys, monkeypatch
):
    root = logging.getLogger()  # `serve` points the root logger at this test's captured stderr: undone after
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("GAITLU_GALLERY_BACKEND", "milvus")
    monkeypatch.setenv("GAITLU_MILVUS_URI", milvus_uri)
    monkeypatch.setenv("GAITLU_MILVUS_DB", unique_db())
    port = str(free_port())
    result = run_cli(
        capsys, "serve", "--artifact", calibrated_artifact, "--data-dir", tmp_path, "--port", port
    )
    assert result.code == 2, result
    assert "--centring off" in result.err and "Traceback" not in result.err


@pytest.mark.slow
def test_replicas_on_milvus_standalone_enrol_search_and_filter_sequences_without_attributes(
    tiny_artifact, tmp_path
):
    """Milvus standalone 2.3 (the server binary in the `milvus` package on PyPI) has no nullable fields
    and names a hit's key "id": enrolments without attributes, searches and filters work through HTTP."""
    python = standalone_python()
    if python is None:
        pytest.skip("no Milvus standalone: pip install milvus==2.3.5 into .data/milvus-server/venv")
    server = MilvusStandalone(python, tmp_path / "milvus", tmp_path / "milvus.log")
    a = None
    try:
        server.start()
        a = replica(tiny_artifact, tmp_path, "a", server.uri, "default").start()
        assert httpx.post(f"{a.url}/galleries", json={"name": "g"}, timeout=120).status_code == 201
        assert enrol(a.url, "q0", "s0", seed=0).status_code == 201  # no attributes at all
        files = {"files": ("q1.npy", npy_bytes(walking_sequence(1, 4)))}
        metadata = '{"camera": "gate", "captured_at": "2026-01-01T00:00:00Z"}'
        tagged = httpx.post(
            f"{a.url}/galleries/g/subjects/s1/sequences",
            files=files,
            data={"sequence_ids": "q1", "metadata": metadata},
            timeout=30,
        )
        assert tagged.status_code == 201, tagged.text
        for seed in (0, 1):
            hit = best(a.url, seed)
            assert (hit["sequence_id"], hit["subject_id"]) == (f"q{seed}", f"s{seed}")
        query = {"files": ("q.npy", npy_bytes(walking_sequence(0, 4)))}
        for given, found in (
            ('{"camera": ["gate"]}', {"s1"}),
            ('{"captured_to": "2027-01-01T00:00:00Z"}', {"s1"}),
        ):
            answer = httpx.post(
                f"{a.url}/search", files=query, data={"gallery": "g", "k": "5", "filter": given}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            assert {h["subject_id"] for h in answer.json()["data"][0]["data"]} == found, given
    finally:
        if a is not None:
            a.kill()
        server.kill()
