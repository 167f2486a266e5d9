"""Hostile input and overload, through HTTP: cheap requests that used to cost the server a lot,
wrong answers that used to be 200 or 500, browsers on other sites, and a server at its limits.

In-process (TestClient) where only the answer matters; a real `gaitlu serve` child process where the
socket matters (slow bodies, connections held open, Host headers as a browser sends them).
"""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pydantic_core
import pytest
from pydantic import ValidationError

from gaitlu.errors import ConfigError
from gaitlu.schemas import MAX_EMBEDDING_FLOATS, MAX_SEQUENCES, SearchParams, SearchRequest
from service.errors import InvalidRequest
from service.settings import load_settings
from service.uploads import load_json
from tests.support.cli import gaitlu_argv
from tests.support.servers import REPO, ServerProcess, client, error_code, gauge, npy_bytes, until
from tests.support.walkers import walking_sequence
from tests.test_safepickle import ATTACKS

MIB = 1024 * 1024
CHEAP_CPU_S = 5.0  # CPU seconds a refused attack may cost (the strips once took 68 s to align)


BAND = np.zeros((8, 512, 4096), np.uint8)  # frames of a sane size, each holding a 16 x 4096 band
BAND[:, 248:264] = 255


def npz_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, silhouettes=arr)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def api(tiny_artifact, tmp_path_factory):
    with client(
        tiny_artifact, tmp_path_factory.mktemp("hostile-data"), cors_origins=["https://app.example.org"]
    ) as c:
        c.post("/galleries", json={"name": "g"}).raise_for_status()
        files = {"files": ("a.npy", npy_bytes(walking_sequence(1)))}
        c.post("/galleries/g/subjects/s1/sequences", files=files).raise_for_status()
        yield c


# ----- cheap uploads that cost a lot


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        # A 3 KB .npz: 720 frames of 1 x 4096 once took 68 s to align.
        ("strips.npz", npz_bytes(np.full((720, 1, 4096), 255, np.uint8)), "under the 16-pixel side minimum"),
        ("band.npz", npz_bytes(BAND), "person box over 4x wider than tall"),
        ("bomb.pkl", ATTACKS["dict bomb"][0](), "EMPTY_DICT"),
        ("memo.pkl", ATTACKS["huge memo"][0](), "memo slot"),
    ],
)
def test_cheap_uploads_that_cost_a_lot_are_refused_quickly(api, name: str, data: bytes, match: str) -> None:
    """What a refusal costs is the CPU time of this process (the in-process server's threads included),
    which other load on the machine does not inflate as it does wall-clock time."""
    started = time.process_time()
    response = api.post("/embed", files={"files": (name, data)})
    assert error_code(response, 422) in ("invalid_sequence", "unsafe_pickle")
    assert match in response.json()["error"]["message"]
    assert time.process_time() - started < CHEAP_CPU_S, f"{name} was refused after seconds of CPU work"


# ----- wrong answers and 500s


def test_a_two_dimensional_array_is_not_a_sequence(api) -> None:
    flat = np.linspace(0, 1, 320).reshape(10, 32)  # float64 (10, 32): was embedded with 200
    for data in (npy_bytes(flat), pickle.dumps(flat)):
        response = api.post("/embed", files={"files": ("x.npy" if data[:1] == b"\x93" else "x.pkl", data)})
        assert error_code(response, 422) == "invalid_sequence"
        assert "shaped (T, H, W)" in response.json()["error"]["message"]


def test_empty_frames_are_dropped_and_a_sequence_without_enough_is_refused_with_the_count(api) -> None:
    """A blank (30, 64, 44) sequence was once embedded (200) and enrolled (201) as a person, and a
    half-blank one reported frames=30: empty frames are dropped, as docs/api.md says."""
    blank = {"files": ("blank.npy", npy_bytes(np.zeros((30, 64, 44), np.uint8)))}
    for path in ("/embed", "/galleries/g/subjects/nobody/sequences"):
        refused = api.post(path, files=blank)
        assert error_code(refused, 422) == "invalid_sequence", path
        assert "has 0 non-empty frames of 30; at least 1 needed" in refused.json()["error"]["message"]
    assert api.get("/galleries/g/subjects/nobody").status_code == 404  # nothing was enrolled
    half = walking_sequence(5, 30)
    half[1::2] = 0  # every other frame blank
    files = {"files": ("half.npy", npy_bytes(half))}
    embedded = api.post("/embed", files=files)
    assert embedded.status_code == 200 and embedded.json()["data"][0]["frames"] == 15
    full = api.post("/embed", files={"files": ("kept.npy", npy_bytes(half[::2]))}).json()["data"][0]
    assert embedded.json()["data"][0]["embedding"] == pytest.approx(full["embedding"], abs=1e-5)
    enrolled = api.post("/galleries/g/subjects/half/sequences", files=files)
    assert enrolled.status_code == 201, enrolled.text
    api.delete("/galleries/g/subjects/half").raise_for_status()  # the module's gallery as it was


def test_listing_offsets_past_sqlites_integers_are_refused_by_the_route(api) -> None:
    for offset in ("9223372036854775808", "99999999999999999999999"):
        response = api.get("/galleries/g/subjects", params={"offset": offset})
        assert error_code(response, 422) == "validation_error"  # the route's own bound, not the store's
        assert response.json()["error"]["detail"][0]["loc"] == ["query", "offset"]
    assert api.get("/galleries/g/subjects", params={"offset": "9223372036854775807"}).json()["data"] == []


def test_absurd_embeddings_are_refused_not_zeroed(api) -> None:
    dim = api.get("/galleries/g").json()["dim"]
    for value in (2e19, 1e300):
        response = api.post("/search", json={"gallery": "g", "embeddings": [[value] * dim, [0.5] * dim]})
        assert response.status_code == 200, response.text  # each probe is answered on its own
        absurd, fine = response.json()["data"]
        assert absurd["error"]["code"] == "invalid_input" and absurd["data"] == []
        assert fine["error"] is None and fine["count"] == 1


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_json_bodies_with_nan_or_infinity_are_422(api, token: str) -> None:
    dim = api.get("/galleries/g").json()["dim"]
    npy = base64.b64encode(npy_bytes(walking_sequence(2))).decode()
    bodies = {  # each valid JSON but for one NaN or Infinity token
        "/search": f'{{"gallery": "g", "embeddings": [[{token}{", 0.5" * (dim - 1)}]]}}',
        "/embed": f'{{"sequences": [{{"npy_b64": "{npy}", "name": {token}}}]}}',
        "/galleries/g/subjects/s2/sequences": (
            f'{{"sequences": [{{"npy_b64": "{npy}", "metadata": {{"x": {token}}}}}]}}'
        ),
        "/galleries": f'{{"name": "h", "metadata": {{"x": {token}}}}}',
    }
    for path, body in bodies.items():
        response = api.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (path, response.text)
        if path != "/galleries":  # the routes that read both encodings say why at the parse
            assert "NaN and Infinity are not JSON numbers" in response.text
    assert api.get("/galleries/g").json()["sequence_count"] == 1
    assert api.get("/galleries/h").status_code == 404


def test_json_with_more_values_than_any_request_needs_is_refused_before_it_is_parsed(api) -> None:
    dim = api.get("/galleries/g").json()["dim"]
    entries = [{"npy_b64": "AAAA", "name": "x"}] * 400_000  # 13 MB: ~0.6 s of GIL to parse, ~1 GB held
    bodies = {
        "/embed": {"sequences": entries},
        "/galleries/g/subjects/s9/sequences": {"sequences": entries},
        "/search": {"gallery": "g", "embeddings": [[0.5] * 400_000]},
        "/galleries": {"name": "h", "metadata": {"x": [[]] * 10_000}},
    }
    for path, body in bodies.items():
        response = api.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert error_code(response, 422) == "json_too_complex", path
    form = {"metadata": json.dumps({"x": [{}] * 10_000})}
    files = {"files": ("a.npy", npy_bytes(walking_sequence(5)))}
    response = api.post("/galleries/g/subjects/s9/sequences", data=form, files=files)
    assert error_code(response, 422) == "json_too_complex"  # the multipart metadata field too
    assert api.get("/galleries/g").json()["sequence_count"] == 1
    assert api.get("/galleries/h").status_code == 404

    # Refused at a small fraction of what parsing would cost (this thread's CPU time: what other load on
    # the machine does not inflate).
    text = json.dumps(bodies["/embed"]).encode()
    started = time.thread_time()
    with pytest.raises(InvalidRequest):
        load_json(text)
    refused = time.thread_time() - started
    started = time.thread_time()
    pydantic_core.from_json(text)
    parsed = time.thread_time() - started
    assert refused < parsed / 4, (refused, parsed)

    # The longest embedding a search takes is within the bounds: refused by the gallery, not the scan.
    response = api.post("/search", json={"gallery": "g", "embeddings": [[0.5] * MAX_EMBEDDING_FLOATS]})
    [probe] = response.json()["data"]
    assert probe["error"]["code"] == "invalid_input" and f"D = {dim}" in probe["error"]["message"]


def _arrays(schema: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every array node of a JSON schema, with where it is."""
    if schema.get("type") == "array":
        yield path, schema
    for key, value in schema.items():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, dict):
                yield from _arrays(child, f"{path}/{key}")


def test_every_list_a_request_body_carries_is_bounded_before_its_items_are_validated(api) -> None:
    components = api.get("/openapi.json").json()["components"]["schemas"]
    requests = [name for name in components if name.endswith(("Request", "Create"))]
    assert {"EmbedRequest", "SearchRequest", "EnrollRequest", "GalleryCreate"} <= set(requests)
    for name in requests:
        for where, array in _arrays(components[name]):
            assert "maxItems" in array, f"{name}{where} is a list without a bound"

    npy = base64.b64encode(npy_bytes(walking_sequence(6))).decode()
    over = {"sequences": [{"npy_b64": npy}] * (MAX_SEQUENCES + 1)}
    response = api.post("/embed", json=over)
    assert error_code(response, 422) == "validation_error"
    assert response.json()["error"]["detail"][0]["type"] == "too_long"
    response = api.post("/embed", json={"sequences": [{"npy_b64": npy}] * 33})  # GAITLU_MAX_FILES is 32
    assert error_code(response, 422) == "too_many_sequences"


def test_request_schemas_refuse_nan_and_infinity_from_python_callers_too() -> None:
    for value in (math.nan, math.inf):
        with pytest.raises(ValidationError, match="finite number"):
            SearchRequest(gallery="g", embeddings=[[0.5, value]])
        with pytest.raises(ValidationError, match="finite number"):
            SearchParams(gallery="g", threshold=value)


# ----- browsers on other sites


def test_other_sites_cannot_write_but_the_servers_own_page_and_trusted_origins_can(api) -> None:
    form = {"files": ("a.npy", npy_bytes(walking_sequence(3)))}
    enrol = "/galleries/g/subjects/s3/sequences"
    foreign = [
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},  # another port of this host
        {"Origin": "null"},  # a sandboxed frame or a file:// page
    ]
    for headers in foreign:
        assert error_code(api.post(enrol, files=form, headers=headers), 403) == "cross_origin"
        assert error_code(api.delete("/galleries/g", headers=headers), 403) == "cross_origin"
    assert api.get("/galleries/g").json()["sequence_count"] == 1  # nothing was enrolled or deleted
    assert api.get("/galleries", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS
    own = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
    assert api.post(enrol, files=form, headers=own).status_code == 201
    assert (
        api.post(enrol, files=form, headers={"Origin": "http://127.0.0.1"}).status_code == 201
    )  # no Sec-Fetch
    trusted = {"Origin": "https://app.example.org", "Sec-Fetch-Site": "cross-site"}
    response = api.post(enrol, files=form, headers=trusted)
    assert (
        response.status_code == 201 and response.headers["access-control-allow-origin"] == trusted["Origin"]
    )
    api.delete("/galleries/g/subjects/s3").raise_for_status()


def test_only_the_configured_host_names_are_served(api) -> None:
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example:80"):
        response = api.get("/galleries", headers={"Host": host})
        assert error_code(response, 400) == "invalid_host"
        assert "GAITLU_ALLOWED_HOSTS" in response.json()["error"]["message"]
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert api.get("/galleries", headers={"Host": host}).status_code == 200


def test_host_defaults_follow_the_bind_address(tmp_path) -> None:
    def hosts(**values: object) -> tuple[str, ...]:
        return load_settings(artifact=tmp_path, data_dir=tmp_path, **values).hosts

    assert hosts() == ("localhost", "127.0.0.1", "::1")
    assert hosts(host="10.0.0.5", insecure=True)[-1] == "10.0.0.5"
    assert hosts(host="0.0.0.0", api_keys=["k" * 20]) == ("*",)  # all interfaces, keys: any name
    assert hosts(host="0.0.0.0", insecure=True) == ("localhost", "127.0.0.1", "::1")  # keyless: loopback
    assert hosts(allowed_hosts="gait.example.org,*.lab.example") == ("gait.example.org", "*.lab.example")
    with pytest.raises(ConfigError, match="allowed host"):
        hosts(allowed_hosts="bad host!")


def test_non_ascii_api_keys_are_refused_at_start(tiny_artifact, tmp_path) -> None:
    with pytest.raises(ConfigError, match="printable ASCII"):
        load_settings(artifact=tmp_path, data_dir=tmp_path, api_keys=["clé-0123456789abcdef"])
    command = gaitlu_argv("serve", "--artifact", tiny_artifact, "--data-dir", tmp_path)
    env = {"GAITLU_API_KEYS": "schlüssel-0123456789abcdef", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "printable ASCII" in result.stderr and "Traceback" not in result.stderr


# ----- a real server at its limits

LIMITS = {
    "max_requests_in_flight": "3",
    "max_upload_bytes": str(MIB),
    "max_body_bytes_in_flight": str(2 * MIB),
    "body_timeout_s": "2",
}
HOLD_S = "600"  # a body timeout no step of a test outlasts, however loaded the machine: held is held


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("limits")
    process = ServerProcess(tiny_artifact, root / "data", root / "server.log", **LIMITS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def holding(tiny_artifact, tmp_path_factory) -> Iterator[ServerProcess]:
    """The same bounds, with stalled uploads held until the test lets them go."""
    root = tmp_path_factory.mktemp("holding")
    limits = {**LIMITS, "body_timeout_s": HOLD_S}
    process = ServerProcess(tiny_artifact, root / "data", root / "server.log", **limits).start()
    yield process
    process.stop()


def slow_upload(port: int, declared: int, sent: bytes = b"--x\r\n") -> socket.socket:
    """A connection that announces a `declared`-byte upload, sends its first bytes and then stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)  # an answer that never comes fails
    head = (
        f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_slow_body_gets_408_and_frees_its_slot(server) -> None:
    started = time.monotonic()
    with slow_upload(server.port, 100_000) as sock:
        reply = answer(sock)  # the server closes the connection after its answer
    waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"body_timeout" in reply and waited > 1.5  # at the body timeout (2 s), not before
    with httpx.Client(base_url=server.url, timeout=30) as c:
        until(lambda: gauge(c, "gaitlu_requests_in_flight") == 0, what="the timed-out upload's slot freed")
        assert gauge(c, "gaitlu_request_body_bytes_in_flight") == 0


def test_over_the_bounds_requests_get_429_at_once_and_probes_still_answer(holding) -> None:
    """The held uploads stay held (a body timeout of HOLD_S) until the test closes them, so each refusal is
    seen with the bound still full: answered at once, not after waiting for room."""
    small = {"files": ("a.npy", npy_bytes(walking_sequence(4)))}
    with httpx.Client(base_url=holding.url, timeout=60) as c:
        held = [slow_upload(holding.port, 900_000)]  # 0.9 MiB of the 2 MiB of bodies in flight
        until(lambda: gauge(c, "gaitlu_requests_in_flight") == 1, what="the first held upload admitted")
        with slow_upload(holding.port, MIB + 1) as sock:
            assert answer(sock).startswith(b"HTTP/1.1 413")  # over the upload limit: 413, not 429
        # 0.9 + 0.9 MiB fit, a third 0.9 MiB does not: bytes in flight.
        held.append(slow_upload(holding.port, 900_000))
        until(lambda: gauge(c, "gaitlu_request_body_bytes_in_flight") == 1_800_000, what="1.8 MB held")
        refused = c.post("/embed", files={"files": ("big.npy", b"\0" * 900_000)})
        assert error_code(refused, 429) == "overloaded" and "bytes of request bodies" in refused.text
        assert refused.headers["Retry-After"] == "1"
        # A third held request reaches the request bound: even a small one is refused.
        held.append(slow_upload(holding.port, 10))
        until(lambda: gauge(c, "gaitlu_requests_in_flight") == 3, what="three held uploads admitted")
        refused = c.post("/embed", files=small)
        assert error_code(refused, 429) == "overloaded" and "limit of 3 requests" in refused.text
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert gauge(c, "gaitlu_requests_in_flight") == 3  # refused while all three were still held
        for sock in held:  # a client that gives up frees what it held
            sock.close()
        until(lambda: gauge(c, "gaitlu_requests_in_flight") == 0, what="the closed uploads' slots freed")
        assert gauge(c, "gaitlu_request_body_bytes_in_flight") == 0
        assert c.post("/embed", files=small).status_code == 200


# ----- request heads: bounded in size (64 KiB by default)

HEAD_LIMIT = 64 * 1024


def rss_kib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()  # noqa: SIM115
    return int(status.split("VmRSS:")[1].split()[0])


def head_with(port: int, header_bytes: int) -> bytes:
    return (
        f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: {'a' * header_bytes}\r\n\r\n".encode()
    )


def split_reply(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, body = reply.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_request_head_over_the_bound_gets_431_in_the_error_shape_and_a_close(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head_with(server.port, HEAD_LIMIT - 1024))  # just under: served
        sock.settimeout(10)
        status, _, _ = split_reply(sock.recv(65536))
        assert status == 200
        sock.sendall(head_with(server.port, 2 * HEAD_LIMIT))  # the same connection, over: refused
        status, headers, body = split_reply(answer(sock))  # answer: read until the server closes
    assert status == 431 and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "head_too_large" and error["detail"] == {"limit_bytes": HEAD_LIMIT}
    assert error["request_id"] == headers["x-request-id"]


def test_an_unterminated_huge_head_is_cut_at_the_bound_without_growing_the_server(server) -> None:
    """A reported attack: six connections each sending a 64 MiB header line that never ends raised the
    server's memory by 301 MiB. Now each is closed once 64 KiB of head have arrived."""
    assert server.proc is not None
    before = rss_kib(server.proc.pid)
    chunk = b"X-Flood: " + b"a" * (MIB - 9)
    sent = []
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(6)]
    for sock in socks:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())
    for sock in socks:
        total = 0
        with pytest.raises(OSError):  # the server hangs up: a reset or a broken pipe, well before 64 MiB
            while total < 64 * MIB:
                sock.sendall(chunk)
                total += len(chunk)
        sent.append(total)
        sock.close()
    grown = rss_kib(server.proc.pid) - before
    assert max(sent) < 16 * MIB, sent  # what the kernel's buffers took before the close, not the head
    assert grown < 16 * 1024, f"server RSS grew by {grown} KiB"
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/healthz").status_code == 200


# ----- reserved metadata, absurd floats, and the log stream


@pytest.fixture(scope="module")
def logged(tiny_artifact, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server with the default limits (the 2 s body deadline above is too short for a busy machine)."""
    root = tmp_path_factory.mktemp("logged")
    process = ServerProcess(tiny_artifact, root / "data", root / "server.log").start()
    yield process
    process.stop()


def test_reserved_metadata_and_absurd_floats_are_clean_422s_logged_as_json_with_their_code(logged) -> None:
    server = logged
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.post("/galleries", json={"name": "logged"}).status_code == 201
        model = c.get("/model").json()
        path = "/galleries/logged/subjects/s/sequences"
        forged = {"gei_png": "data:image/png;base64,AAAA", "camera": "1"}
        files = {"files": ("a.npy", npy_bytes(walking_sequence(1)))}
        refused = [
            c.post(path, files=files, data={"metadata": json.dumps(forged)}),
            c.post(
                path,
                json={
                    "model_hash": model["model_hash"],
                    "embeddings": [{"embedding": [0.5] * model["dim"], "metadata": forged}],
                },
            ),
        ]
        for response in refused:
            assert error_code(response, 422) == "invalid_input"
            assert "metadata key 'gei_png' is reserved" in response.json()["error"]["message"]
        assert c.get("/galleries/logged/subjects/s").status_code == 404  # nothing enrolled
        huge = {"model_hash": model["model_hash"], "embeddings": [{"embedding": [1e308] * model["dim"]}]}
        response = c.post(path, json=huge, headers={"X-Request-ID": "huge-floats-1"})
        assert error_code(response, 422) == "invalid_input" and "1e+308" in response.text
        probe = c.post("/search", json={"gallery": "logged", "embeddings": [[1e308] * model["dim"]]})
        assert probe.status_code == 200 and probe.json()["data"][0]["error"]["code"] == "invalid_input"

    def access_lines() -> list[dict]:
        complete = server.log_path.read_text().rpartition("\n")[0]  # a line being written waits
        entries = [json.loads(line) for line in complete.splitlines()]  # every line is JSON
        assert not [e for e in entries if e["level"] == "warning" and e["logger"] == "py.warnings"]
        return [e for e in entries if e["request_id"] == "huge-floats-1" and e["logger"] == "service.access"]

    until(lambda: bool(access_lines()), what="the access log line (written after the answer)")
    (line,) = access_lines()
    assert line["status"] == 422 and line["code"] == "invalid_input"
