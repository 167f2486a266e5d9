"""Hostile input under load: what 4 attackers sending the worst cheap inputs cost 8 honest clients.

Honest clients wait out a 429 / 503's Retry-After and count it (benchmarks/honest.py); attackers do not.
A real `gaitlu serve` (uvicorn, child process, default settings but 5 s body and header timeouts so
slow-client attacks end within a run) on 127.0.0.1 serves a gallery of 20 subjects. 8 honest closed-loop
clients (each alternates `/embed` and `/search` with a 92-frame .npy) run in windows that alternate
between alone and with 4 attackers cycling through every hostile-input attack as fast as they are
answered: alone, attacked, alone, ... alone (`--rounds` attacked windows), so that the load other work
puts on a shared machine, which drifts over a run, weighs on both sides alike. Reported: honest
throughput under attack against alone (target >= 0.8x), honest p50/p99, 5xx responses of either kind
(target 0), the server's peak RSS (its VmHWM, reset each window) against a stated bound, and each
attack's answers (every one must be a 4xx or 429, or for a slow request head the server closing the
connection). A search answers each probe in order, each with its own error, inside a 200: a search is
counted by what its probe got (a probe's error by the status the service gives that error alone), so a
refused probe is a refusal and a failed one a 5xx.

The attacks (tests/test_safepickle.py builds the pickles):
- pickles: 8 MiB of EMPTY_DICT, a memo slot of 2**31, an 8 MiB string with one astral character,
  one 2 MiB data string built into four arrays;
- sequences: an outside test's 3 KB .npz of 720 x 1 x 4096 frames, 8 frames of 512 x 4096 holding a
  16 x 4096 band, a float64 (10, 32) array, a 210 KB .npz of 720 empty 480 x 640 frames (221 M
  pixels, over the limit), a 54 KB .npz of 720 empty 320 x 240 frames (55 M pixels: under the limit,
  the costliest decode and scan an upload can ask for);
- JSON: a NaN embedding, a 2e19 embedding, `?offset=2**63`, 12 MB of small JSON entries, a
  400k-float embedding;
- browsers: a cross-origin multipart enrolment, a rebinding Host header;
- slow clients: a body that stops after its first bytes (the server's 408), a request head sent a byte
  every 0.2 s (the server closes the connection).

Model: the narrow GaitSSB of benchmarks/service.py (channels 8-64, random weights), exported once into
the same cache folder.

Usage: python benchmarks/hostile.py [--quick] [--artifact DIR] [--write-results]
The last line holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import io
import json
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from honest import ok, send  # noqa: E402  (benchmarks run as scripts)
from results_md import RESULTS, write_section  # noqa: E402

from service.errors import STATUSES  # noqa: E402
from tests.support.servers import ServerProcess, npy_bytes  # noqa: E402
from tests.support.walkers import walking_sequence  # noqa: E402
from tests.test_safepickle import ATTACKS as PICKLES  # noqa: E402

SECTION = "## Hostile input under load"
HONEST, ATTACKERS = 8, 4
FRAMES = 92
SUBJECTS = 20
BODY_TIMEOUT_S = 5.0  # and the request-head timeout
CLOSED = 0  # the "status" of an attack the server ended by closing the connection (a slow head)
# A probe's error code -> the status the service answers it with alone; a code not in the table is
# counted as a server failure.
PROBE_STATUS = {row.code: row.status for row in STATUSES if row.code is not None}
CUT_AFTER_S = 2.0  # attacks still unanswered this long after a phase ends are cut (and reported)
MIB = 1024 * 1024
# The stated bound on the server's peak RSS under attack: its own footprint with honest load (0.6-0.9 GiB
# here, onnxruntime's arenas included) + 256 MiB of bodies in flight + 4 decodes of <= 64 MiB, with room
# for the allocator's retention of freed blocks.
RSS_BOUND = 1536 * MIB


def _service_benchmark():
    """benchmarks/service.py as a module (its name would clash with the `service` package)."""
    spec = importlib.util.spec_from_file_location("service_benchmark", Path(__file__).with_name("service.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def npz(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, silhouettes=arr)
    return buffer.getvalue()


class Reply(NamedTuple):
    """What a request got: its HTTP status, or for a search its probe's error's status inside a 200."""

    status: int
    in_200: bool = False


def reply(response: httpx.Response) -> Reply:
    """A search's probes each carry their own error: the first error decides (all succeeded: 200)."""
    if response.status_code != 200 or response.url.path != "/search":
        return Reply(response.status_code)
    errors = [p["error"] for p in response.json()["data"] if p["error"] is not None]
    return Reply(PROBE_STATUS.get(errors[0]["code"], 500), True) if errors else Reply(200)


# ----- the attacks: each sends one hostile request and returns what it got

Attack = Callable[[httpx.AsyncClient, "Target"], Awaitable[Reply]]


@dataclass
class Target:
    port: int
    dim: int
    files: dict[str, bytes] = field(default_factory=dict)
    attacks: dict[str, Attack] = field(default_factory=dict)
    cursors: list[int] = field(default_factory=list)  # each attacker's place in the plan, across windows


def upload(name: str) -> Attack:
    async def send(c: httpx.AsyncClient, t: Target) -> Reply:
        return reply(await c.post("/embed", files={"files": (name, t.files[name])}))

    return send


def raw_json(path: str, body: Callable[[Target], str]) -> Attack:
    async def send(c: httpx.AsyncClient, t: Target) -> Reply:
        headers = {"Content-Type": "application/json"}
        return reply(await c.post(path, content=body(t), headers=headers))

    return send


async def huge_offset(c: httpx.AsyncClient, t: Target) -> Reply:
    return reply(await c.get("/galleries/bench/subjects", params={"offset": str(2**63)}))


async def cross_origin_enrol(c: httpx.AsyncClient, t: Target) -> Reply:
    files = {"files": ("a.npy", t.files["honest.npy"])}
    headers = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    return reply(await c.post("/galleries/bench/subjects/evil/sequences", files=files, headers=headers))


async def rebinding_host(c: httpx.AsyncClient, t: Target) -> Reply:
    return reply(await c.get("/galleries", headers={"Host": "evil.example"}))


async def slow_body(c: httpx.AsyncClient, t: Target) -> Reply:
    """Announce a 1 MB upload, send 5 bytes, wait for the server's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
    head = (
        f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1:{t.port}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n--x\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    try:
        line = await asyncio.wait_for(reader.readline(), BODY_TIMEOUT_S + 30)
        return Reply(int(line.split()[1]))
    finally:
        writer.close()


async def slow_head(c: httpx.AsyncClient, t: Target) -> Reply:
    """Send a request head a byte every 0.2 s (never finishing it) until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
    head = f"GET /galleries HTTP/1.1\r\nHost: 127.0.0.1:{t.port}\r\nX-Padding: {'x' * 1000}".encode()
    try:
        for i in range(len(head)):
            writer.write(head[i : i + 1])
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                    return Reply(CLOSED)
            except TimeoutError:
                continue
        raise RuntimeError("the server waited for a request head of 1 KB at 5 bytes a second")
    except (ConnectionResetError, BrokenPipeError):
        return Reply(CLOSED)
    finally:
        writer.close()


def attacks(dim: int) -> dict[str, Attack]:
    many = json.dumps({"sequences": [{"npy_b64": "AAAA", "name": "x"}] * 400_000})  # ~12 MB of entries
    floats = json.dumps({"gallery": "bench", "embeddings": [[0.5] * 400_000]})
    return {
        "pickle: 8 MiB EMPTY_DICT": upload("bomb.pkl"),
        "pickle: memo slot 2**31": upload("memo.pkl"),
        "pickle: wide string": upload("wide.pkl"),
        "pickle: 4 arrays of one string": upload("copies.pkl"),
        "npz: 720 x 1 x 4096 strips": upload("strips.npz"),
        "npz: 16 x 4096 band": upload("band.npz"),
        "npy: float64 (10, 32)": upload("flat.npy"),
        "npz: 221 M empty pixels": upload("huge.npz"),
        "npz: 55 M empty pixels": upload("empty.npz"),
        "json: NaN embedding": raw_json("/search", lambda t: '{"gallery": "bench", "embeddings": [[NaN]]}'),
        "json: 2e19 embedding": raw_json(
            "/search", lambda t: json.dumps({"gallery": "bench", "embeddings": [[2e19] * t.dim]})
        ),
        "json: 12 MB of small entries": raw_json("/embed", lambda t: many),
        "json: 400k-float embedding": raw_json("/search", lambda t: floats),
        "offset 2**63": huge_offset,
        "cross-origin enrolment": cross_origin_enrol,
        "rebinding Host": rebinding_host,
        "slow body": slow_body,
        "slow head": slow_head,
    }


def attack_files() -> dict[str, bytes]:
    band = np.zeros((8, 512, 4096), np.uint8)
    band[:, 248:264] = 255
    return {
        "bomb.pkl": PICKLES["dict bomb"][0](),
        "memo.pkl": PICKLES["huge memo"][0](),
        "wide.pkl": PICKLES["wide string"][0](),
        "copies.pkl": PICKLES["repeated latin-1 copies"][0](),
        "strips.npz": npz(np.full((720, 1, 4096), 255, np.uint8)),
        "band.npz": npz(band),
        "flat.npy": npy_bytes(np.linspace(0, 1, 320).reshape(10, 32)),
        "huge.npz": npz(np.zeros((720, 480, 640), np.uint8)),
        "empty.npz": npz(np.zeros((720, 240, 320), np.uint8)),
        "honest.npy": npy_bytes(walking_sequence(0, FRAMES)),
    }


# ----- the load


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    honest_ms: list[float] = field(default_factory=list)
    honest_status: Counter[int] = field(default_factory=Counter)
    honest_refusals: int = 0  # 429 / 503 with Retry-After, waited out and asked again (benchmarks/honest.py)
    attack_status: dict[str, Counter[Reply]] = field(default_factory=lambda: defaultdict(Counter))
    attack_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    attack_cut: Counter[str] = field(default_factory=Counter)
    attack_late_resets: Counter[str] = field(default_factory=Counter)
    peak_rss: int = 0

    @property
    def throughput(self) -> float:
        return sum(n for s, n in self.honest_status.items() if 200 <= s < 300) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.honest_ms, q))

    @property
    def attacks_sent(self) -> int:
        return sum(sum(counter.values()) for counter in self.attack_status.values())

    @property
    def server_errors(self) -> int:
        honest = sum(n for s, n in self.honest_status.items() if s >= 500)
        return honest + sum(n for c in self.attack_status.values() for r, n in c.items() if r.status >= 500)


async def run_window(
    url: str, target: Target, seconds: float, plan: list[str], phase: Phase, warm_up: bool
) -> None:
    queries = [walking_sequence(1000 + i, FRAMES) for i in range(HONEST)]
    timeout = httpx.Timeout(120)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=64)) as c:

        async def honest(i: int, until: float, record: bool) -> None:
            body = npy_bytes(queries[i])
            n = 0
            while time.perf_counter() < until:
                started = time.perf_counter()
                files = {"files": ("q.npy", body)}
                if n % 2:
                    post = functools.partial(c.post, "/search", files=files, data={"gallery": "bench"})
                else:
                    post = functools.partial(c.post, "/embed", files=files)
                response, refusals = await send(post, until)  # an honest client waits out a refusal
                if record:
                    phase.honest_ms.append((time.perf_counter() - started) * 1000)
                    phase.honest_status[reply(response).status] += 1
                    phase.honest_refusals += refusals
                n += 1

        async def attacker(i: int, until: float) -> None:
            while time.perf_counter() < until:
                name = plan[target.cursors[i] % len(plan)]
                target.cursors[i] += 1
                started = time.perf_counter()
                try:
                    answer = await target.attacks[name](c, target)
                except asyncio.CancelledError:
                    phase.attack_cut[name] += 1  # still running when the phase ended
                    raise
                except (TimeoutError, httpx.HTTPError, OSError) as exc:
                    if time.perf_counter() - started >= BODY_TIMEOUT_S:  # the server's 408, then its close
                        phase.attack_late_resets[name] += 1  # reached the client as a reset mid-upload
                        continue
                    answer = Reply(599)  # no answer: counted as a server failure
                    print(f"attack {name!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
                phase.attack_status[name][answer] += 1
                phase.attack_ms[name].append((time.perf_counter() - started) * 1000)

        if warm_up:
            warm = time.perf_counter() + 1.0
            await asyncio.gather(*(honest(i, warm, False) for i in range(HONEST)))
        started = time.perf_counter()
        until = started + seconds
        attackers = [asyncio.create_task(attacker(i, until)) for i in range(ATTACKERS if plan else 0)]
        await asyncio.gather(*(honest(i, until, True) for i in range(HONEST)))
        phase.seconds += time.perf_counter() - started
        _, running = await asyncio.wait(attackers, timeout=CUT_AFTER_S) if attackers else (set(), set())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def vm_hwm(pid: int) -> int:
    """The process's peak RSS since the last reset (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: peak RSS := current RSS


def measure(artifact: Path, window: float, rounds: int, work: Path) -> list[Phase]:
    """The two phases, measured in alternating windows: alone, attacked, alone, ..., alone."""
    timeouts = {"body_timeout_s": str(BODY_TIMEOUT_S), "header_timeout_s": str(BODY_TIMEOUT_S)}
    server = ServerProcess(artifact, work / "data", work / "server.log", **timeouts)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            ok(lambda: c.post("/galleries", json={"name": "bench"}))
            for s in range(SUBJECTS):
                files = {"files": (f"s{s}.npy", npy_bytes(walking_sequence(s, FRAMES)))}
                ok(functools.partial(c.post, f"/galleries/bench/subjects/s{s}/sequences", files=files))
            dim = c.get("/galleries/bench").json()["dim"]
        target = Target(server.port, dim, attack_files(), attacks(dim))
        plan = list(target.attacks)
        target.cursors = [i * len(plan) // ATTACKERS for i in range(ATTACKERS)]  # spread over the plan
        assert server.proc is not None
        alone, attacked = Phase("honest only"), Phase("all attacks")
        for n, phase in enumerate([alone, attacked] * rounds + [alone]):
            reset_hwm(server.proc.pid)
            sent = plan if phase is attacked else []
            asyncio.run(run_window(server.url, target, window, sent, phase, warm_up=n == 0))
            phase.peak_rss = max(phase.peak_rss, vm_hwm(server.proc.pid))
        for phase in (alone, attacked):
            print(
                f"{phase.name:15}: honest {phase.throughput:5.1f} req/s  p50 {phase.percentile(50):6.1f} ms  "
                f"p99 {phase.percentile(99):6.1f} ms  5xx {phase.server_errors}  refusals "
                f"{phase.honest_refusals}  peak RSS "
                f"{phase.peak_rss / MIB:.0f} MiB  attacks {phase.attacks_sent}",
                flush=True,
            )
        return [alone, attacked]
    finally:
        server.stop()


def refused(counter: Counter[Reply]) -> bool:
    return bool(counter) and all(r.status == CLOSED or 400 <= r.status < 500 for r in counter)


def shown(r: Reply) -> str:
    return (
        "closed"
        if r.status == CLOSED
        else f"{r.status} (the probe's, in a 200)"
        if r.in_200
        else str(r.status)
    )


def table(attacked: Phase, names: list[str]) -> str:
    """Each attack's answers, its median time to answer, and whether it was refused."""
    rows = []
    for name in names:
        statuses = attacked.attack_status.get(name, Counter())
        ms = attacked.attack_ms.get(name, [])
        cut = attacked.attack_cut[name]
        answers = ", ".join(f"{shown(r)} x{n}" for r, n in sorted(statuses.items())) or "none"
        answers += f" (+{cut} cut at the end)" if cut else ""
        resets = attacked.attack_late_resets[name]
        answers += (
            f", {resets} reset after the {BODY_TIMEOUT_S:g} s body timeout (a 408 mid-upload)"
            if resets
            else ""
        )
        median = f"{np.median(ms):.0f}" if ms else ""
        verdict = "yes" if refused(statuses) else "no answer in time" if not statuses and cut else "**no**"
        rows.append(f"| {name} | {answers} | {median} | {verdict} |")
    header = ["| attack | answers | median ms | refused |", "|---|---|---|---|"]
    return "\n".join([*header, *rows])


def section(phases: list[Phase], names: list[str], window: float, rounds: int, quick: bool, runs: str) -> str:
    alone, attacked = phases
    every = "yes" if all(refused(attacked.attack_status.get(n, Counter())) for n in names) else "**no**"
    errors = sum(p.server_errors for p in phases)
    command = f"python benchmarks/hostile.py{' --quick' if quick else ''}"

    def row(phase: Phase) -> str:
        ratio = "" if phase is alone else f" ({phase.throughput / alone.throughput:.2f}x)"
        return (
            f"| {phase.name} | {phase.throughput:.1f}{ratio} | {phase.percentile(50):.0f} | "
            f"{phase.percentile(99):.0f} | {phase.server_errors} | {phase.peak_rss / MIB:.0f} MiB |"
        )

    return f"""{SECTION}

`{command}` on the shared 2-core x86-64 CPU ({platform.machine()}), no GPU, other work running on
the machine (absolute rates swing with it; the phases run back to back on one server): default
settings but `GAITLU_BODY_TIMEOUT_S={BODY_TIMEOUT_S:g}` and `GAITLU_HEADER_TIMEOUT_S={BODY_TIMEOUT_S:g}`,
narrow GaitSSB, a {SUBJECTS}-subject gallery. {HONEST} honest closed-loop clients alternate `/embed` and
`/search` with a 92-frame .npy in {2 * rounds + 1} windows of {window:.0f} s: alone, then with {ATTACKERS}
attackers cycling through every hostile-input attack, alternately ({rounds} attacked, {rounds + 1} alone,
so the other work's drifting load weighs on both). Clients and server share the 2 cores. Targets: honest
throughput >= 0.8x, no 5xx, server peak RSS under {RSS_BOUND // MIB} MiB (its honest-load footprint +
256 MiB of bodies in flight + 4 decodes of <= 64 MiB), every attack refused (a 4xx or 429; a slow
request head: the connection closed).

| phase | honest req/s | p50 ms | p99 ms | 5xx | server peak RSS |
|---|---|---|---|---|---|
{row(alone)}
{row(attacked)}

{table(attacked, names)}

- Every attack refused: {every}; 5xx in both phases: {errors}.
{runs}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 windows of 6 s: <= 60 s, artifact cached")
    parser.add_argument("--window", type=float, help="seconds per window (default 6 quick, 10 full)")
    parser.add_argument("--rounds", type=int, help="attacked windows (default 1 quick, 3 full)")
    parser.add_argument(
        "--artifact", type=Path, help="export artifact (default: benchmarks/service.py's cache)"
    )
    parser.add_argument("--write-results", action="store_true", help=f"update the section in {RESULTS}")
    parser.add_argument(
        "--runs-note", type=Path, help="a Markdown file of notes (the spread over runs) for the section"
    )
    args = parser.parse_args()
    window = args.window or (6.0 if args.quick else 10.0)
    rounds = args.rounds or (1 if args.quick else 3)
    artifact = args.artifact
    if artifact is None:
        bench = _service_benchmark()
        artifact = bench.CACHE
        if not (artifact / "manifest.json").is_file():
            started = time.perf_counter()
            bench.build_artifact(artifact)
            print(f"exported the benchmark model in {time.perf_counter() - started:.0f} s (cached)")
    with tempfile.TemporaryDirectory(prefix="gaitlu-bench-hostile-") as tmp:
        phases = measure(artifact, window, rounds, Path(tmp))
    alone, attacked = phases
    names = list(attacks(1))
    print(table(attacked, names))
    if args.write_results:
        runs = args.runs_note.read_text().strip() if args.runs_note else ""
        write_section(section(phases, names, window, rounds, args.quick, runs))
    every_refused = all(refused(attacked.attack_status.get(n, Counter())) for n in names)
    pairs = [
        f"honest_throughput_ratio={attacked.throughput / alone.throughput:.2f}",
        f"honest_rps_alone={alone.throughput:.1f}",
        f"honest_p99_ms_alone={alone.percentile(99):.0f}",
        f"honest_p99_ms_attacked={attacked.percentile(99):.0f}",
        f"server_5xx={sum(p.server_errors for p in phases)}",
        f"honest_refusals_alone={alone.honest_refusals}",
        f"honest_refusals_attacked={attacked.honest_refusals}",
        f"peak_rss_mib_alone={alone.peak_rss / MIB:.0f}",
        f"peak_rss_mib_attacked={attacked.peak_rss / MIB:.0f}",
        f"rss_under_bound={int(attacked.peak_rss < RSS_BOUND)}",
        f"attacks_sent={attacked.attacks_sent}",
        f"every_attack_refused={int(every_refused)}",
        f"attacks_cut_unanswered={sum(attacked.attack_cut.values())}",
    ]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
