"""The web page and the endpoints behind it, against a real `gaitlu serve` process with API keys.

JSON: POST /sequences/preview (the upload path's limits and errors), GET /demo/sequences, the GEI stored
at enrolment. Browser: the page in headless Chromium, driven by playwright over Debian's `chromium`
(no downloaded browser), uploads a probe, animates it, searches and shows the matches with their GEIs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import re
import shutil
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from gaitlu.evaluation.gei import gait_energy_image
from gaitlu.pictures import PNG_PREFIX, gei_png
from gaitlu.preprocess import to_model_frames
from gaitlu.sequence import load_sequence
from gallery.previews import GEI_KEY, with_gei
from gallery.validate import MAX_METADATA_BYTES
from service.demo import FRAMES, SUBJECTS, WALKS, ensure_demo, find_demo, list_demo
from tests.support.servers import FULL_KEY, ServerProcess, error_code, pkl_bytes
from tests.support.videos import synthetic_videos
from tests.support.walkers import walking_sequence

GALLERY = "lab"
ENROLLED = 3  # subjects s0..s2, one sequence each (walking_sequence(seed=i))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HELP = (
    "the web page test drives Debian's Chromium through playwright: install them with "
    "`apt-get install -y chromium` and `pip install -e .[dev]` (playwright); never `playwright install`"
)


class _RunsCode:
    """Unpickling this would call a function: the service must refuse it without running anything."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def png_image(uri: str) -> np.ndarray:
    """A PNG data URI -> (H, W) uint8."""
    assert uri.startswith(PNG_PREFIX)
    data = np.frombuffer(base64.b64decode(uri.removeprefix(PNG_PREFIX)), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def expected_gei(frames: np.ndarray) -> np.ndarray:
    return np.round(gait_energy_image(frames) * 255).astype(np.uint8)  # (64, 44)


def served_lab(artifact: Path, folder: Path, camera: str) -> Iterator[str]:
    """A server of `artifact` with gallery `lab` of ENROLLED subjects, subject i filmed by camera
    `camera.format(i)`; yields its URL."""
    proc = ServerProcess(artifact, folder / "data", folder / "server.log", api_keys=FULL_KEY).start()
    try:
        with httpx.Client(base_url=proc.url, headers={"X-API-Key": FULL_KEY}, timeout=60) as api:
            api.post("/galleries", json={"name": GALLERY}).raise_for_status()
            for s in range(ENROLLED):
                files = [("files", (f"s{s}.pkl", pkl_bytes(walking_sequence(s))))]
                form = {"sequence_ids": f"s{s}-a", "metadata": json.dumps({"camera": camera.format(s)})}
                api.post(
                    f"/galleries/{GALLERY}/subjects/s{s}/sequences", files=files, data=form
                ).raise_for_status()
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A served gallery `lab` of ENROLLED subjects (camera "i"); yields the server's URL."""
    yield from served_lab(tiny_artifact, tmp_path_factory.mktemp("web"), "{}")


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"X-API-Key": FULL_KEY}, timeout=60) as client:
        yield client


# ----- the page and its assets


def test_the_page_and_its_assets_need_no_key_but_the_data_does(server: str) -> None:
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]  # nothing from elsewhere
    assert 'id="sequence-file"' in page.text and "/static/app.js" in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = httpx.get(f"{server}/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert error_code(httpx.get(f"{server}/static/missing.js"), 404) == "not_found"
    assert httpx.get(f"{server}/static/..%2f..%2fsettings.py").status_code == 404
    assert error_code(httpx.get(f"{server}/galleries"), 401) == "unauthorized"


# ----- POST /sequences/preview


def test_preview_returns_the_model_frames_and_their_gei(api: httpx.Client) -> None:
    sequence = walking_sequence(7, frames=6)  # (6, 64, 44): model frames already
    response = api.post("/sequences/preview", files={"files": ("walk.pkl", pkl_bytes(sequence))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["frames"], body["height"], body["width"]) == ("walk.pkl", 6, 64, 44)
    np.testing.assert_array_equal(np.stack([png_image(uri) for uri in body["data"]]), sequence)
    np.testing.assert_array_equal(png_image(body["gei"]), expected_gei(sequence))


def test_preview_aligns_raw_masks_from_a_zip_of_pngs(api: httpx.Client) -> None:
    raw = np.zeros((3, 120, 90), np.uint8)  # a person-sized box, off centre, in a larger frame
    raw[:, 10:110, 20:50] = 255
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i, frame in enumerate(raw):
            zf.writestr(f"{i:03d}.png", cv2.imencode(".png", frame)[1].tobytes())
    response = api.post("/sequences/preview", files={"files": ("walk.zip", archive.getvalue())})
    assert response.status_code == 200, response.text
    body = response.json()
    frames = np.stack([png_image(uri) for uri in body["data"]])
    np.testing.assert_array_equal(frames, to_model_frames(raw))  # (3, 64, 44), as /embed would see it


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ({"files": ("notes.txt", b"not a sequence")}, 422, "invalid_sequence"),
        ({"files": ("evil.pkl", pickle.dumps(_RunsCode()))}, 422, "unsafe_pickle"),
        ({"other": ("walk.pkl", b"x")}, 422, "missing_file"),
        ([("files", ("a.pkl", b"x")), ("files", ("b.pkl", b"y"))], 422, "one_file"),
    ],
    ids=["not-a-sequence", "unsafe-pickle", "no-file", "two-files"],
)
def test_preview_rejects_bad_uploads(api: httpx.Client, files, status: int, code: str) -> None:
    assert error_code(api.post("/sequences/preview", files=files), status) == code


def test_preview_takes_multipart_only_and_needs_a_key(api: httpx.Client, server: str) -> None:
    assert error_code(api.post("/sequences/preview", json={}), 415) == "unsupported_media_type"
    files = {"files": ("walk.pkl", pkl_bytes(walking_sequence(1, frames=2)))}
    assert error_code(httpx.post(f"{server}/sequences/preview", files=files), 401) == "unauthorized"


# ----- GET /demo/sequences


def test_demo_sequences_are_listed_and_served_as_uploadable_files(api: httpx.Client, server: str) -> None:
    assert error_code(httpx.get(f"{server}/demo/sequences"), 401) == "unauthorized"
    listing = api.get("/demo/sequences").json()
    assert listing["count"] == SUBJECTS * len(WALKS) == len(listing["data"])
    first = listing["data"][0]
    served = api.get(f"/demo/sequences/{first['name']}")
    assert served.status_code == 200 and len(served.content) == first["size_bytes"]
    frames = to_model_frames(load_sequence(served.content, filename=first["name"]))
    assert frames.shape == (FRAMES, 64, 44)
    assert error_code(api.get("/demo/sequences/walker-9-z.pkl"), 404) == "not_found"
    assert error_code(api.get("/demo/sequences/..galleries.db"), 404) == "not_found"


def test_demo_folder_keeps_an_operators_own_files(tmp_path: Path) -> None:
    (tmp_path / "mine.npy").write_bytes(b"anything")
    (tmp_path / ".mine.pkl.tmp").write_bytes(b"half written")
    (tmp_path / "readme.txt").write_text("not a sequence")
    assert [f.name for f in ensure_demo(tmp_path)] == ["mine.npy"]  # nothing generated over them
    assert find_demo(tmp_path, "readme.txt") is None and find_demo(tmp_path, "../mine.npy") is None
    assert list_demo(tmp_path / "absent") == []


# ----- GEIs stored at enrolment


def test_enrollment_stores_the_gei_beside_the_callers_metadata(api: httpx.Client) -> None:
    stored = api.get(f"/galleries/{GALLERY}/sequences/s1-a").json()
    assert stored["metadata"] == {"camera": "1"}  # the caller's, exactly
    np.testing.assert_array_equal(png_image(stored["gei_png"]), expected_gei(walking_sequence(1)))

    files = [("files", ("x.pkl", pkl_bytes(walking_sequence(50))))]
    form = {"sequence_ids": "nogei-a", "metadata": f'{{"{GEI_KEY}": null}}'}  # the caller opts out
    api.post(f"/galleries/{GALLERY}/subjects/nogei/sequences", files=files, data=form).raise_for_status()
    stored = api.get(f"/galleries/{GALLERY}/sequences/nogei-a").json()
    assert (stored["metadata"], stored["gei_png"]) == (None, None)
    api.delete(f"/galleries/{GALLERY}/subjects/nogei").raise_for_status()


def test_a_gei_that_would_overflow_the_metadata_limit_is_left_out() -> None:
    frames = walking_sequence(3)
    assert with_gei(None, frames, gei_png)[GEI_KEY].startswith(PNG_PREFIX)
    big = {"notes": "x" * (MAX_METADATA_BYTES - 100)}  # fits the store's limit alone, not with a GEI
    assert with_gei(big, frames, gei_png) == big


# ----- the page in a browser


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory: pytest.TempPathFactory):
    """A playwright page in a fresh headless Chromium profile; page errors are collected on it."""
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.fail(f"Chromium is missing ({CHROMIUM}): {INSTALL_HELP}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is missing: {INSTALL_HELP}")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900},
        )
        page = context.new_page()
        page.errors = []  # uncaught exceptions and CSP violations would land here
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: "Content Security Policy" in msg.text and page.errors.append(msg.text))
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()


def test_a_key_handed_over_in_the_address_is_kept_and_taken_out_of_it(browser_page, server: str) -> None:
    """`make run` prints the page's URL with the key in its fragment (a notebook-style token URL): a
    newcomer's first view lists the galleries instead of "unauthorized: missing API key"."""
    page = browser_page
    for url in (f"{server}/#key={FULL_KEY}", f"{server}/?key={FULL_KEY}"):
        page.goto(server)
        page.evaluate("localStorage.clear()")  # a newcomer's browser
        page.goto("about:blank")  # else a fragment-only change would not load the page again
        page.goto(url)
        page.locator("#galleries-table tbody tr", has_text=GALLERY).wait_for()
        assert page.get_by_label("API key").input_value() == FULL_KEY
        assert FULL_KEY not in page.url and page.url.rstrip("/") == server  # nothing left to bookmark
        assert page.evaluate("localStorage.getItem('gaitlu.apiKey')") == FULL_KEY
    page.evaluate("localStorage.clear()")  # the next test starts without a key
    assert page.errors == []


@pytest.mark.slow
def test_the_page_searches_a_gallery_with_an_uploaded_sequence(browser_page, server: str) -> None:
    from playwright.sync_api import expect  # present: the fixture checked

    page = browser_page
    page.goto(server)
    # Without a key the service's own error is shown plainly.
    page.get_by_role("alert").filter(has_text="unauthorized").wait_for()

    page.get_by_label("API key").fill(FULL_KEY)
    page.get_by_role("button", name="Use key").click()
    row = page.locator("#galleries-table tbody tr", has_text=GALLERY)
    row.wait_for()
    assert row.locator("td").all_inner_texts()[:3] == [GALLERY, str(ENROLLED), str(ENROLLED)]
    page.reload()  # the key is remembered by this browser
    assert page.get_by_label("API key").input_value() == FULL_KEY
    page.locator("#galleries-table tbody tr", has_text=GALLERY).wait_for()

    page.get_by_label("Search in").select_option(GALLERY)
    page.get_by_label("Top k").fill("3")
    probe = {
        "name": "probe.pkl",
        "mimeType": "application/octet-stream",
        "buffer": pkl_bytes(walking_sequence(1)),
    }
    page.get_by_label("Upload a sequence").set_input_files(probe)

    matches = page.locator("#results .match")
    matches.nth(2).wait_for()
    assert matches.count() == 3
    assert matches.first.locator(".subject").inner_text() == "s1"  # the enrolled copy of the probe
    scores = [float(s) for s in page.locator("#results .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99
    page.locator("#results .match-gei").nth(2).wait_for()  # every match shows its stored GEI
    widths = page.locator("#results .match-gei").evaluate_all("(imgs) => imgs.map((i) => i.naturalWidth)")
    assert widths == [44, 44, 44]

    assert page.locator("#animation").is_visible()
    assert page.locator("#probe-gei").evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [44, 64]
    counter = page.locator("#frame-counter")
    first = counter.inner_text()
    expect(counter).not_to_have_text(first)  # it plays
    page.get_by_role("button", name="Pause").click()
    paused = counter.inner_text()
    page.wait_for_timeout(200)  # five frame periods at 25 fps
    assert counter.inner_text() == paused and page.get_by_role("button", name="Play").is_visible()

    page.get_by_label("or try a demo walker").select_option(index=1)
    expect(counter).to_have_text(re.compile(rf"/ {FRAMES}$"))

    page.get_by_label("Upload a sequence").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    )
    error = page.locator("#probe-error")
    error.wait_for()
    assert "invalid_sequence" in error.inner_text() and "notes.txt" in error.inner_text()
    assert page.locator("#viewer").is_hidden() and matches.count() == 0
    assert page.errors == []


@pytest.mark.slow
def test_the_page_shows_a_videos_frames_beside_its_silhouettes_and_searches_with_it(
    browser_page, server: str, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    video = synthetic_videos(tmp_path_factory).path("alice-1").read_bytes()
    files = [("files", ("alice.mp4", video, "video/mp4"))]
    api.post(f"/galleries/{GALLERY}/subjects/alice/sequences", files=files).raise_for_status()

    page = browser_page
    page.goto(server)
    # The key, as a user types it once (another test may have run first in this profile, or not).
    page.get_by_label("API key").fill(FULL_KEY)
    page.get_by_role("button", name="Use key").click()
    page.locator("#galleries-table tbody tr", has_text=GALLERY).wait_for()
    page.get_by_label("Search in").select_option(GALLERY)
    page.get_by_label("Upload a sequence or a video").set_input_files(
        {"name": "walk.mp4", "mimeType": "video/mp4", "buffer": video}
    )
    pairs = page.locator("#video-frames .video-frame")
    pairs.nth(7).wait_for()
    assert pairs.count() == 8 and page.locator("#video-view").is_visible()
    sizes = "(imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight])"
    assert page.locator("#video-frames .video-thumb").evaluate_all(sizes) == [[160, 120]] * 8
    assert page.locator("#video-frames .video-silhouette").evaluate_all(sizes) == [[44, 64]] * 8
    facts = page.locator("#probe-facts").inner_text()
    assert "#0 of 1 found (bgsub)" in facts and "160 × 120" in facts

    matches = page.locator("#results .match")
    matches.first.wait_for()
    assert matches.first.locator(".subject").inner_text() == "alice"  # the enrolled copy of the video
    assert float(page.locator("#results .score").first.inner_text()) > 0.99

    page.get_by_label("Upload a sequence or a video").set_input_files(
        {"name": "nobody.mp4", "mimeType": "video/mp4", "buffer": b"not a video"}
    )
    error = page.locator("#probe-error")
    error.wait_for()
    assert "invalid_video" in error.inner_text() and page.locator("#viewer").is_hidden()
    api.delete(f"/galleries/{GALLERY}/subjects/alice").raise_for_status()
    assert page.errors == []


@pytest.fixture(scope="module")
def calibrated_server(calibrated_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A served calibrated model with gallery `lab` of ENROLLED subjects (camera "cam-i"); its URL."""
    yield from served_lab(calibrated_artifact, tmp_path_factory.mktemp("web-calibrated"), "cam-{}")


@pytest.mark.slow
def test_the_page_answers_match_or_no_match_with_the_far_in_words(
    browser_page, calibrated_server: str
) -> None:
    page = browser_page
    page.goto(calibrated_server)
    page.get_by_label("API key").fill(FULL_KEY)
    page.get_by_role("button", name="Use key").click()
    page.locator("#galleries-table tbody tr", has_text=GALLERY).wait_for()
    decide = page.get_by_label("Decide at")
    page.wait_for_function("() => !document.getElementById('max-far').disabled")  # calibrated: enabled
    assert "calibrated on walkers" in page.locator("#far-help").inner_text()
    decide.select_option("0.01")
    page.get_by_label("Search in").select_option(GALLERY)
    probe = {
        "name": "probe.pkl",
        "mimeType": "application/octet-stream",
        "buffer": pkl_bytes(walking_sequence(1)),
    }
    page.get_by_label("Upload a sequence").set_input_files(probe)

    answer = page.locator("#answer")
    answer.wait_for()
    assert re.fullmatch(
        r"Match: s1 \(FAR at most 1 in 100; fewer than 1 in [\d,]+ people who are not s1 .*",
        answer.inner_text(),
    )
    assert "people who are not" in page.locator("#results .far").first.inner_text()
    assert "(cam-1)" in page.locator("#results .sequence").first.inner_text()  # the hit's attributes

    # The match's review (docs/privacy.md): one key confirms; the same key again is refused.
    review = page.locator("#review-state")
    assert "0 of 2 confirmations" in review.inner_text()
    page.get_by_role("button", name="Confirm the match").click()
    review.filter(has_text="1 of 2 confirmations").wait_for()
    page.get_by_role("button", name="Confirm the match").click()
    page.locator("#review-error").filter(has_text="already_reviewed").wait_for()

    page.get_by_label("Is the probe this subject?").fill("s1")
    page.get_by_role("button", name="Verify").click()
    verified = page.locator("#verify-result")
    verified.filter(has_text="Verified: this is s1").wait_for()

    page.get_by_label("Only cameras").fill("cam-0, cam-2")  # the probe's own subject filtered out
    page.get_by_role("button", name="Search").click()
    answer.filter(has_text="No match").wait_for()
    assert f"nobody in {GALLERY} passes at FAR 1 in 100" in answer.inner_text()
    assert page.locator("#review").is_hidden()  # nothing to review
    assert page.errors == []


@pytest.mark.slow
def test_the_api_reference_renders_from_this_server_alone(browser_page, server: str) -> None:
    page = browser_page
    elsewhere: list[str] = []
    page.on(
        "request", lambda r: r.url.startswith(server) or r.url.startswith("data:") or elsewhere.append(r.url)
    )
    page.goto(f"{server}/docs")
    page.locator(".swagger-ui .info .title", has_text="gaitlu").wait_for()
    page.locator(".opblock-summary-path", has_text="/search").first.wait_for()  # the schema rendered
    assert elsewhere == [] and page.errors == []


# ----- `make run`'s demo (workflows/demo.py)


def test_the_demo_page_offers_walkers_the_gallery_knows_and_strangers(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every walker the page offered used to be a stranger to `make run`'s demo gallery, so every demo
    search answered "no match": now new walks of enrolled subjects come with the strangers."""
    from workflows import demo

    monkeypatch.setattr(demo, "GALLERY_WALKS", 2)  # a small gallery: the same steps, in seconds
    service_dir = tmp_path / "service"
    demo.enroll_demo_gallery(tmp_path, tiny_artifact, service_dir, subjects=3, seed=0)
    proc = ServerProcess(tiny_artifact, service_dir, tmp_path / "server.log", api_keys=FULL_KEY).start()
    try:
        with httpx.Client(base_url=proc.url, headers={"X-API-Key": FULL_KEY}, timeout=60) as api:
            names = [d["name"] for d in api.get("/demo/sequences").json()["data"]]
            assert names == ["enrolled-003.pkl", "stranger-1.pkl", "stranger-2.pkl"]
            enrolled = {s["subject_id"] for s in api.get("/galleries/demo/subjects").json()["data"]}
            assert enrolled == {"001", "002", "003"}
            for name in names:
                walk = api.get(f"/demo/sequences/{name}")
                assert walk.status_code == 200
                found = api.post(
                    "/search", data={"gallery": "demo", "k": "1"}, files={"files": (name, walk.content)}
                )
                assert found.status_code == 200 and found.json()["data"][0]["error"] is None
    finally:
        proc.stop()
    assert demo.page_url("127.0.0.1", 8000, "k3y") == "http://127.0.0.1:8000/#key=k3y"


def test_the_demo_api_key_is_made_once_and_never_readable_by_others(tmp_path: Path) -> None:
    """Under a umask that narrows nothing the key file is still owner-only (its mode is given at creation,
    not by a chmod after the key is in), and a rerun prints the same key."""
    from workflows import demo

    old = os.umask(0)
    try:
        key = demo.api_key(tmp_path / "data")
    finally:
        os.umask(old)
    path = tmp_path / "data" / "api-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) >= 32
    assert demo.api_key(tmp_path / "data") == key and sorted(p.name for p in path.parent.iterdir()) == [
        "api-key"
    ]


def test_the_demo_without_serving_says_where_the_page_is_with_its_key_and_a_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gaitlu demo --no-serve` on the shipped synthetic model: the gallery is enrolled and the banner
    hands over the page's address with the kept key and a search to paste."""
    from workflows import demo

    monkeypatch.setattr(demo, "GALLERY_WALKS", 2)
    demo.demo(data_dir=tmp_path / "data", model="synthetic", subjects=3, serve=False)
    out = capsys.readouterr().err  # the console that reports steps writes to stderr
    key = (tmp_path / "data" / "api-key").read_text().strip()
    assert "gaitlu is ready" in out and f"/#key={key}" in out
    assert f"X-API-Key: {key}" in out and "probe-003.pkl" in out and "gallery=demo" in out
