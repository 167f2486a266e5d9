"""`gaitlu enroll / search / galleries` against a real server (uvicorn in a thread, tiny artifact), and
the client's retry logic against scripted transports (httpx.MockTransport)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from client.api import ApiError, GaitluClient, RetryPolicy, UnreachableError, sequence_npz
from client.enroll import Layout, Outcome, RemoteTarget, enroll_items, scan_dataset
from engine import STORE_FILE
from gaitlu.pictures import PNG_PREFIX
from gaitlu.preprocess import to_model_frames
from gaitlu.sequence import load_sequence, save_sequence
from gallery import LocalStore
from gallery.previews import split_gei
from runtime import load_artifact_embedder
from service.settings import load_settings
from tests.support.cli import run_cli
from tests.support.ports import free_port
from tests.support.servers import served_in_thread
from tests.support.walkers import walking_sequence

KEY = "test-key-0123456789abcdef"
SUBJECTS = ("001", "002", "003")
CONDITIONS = ("nm-01", "nm-02")
VIEW = "090"


def walker(subject: int, condition: int, frames: int = 8) -> np.ndarray:
    """(T, 64, 64) aligned frames: one body per subject, one walk per condition."""
    return walking_sequence(subject, frames, walk=condition, width=64)


@pytest.fixture(scope="module")
def opengait_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 subjects x 2 conditions x 1 view, OpenGait layout."""
    root = tmp_path_factory.mktemp("opengait")
    for s, subject in enumerate(SUBJECTS):
        for c, condition in enumerate(CONDITIONS):
            save_sequence(
                walker(s, c), root / subject / condition / VIEW / f"{subject}-{condition}-{VIEW}.pkl"
            )
    return root


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app on 127.0.0.1 with API keys, served by uvicorn in a thread; yields its URL."""
    with served_in_thread(tiny_artifact, tmp_path_factory.mktemp("server-data"), api_keys=[KEY]) as url:
        yield url


def enroll(
    capsys: pytest.CaptureFixture[str], root: Path, gallery: str, server: str, *extra: str
) -> tuple[int, dict]:
    """`gaitlu enroll ROOT --json` against `server`: (exit code, the JSON summary)."""
    result = run_cli(
        capsys, "enroll", root, "--gallery", gallery, "--server", server, "--api-key", KEY, "--json", *extra
    )
    return result.code, result.json()


def test_enroll_resumes_without_enrolling_twice(capsys, opengait_tree: Path, server: str) -> None:
    code, first = enroll(capsys, opengait_tree, "resume", server, "--create", "--concurrency", "3")
    assert (code, first["enrolled"], first["skipped"], first["failed"]) == (0, 6, 0, [])

    code, again = enroll(capsys, opengait_tree, "resume", server)
    assert (code, again["enrolled"], again["skipped"]) == (0, 0, 6)

    with GaitluClient(server, KEY) as client:
        [held] = client.subject_sequences("resume", "002")[:1]
        client.delete_sequence("resume", held.sequence_id)  # lose one: only it is sent again
        code, partial = enroll(capsys, opengait_tree, "resume", server)
        assert (code, partial["enrolled"], partial["skipped"]) == (0, 1, 5)
        info = client.get_gallery("resume")
        subjects = {s.subject_id: s.sequence_count for s in client.iter_subjects("resume", page_size=2)}
    assert (info.subject_count, info.sequence_count) == (3, 6)
    assert subjects == dict.fromkeys(SUBJECTS, 2)


def test_bad_file_is_reported_and_skipped_with_exit_1(capsys, tmp_path: Path, server: str) -> None:
    for s, subject in enumerate(SUBJECTS[:2]):
        save_sequence(walker(s, 0), tmp_path / subject / "walk.npy")
    (tmp_path / "002" / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    code, summary = enroll(capsys, tmp_path, "flat", server, "--layout", "flat", "--create")
    assert code == 1
    assert summary["enrolled"] == 2
    [failed] = summary["failed"]
    assert failed["path"] == "002/broken.npy" and "broken.npy" in failed["reason"]

    code, out, _ = run_cli(
        capsys, "enroll", str(tmp_path), "--gallery", "flat", "--layout", "flat", "--server", server,
        "--api-key", KEY,
    )  # fmt: skip
    assert code == 1 and "002/broken.npy" in out  # the human summary names it too


def test_search_prints_a_ranked_table_and_json(capsys, opengait_tree: Path, server: str) -> None:
    enroll(capsys, opengait_tree, "searchable", server, "--create")
    query = opengait_tree / "002" / "nm-01" / VIEW / f"002-nm-01-{VIEW}.pkl"
    base = ("search", str(query), "--gallery", "searchable", "--server", server, "--api-key", KEY, "-k", "3")

    code, out, _ = run_cli(capsys, *base)
    assert code == 0 and "rank" in out and "002" in out

    other = opengait_tree / "003" / "nm-01" / VIEW / f"003-nm-01-{VIEW}.pkl"
    code, out, _ = run_cli(capsys, *base, str(other), "--json")  # two probes, one call
    answer = json.loads(out)  # the API's SearchResponse, key for key
    assert code == 0 and answer["count"] == 2 and answer["gallery"] == "searchable"
    hits = answer["data"][0]["data"]
    assert len(hits) == 3 and answer["data"][1]["data"][0]["subject_id"] == "003"
    assert hits[0]["subject_id"] == "002" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert hits[0]["far"] is None and answer["data"][0]["unknown"] is None  # uncalibrated, no threshold

    code, _, err = run_cli(capsys, *base, "--max-far", "0.001")
    assert code == 2 and "not_calibrated" in err and "gaitlu calibrate" in err


def test_galleries_lists_sizes(capsys, opengait_tree: Path, server: str) -> None:
    enroll(capsys, opengait_tree, "listed", server, "--create")
    code, out, _ = run_cli(capsys, "galleries", "--server", server, "--api-key", KEY, "--json")
    listing = json.loads(out)  # the API's GalleriesPublic, key for key
    rows = {g["name"]: g for g in listing["data"]}
    assert code == 0 and listing["count"] == len(rows)
    assert (rows["listed"]["subject_count"], rows["listed"]["sequence_count"]) == (3, 6)
    code, out, _ = run_cli(capsys, "galleries", "--server", server, "--api-key", KEY)
    assert code == 0 and "listed" in out

    with GaitluClient(server, KEY) as client:
        client.delete_subject("listed", "001")
        assert client.get_gallery("listed").subject_count == 2
        client.delete_gallery("listed")
        assert "listed" not in {g.name for g in client.list_galleries()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--api-key", "wrong-key-0123456789abcdef"), "unknown API key"),
        (("--api-key", KEY, "--gallery", "absent"), "no gallery named 'absent'"),
    ],
)
def test_config_errors_exit_2(capsys, opengait_tree: Path, server: str, args, message) -> None:
    gallery = () if "--gallery" in args else ("--gallery", "any")
    code, _, err = run_cli(capsys, "enroll", str(opengait_tree), "--server", server, *gallery, *args)
    assert code == 2 and message in err


def test_unreachable_server_exits_2(capsys, opengait_tree: Path) -> None:
    port = free_port()  # nobody listens there
    code, _, err = run_cli(
        capsys, "enroll", str(opengait_tree), "--gallery", "g", "--server", f"http://127.0.0.1:{port}",
        "--retries", "1",
    )  # fmt: skip
    assert code == 2 and "no answer from" in err


def test_offline_builds_the_same_gallery(
    capsys, opengait_tree: Path, server: str, tiny_artifact, tmp_path
) -> None:
    enroll(capsys, opengait_tree, "online", server, "--create")
    code, out, _ = run_cli(
        capsys, "enroll", str(opengait_tree), "--gallery", "online", "--offline", "--data-dir", str(tmp_path),
        "--artifact", str(tiny_artifact), "--create", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["enrolled"] == 6
    assert load_settings(artifact=tiny_artifact, data_dir=tmp_path).store_path == tmp_path / STORE_FILE

    query = opengait_tree / "003" / "nm-02" / VIEW / f"003-nm-02-{VIEW}.pkl"
    embedder = load_artifact_embedder(tiny_artifact)
    vector = embedder.embed_flat([to_model_frames(load_sequence(query))])[0]
    with GaitluClient(server, KEY) as client:
        [embedded] = client.embed([("q.pkl", query.read_bytes())]).data
        np.testing.assert_allclose(embedded.embedding, vector, atol=1e-5)  # same preprocessing, same model
        remote = client.search("online", ("q.pkl", query.read_bytes()), k=3).data[0].data
        assert client.search("online", vector, k=3).data[0].data[0].subject_id == "003"  # by embedding
        remote_pictures = {
            s.sequence_id: s.gei_png
            for subject in SUBJECTS
            for s in client.subject_sequences("online", subject)
        }
    with LocalStore(tmp_path / STORE_FILE) as store:
        local = store.search("online", vector, embedder.model_hash, k=3)
        local_pictures = {
            s.sequence_id: split_gei(s.metadata)[1]
            for subject in SUBJECTS
            for s in store.list_sequences("online", subject)
        }
    assert local_pictures == remote_pictures  # the same sequences, with the same GEI pictures stored
    assert all(picture is not None and picture.startswith(PNG_PREFIX) for picture in local_pictures.values())
    assert [h.subject_id for h in local] == [h.subject_id for h in remote]
    np.testing.assert_allclose([h.score for h in local], [h.score for h in remote], atol=1e-4)


class FailingAfter:
    """A target that enrolls `good` sequences, then finds the server gone: a failure that dooms the rest."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.enrolled: list[str] = []
        self.lock = threading.Lock()

    def prepare(self, create: bool) -> None: ...

    def held(self, items) -> set[str]:
        return {items[0].sequence_id}

    def enroll(self, item, frames) -> Outcome:
        with self.lock:
            if len(self.enrolled) >= self.good:
                raise UnreachableError("no answer")
            self.enrolled.append(item.relpath)
        return Outcome.enrolled

    def is_fatal(self, exc) -> bool:
        return isinstance(exc, UnreachableError)


def test_a_fatal_failure_stops_the_run_and_every_item_is_accounted_for(tmp_path: Path) -> None:
    for i in range(40):
        save_sequence(walker(0, 0, frames=2), tmp_path / f"s{i % 4}" / f"{i}.npy")
    items = scan_dataset(tmp_path, Layout.flat)
    target = FailingAfter(good=5)
    summary = enroll_items(items, target, concurrency=2)
    assert isinstance(summary.fatal, UnreachableError) and summary.exit_code == 2
    assert (summary.enrolled, summary.skipped, summary.failed) == (5, 1, [])
    assert summary.not_done == 40 - 5 - 1  # the rest: stopped, never silently dropped
    assert len(items) == 40 and len({item.sequence_id for item in items}) == 40


def test_the_client_commands_import_neither_torch_nor_onnxruntime() -> None:
    code = "import sys, client.cli; sys.exit(bool({'torch', 'onnxruntime', 'faiss'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----- retries, against scripted transports


class Script:
    """A transport answering from a list (a response, or an exception to raise), recording requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def scripted(script: Script, attempts: int = 4) -> tuple[GaitluClient, list[float]]:
    sleeps: list[float] = []
    client = GaitluClient(
        "http://gaitlu.test",
        KEY,
        retry=RetryPolicy(attempts=attempts, base_delay=0.5, max_delay=4.0),
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        rng=random.Random(0),
    )
    return client, sleeps


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": code, "detail": None}}, headers=headers
    )


GALLERIES = httpx.Response(200, json={"data": [], "count": 0})


def test_retries_honour_retry_after_then_back_off() -> None:
    script = Script(error(429, "overloaded", {"Retry-After": "3"}), error(503, "not_ready"), GALLERIES)
    client, sleeps = scripted(script)
    assert client.list_galleries() == []
    assert len(script.requests) == 3
    assert 3.0 <= sleeps[0] <= 3.5  # Retry-After plus at most base_delay of jitter
    assert 0.0 <= sleeps[1] <= 1.0  # attempt 1: up to base_delay * 2
    assert all(r.headers["X-API-Key"] == KEY for r in script.requests)


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy, rng = RetryPolicy(base_delay=0.5, max_delay=4.0), random.Random(1)
    for attempt, ceiling in enumerate((0.5, 1.0, 2.0, 4.0, 4.0)):
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert max(delays) <= ceiling and max(delays) > 0.7 * ceiling  # full jitter spans [0, ceiling]


def test_connection_errors_retry_then_give_up() -> None:
    refused = httpx.ConnectError("refused")
    client, sleeps = scripted(Script(refused, httpx.ReadTimeout("slow"), GALLERIES))
    assert client.list_galleries() == []
    assert len(sleeps) == 2

    client, sleeps = scripted(Script(refused, refused, refused), attempts=3)
    with pytest.raises(UnreachableError, match="after 3 attempt"):
        client.list_galleries()


def test_final_error_status_carries_the_server_error() -> None:
    client, sleeps = scripted(Script(*[error(502, "bad_gateway")] * 2), attempts=2)
    with pytest.raises(ApiError) as raised:
        client.list_galleries()
    assert (raised.value.status, raised.value.code, len(sleeps)) == (502, "bad_gateway", 1)

    client, sleeps = scripted(Script(error(422, "invalid_sequence")))
    with pytest.raises(ApiError, match="invalid_sequence"):
        client.list_galleries()
    assert sleeps == []  # a client error is final


ENROLLED = httpx.Response(
    201,
    json={
        "gallery": "g",
        "subject_id": "s",
        "timings": {},
        "data": [
            {"sequence_id": "x", "subject_id": "s", "metadata": None, "created": "2026-11-25T12:00:00Z"}
        ],
        "count": 1,
    },
)


def _sequence_ids(request: httpx.Request) -> list[bytes]:
    """The `sequence_ids` fields of a multipart enrolment, as sent."""
    body = request.read()
    return [part.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0]
            for part in body.split(b'name="sequence_ids"')[1:]]  # fmt: skip


def test_enrollment_is_retried_after_any_transient_failure_with_the_same_ids() -> None:
    files = [("a.npz", b"data"), ("b.npz", b"data")]
    for failure in (error(500, "internal_error"), error(503, "inference_failed"), httpx.ReadTimeout("slow")):
        script = Script(failure, ENROLLED)
        client, _ = scripted(script)
        client.enroll("g", "s", files)  # no ids given: the client makes them, once
        first, second = (_sequence_ids(r) for r in script.requests)
        assert first == second and len(set(first)) == 2
    script = Script(error(500, "internal_error"), ENROLLED)
    client, _ = scripted(script)
    client.enroll("g", "s", files[:1], sequence_ids=["x"])
    assert [_sequence_ids(r) for r in script.requests] == [[b"x"], [b"x"]]


class LosingProxy:
    """A transport in front of a real server that loses the server's answer to the first POST (a 503
    in its place, or a dropped connection) after the server has applied it."""

    def __init__(self, upstream: httpx.Client, loss: httpx.Response | Exception) -> None:
        self.upstream = upstream
        self.losses = [loss]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k != "host"}  # the upstream's own Host
        sent = self.upstream.build_request(
            request.method, request.url.path, content=request.read(), headers=headers
        )
        answer = self.upstream.send(sent)
        if self.losses and request.method == "POST":
            loss = self.losses.pop()
            if isinstance(loss, Exception):
                raise loss
            return loss
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)


def test_a_retried_enrolment_whose_first_answer_was_lost_is_enrolled_once(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    losses = [httpx.Response(503, json={"error": {"code": "lost", "message": "lost"}}), httpx.ReadError("x")]
    with served_in_thread(tiny_artifact, tmp_path / "data") as url, httpx.Client(base_url=url) as upstream:
        upstream.post("/galleries", json={"name": "g"}).raise_for_status()
        for i, loss in enumerate(losses):
            proxy = httpx.MockTransport(LosingProxy(upstream, loss))
            with GaitluClient("http://proxy.test", transport=proxy, sleep=lambda s: None) as client:
                client.enroll("g", "walker", [("a.npz", sequence_npz(walking_sequence(40 + i)))])
        assert upstream.get("/galleries/g").json()["sequence_count"] == len(losses)  # each once, no copy


def test_a_changed_file_at_an_enrolled_path_is_a_conflict_not_skipped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: str
) -> None:
    root = tmp_path / "flat"
    save_sequence(walker(0, 0), root / "001" / "a.npy")
    save_sequence(walker(1, 0), root / "001" / "b.npy")
    code, first = enroll(capsys, root, "changed", server, "--layout", "flat", "--create")
    assert (code, first["enrolled"]) == (0, 2)
    save_sequence(walker(2, 1), root / "001" / "a.npy")  # other content at the same path

    class Unlisted(RemoteTarget):  # as when another run enrolled the path after this one listed
        def held(self, items) -> set[str]:
            return set()

    with GaitluClient(server, KEY) as client:
        summary = enroll_items(scan_dataset(root, Layout.flat), Unlisted(client, "changed"))
    assert (summary.enrolled, summary.skipped, summary.failed) == (1, 0, [])  # b: an idempotent repeat
    [(path, reason)] = summary.conflicts
    assert path == "001/a.npy" and "different embedding" in reason and summary.exit_code == 1
