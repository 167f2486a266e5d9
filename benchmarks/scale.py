"""The compose `scale` profile's shape on one machine: two replicas on a real Milvus server behind nginx.

Stands up, as processes on loopback: Milvus standalone (the server binary of the `milvus` package on
PyPI, 2.3.5: embedded etcd, rocksmq and local storage, so no etcd or MinIO processes; a venv of its own,
`--milvus-python` or GAITLU_MILVUS_SERVER_PYTHON, default .data/milvus-server/venv), two `gaitlu serve`
replicas with `GAITLU_GALLERY_BACKEND=milvus` on it, and nginx (Debian's package) running
deploy/nginx-scale.conf itself with its upstream and listen addresses rewritten to the loopback ports.

Then 16 closed-loop clients through nginx mix enrolments (a quarter) and searches (each probes a
sequence enrolled and acknowledged earlier, so its expected best subject is known) into one gallery, in
four phases:
  1. steady: both replicas;
  2. one replica: replica A killed with SIGKILL, load going on through nginx to B;
  3. milvus restart: the Milvus server killed with SIGKILL (its graceful stop hung for over a minute
     here) and started again on the same data and ports, until each kind of request has succeeded again;
  4. after: the same load on the restarted server.
Clients are honest: a 429 or 503 with Retry-After is waited out and sent again; any other failure
(502 from nginx, a transport error) is sent again after 0.5 s; an enrolment is always re-sent with the
same sequence id, which the service treats as a retry. At the end the gallery is read straight from
Milvus (a query iterator, not through the service) and every acknowledged (201) enrolment must be
there with its subject: `lost_acked` is the headline (target 0).

Model: the served default, models/default (`--artifact`). Uploads are walkers of tests/support/walkers.py,
30 model frames each (.npy). Every child process (Milvus and nginx with their process groups) is ended
on the way out, failures and SIGTERM included.

Usage: python benchmarks/scale.py [--quick] [--seconds S] [--artifact DIR] [--milvus-python PY]
       [--nginx BIN] [--session-ttl S] [--keep DIR] [--write-results]
The last line holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from honest import retry_after_s  # noqa: E402  (benchmarks run as scripts)
from results_md import RESULTS, write_section  # noqa: E402

from tests.support.milvus import MilvusStandalone, standalone_python  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402
from tests.support.walkers import walking_sequence  # noqa: E402

SECTION = "## Scale profile on one machine"
NGINX_CONF = ROOT / "deploy" / "nginx-scale.conf"
GALLERY = "g"
FRAMES = 30
CLIENTS = 16
ENROL_SHARE = 0.25
RETRY_S = 0.5  # wait before re-sending after a failure that named no Retry-After
RECOVERY_LIMIT_S = 180.0
PHASES = ("steady", "one replica", "milvus restart", "after")


@dataclass
class Attempt:
    op: str  # "enrol" | "search"
    started: float  # time.monotonic()
    ended: float
    status: int | str  # HTTP status, or "transport"
    code: str = ""  # the service's error code, "nginx" for nginx's own answer


@dataclass
class Load:
    """What the clients did and saw (shared by the asyncio tasks of one event loop)."""

    stop_at: float = float("inf")
    attempts: list[Attempt] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)  # sequence id -> subject, 201 answers
    sent: set[str] = field(default_factory=set)  # every sequence id sent
    seeds: list[int] = field(default_factory=list)  # walker seeds of acknowledged enrolments
    searched: Counter[str] = field(default_factory=Counter)  # "right" / "wrong" best subject
    last_ok: dict[str, float] = field(default_factory=dict)  # op -> start time of its latest 2xx


def npy(seed: int) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, walking_sequence(seed, FRAMES), allow_pickle=False)
    return buffer.getvalue()


def error_code(response: httpx.Response) -> str:
    if response.status_code < 300:
        return ""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "nginx" if "nginx" in response.text else "?"


async def until_final(
    c: httpx.AsyncClient, load: Load, op: str, request: dict[str, Any]
) -> httpx.Response | None:
    """Send until a final answer (2xx or 4xx other than 429), honouring Retry-After; every attempt is
    recorded. None when the run ends first (the outcome of an enrolment is then unknown)."""
    while time.monotonic() < load.stop_at:
        started = time.monotonic()
        try:
            response = await c.post(**request)
        except httpx.TransportError:
            load.attempts.append(Attempt(op, started, time.monotonic(), "transport"))
            await asyncio.sleep(RETRY_S)
            continue
        load.attempts.append(
            Attempt(op, started, time.monotonic(), response.status_code, error_code(response))
        )
        if response.status_code < 400 or (400 <= response.status_code < 500 and response.status_code != 429):
            if response.status_code < 300:
                load.last_ok[op] = max(load.last_ok.get(op, 0.0), started)
            return response
        wait = retry_after_s(response)
        await asyncio.sleep(RETRY_S if wait is None else wait)
    return None


async def client(c: httpx.AsyncClient, load: Load, i: int) -> None:
    rng = random.Random(i)
    n = 0
    while time.monotonic() < load.stop_at:
        if rng.random() < ENROL_SHARE or not load.seeds:
            seed = 1_000_000 * (i + 1) + n
            n += 1
            sequence_id = subject = f"c{i}-{seed}"
            load.sent.add(sequence_id)
            request = {
                "url": f"/galleries/{GALLERY}/subjects/{subject}/sequences",
                "files": {"files": (f"{sequence_id}.npy", npy(seed))},
                "data": {"sequence_ids": sequence_id},
            }
            response = await until_final(c, load, "enrol", request)
            if response is not None:
                if response.status_code != 201:
                    raise RuntimeError(f"enrolment refused: {response.status_code} {response.text}")
                load.acked[sequence_id] = subject
                load.seeds.append(seed)
        else:
            seed = rng.choice(load.seeds)
            request = {
                "url": "/search",
                "files": {"files": ("probe.npy", npy(seed))},
                "data": {"gallery": GALLERY, "k": "1"},
            }
            response = await until_final(c, load, "search", request)
            if response is not None and response.status_code == 200:
                hits = response.json()["data"][0]["data"]
                expected = f"c{seed // 1_000_000 - 1}-{seed}"
                load.searched["right" if hits and hits[0]["subject_id"] == expected else "wrong"] += 1


@dataclass
class Timeline:
    started: float = 0.0
    replica_killed: float = 0.0
    milvus_killed: float = 0.0
    milvus_healthy: float = 0.0
    recovered: float = 0.0
    ended: float = 0.0

    def phase_of(self, t: float) -> str:
        if t < self.replica_killed:
            return PHASES[0]
        if t < self.milvus_killed:
            return PHASES[1]
        if t < self.recovered:
            return PHASES[2]
        return PHASES[3]

    def bounds(self, phase: str) -> tuple[float, float]:
        edges = [self.started, self.replica_killed, self.milvus_killed, self.recovered, self.ended]
        k = PHASES.index(phase)
        return edges[k], edges[k + 1]


async def drive(
    url: str, seconds: float, warmup: float, replica: ServerProcess, milvus: MilvusStandalone
) -> tuple[Load, Timeline]:
    load, timeline = Load(), Timeline()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
        tasks = [asyncio.create_task(client(c, load, i)) for i in range(CLIENTS)]
        try:
            await asyncio.sleep(warmup)  # answers before the steady phase are left out of the figures
            timeline.started = time.monotonic()
            await asyncio.sleep(seconds)
            timeline.replica_killed = time.monotonic()
            replica.kill()  # SIGKILL, requests in flight
            await asyncio.sleep(seconds)
            timeline.milvus_killed = time.monotonic()
            await asyncio.to_thread(milvus.kill)
            await asyncio.to_thread(milvus.start)
            timeline.milvus_healthy = time.monotonic()
            while not all(load.last_ok.get(op, 0.0) > timeline.milvus_killed for op in ("enrol", "search")):
                if time.monotonic() - timeline.milvus_killed > RECOVERY_LIMIT_S:
                    raise RuntimeError(f"no recovery within {RECOVERY_LIMIT_S:.0f} s of the Milvus restart")
                await asyncio.sleep(0.05)
            timeline.recovered = time.monotonic()
            await asyncio.sleep(seconds)
            load.stop_at = time.monotonic()
            await asyncio.gather(*tasks)
        finally:
            load.stop_at = min(load.stop_at, time.monotonic())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        timeline.ended = time.monotonic()
    return load, timeline


def first_ok_after(load: Load, op: str, t: float) -> float:
    """Seconds from t to the end of the first 2xx of `op` among the requests sent after t."""
    ends = [a.ended for a in load.attempts if a.op == op and a.started >= t and str(a.status).startswith("2")]
    return min(ends) - t if ends else float("nan")


def stored_sequences(uri: str) -> dict[str, str]:
    """Sequence id -> subject, read straight from Milvus (at the collection's level, Strong), not through
    the service."""
    from pymilvus import MilvusClient

    from gallery.milvus import SEQUENCES, collection

    client = MilvusClient(uri=uri, timeout=30)
    try:
        iterator = client.query_iterator(
            collection(SEQUENCES, GALLERY),
            batch_size=1000,
            filter='uid != ""',
            output_fields=["uid", "subject"],
        )
        found: dict[str, str] = {}
        while batch := iterator.next():
            found.update((row["uid"], row["subject"]) for row in batch)
        iterator.close()
        return found
    finally:
        client.close()


@dataclass
class PhaseFigures:
    name: str
    seconds: float
    ok: Counter[str]
    errors: Counter[str]  # "op status" -> count, every non-2xx attempt
    latency_ms: list[float]

    @property
    def rps(self) -> float:
        return sum(self.ok.values()) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: int) -> float:
        if len(self.latency_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latency_ms, n=100, method="inclusive")[q - 1]


def figures(load: Load, timeline: Timeline) -> list[PhaseFigures]:
    out = []
    for phase in PHASES:
        start, end = timeline.bounds(phase)
        mine = [
            a for a in load.attempts if a.ended >= timeline.started and timeline.phase_of(a.ended) == phase
        ]  # where the answer came
        good = [a for a in mine if str(a.status).startswith("2")]
        out.append(
            PhaseFigures(
                phase,
                end - start,
                Counter(a.op for a in good),
                Counter(f"{a.op} {a.status} {a.code}".rstrip() for a in mine if a not in good),
                [(a.ended - a.started) * 1000 for a in good],
            )
        )
    return out


# ----- the topology


def nginx_config(workdir: Path, listen: int, upstreams: list[int]) -> Path:
    """deploy/nginx-scale.conf with loopback addresses, inside a main config of nginx's own."""
    fragment = NGINX_CONF.read_text()
    for name, port in zip(("api-a:8000", "api-b:8000"), upstreams, strict=True):
        assert f"server {name} " in fragment, f"{NGINX_CONF} no longer names {name}"
        fragment = fragment.replace(f"server {name} ", f"server 127.0.0.1:{port} ")
    assert "listen 8080;" in fragment, f"{NGINX_CONF} no longer listens on 8080"
    fragment = fragment.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    (workdir / "scale.conf").write_text(fragment)
    temp = workdir / "temp"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / sub).mkdir(parents=True, exist_ok=True)
        (temp / sub).chmod(0o777)  # nginx's workers drop root for `nobody`
    main = f"""worker_processes 1;
error_log {workdir}/error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {workdir}/scale.conf;
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(main)
    return path


@contextmanager
def nginx(binary: str, workdir: Path, upstreams: list[int]) -> Iterator[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = nginx_config(workdir, port, upstreams)
    log = open(workdir / "stderr.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(workdir / 'error.log').read_text()[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not answer") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        end_group(proc)
        log.close()


def end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the child's own process group, SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@dataclass
class Result:
    phases: list[PhaseFigures]
    timeline: Timeline
    acked: int
    sent: int
    stored: int
    api_count: int
    lost: list[str]
    wrong_subject: list[str]
    searched: Counter[str]
    recover_enrol_s: float  # from the Milvus kill to the first 201 of an enrolment sent after it
    recover_search_s: float
    load_avg: tuple[float, float, float]  # at the end
    load_start: float  # 1-minute load average before the topology started


def run(
    artifact: Path,
    seconds: float,
    warmup: float,
    python: Path,
    nginx_binary: str,
    session_ttl_s: int,
    work: Path,
) -> Result:
    load_start = os.getloadavg()[0]
    with ExitStack() as stack:
        milvus = MilvusStandalone(python, work / "milvus", work / "milvus.log", session_ttl_s=session_ttl_s)
        stack.callback(milvus.kill)
        started = time.monotonic()
        milvus.start()
        print(f"milvus standalone healthy in {time.monotonic() - started:.1f} s at {milvus.uri}", flush=True)
        replicas = []
        for name in ("a", "b"):
            replica = ServerProcess(
                artifact, work / name, work / f"replica-{name}.log", gallery_backend="milvus",
                milvus_uri=milvus.uri, threads="1",
            )  # fmt: skip
            stack.callback(replica.stop)
            replicas.append(replica)
        with ThreadPoolExecutor(2) as pool:  # both at once, as compose starts them
            list(pool.map(lambda r: r.start(timeout=120), replicas))
        url = stack.enter_context(nginx(nginx_binary, work / "nginx", [r.port for r in replicas]))
        created = httpx.post(f"{url}/galleries", json={"name": GALLERY}, timeout=120)
        if created.status_code != 201:
            raise RuntimeError(f"could not create the gallery: {created.status_code} {created.text}")
        print(
            f"topology up in {time.monotonic() - started:.1f} s; load for {seconds:.0f} s a phase", flush=True
        )
        load, timeline = asyncio.run(drive(url, seconds, warmup, replicas[0], milvus))
        stored = stored_sequences(milvus.uri)
        api = httpx.get(f"{url}/galleries/{GALLERY}", timeout=60)
        api.raise_for_status()
        lost = sorted(s for s in load.acked if s not in stored)
        wrong = sorted(s for s, subject in load.acked.items() if s in stored and stored[s] != subject)
        return Result(
            figures(load, timeline),
            timeline,
            len(load.acked),
            len(load.sent),
            len(stored),
            api.json()["sequence_count"],
            lost,
            wrong,
            load.searched,
            first_ok_after(load, "enrol", timeline.milvus_killed),
            first_ok_after(load, "search", timeline.milvus_killed),
            os.getloadavg(),
            load_start,
        )


# ----- reporting


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def table(result: Result) -> str:
    rows = []
    for p in result.phases:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(p.errors.items())) or "none"
        rows.append(
            f"| {p.name} | {p.seconds:.1f} | {p.ok['enrol']} | {p.ok['search']} | {p.rps:.1f} | "
            f"{p.percentile(50):.0f} | {p.percentile(99):.0f} | {errors} |"
        )
    return "\n".join(
        [
            "| phase | s | enrolments 201 | searches 200 | req/s | p50 ms | p99 ms "
            "| non-2xx answers (op status: count) |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def headline(result: Result) -> str:
    by = {p.name: p for p in result.phases}
    pairs = {
        "lost_acked": len(result.lost) + len(result.wrong_subject),
        "acked": result.acked,
        "stored": result.stored,
        "api_count": result.api_count,
        "unknown_outcome": result.sent - result.acked,
        "search_wrong": result.searched["wrong"],
        "searches_one_replica": by["one replica"].ok["search"],
        "searches_after": by["after"].ok["search"],
        "rps_steady": f"{by['steady'].rps:.1f}",
        "rps_one_replica": f"{by['one replica'].rps:.1f}",
        "rps_after": f"{by['after'].rps:.1f}",
        "rps_ratio_one_replica": f"{by['one replica'].rps / max(by['steady'].rps, 1e-9):.2f}",
        "p99_ms_steady": f"{by['steady'].percentile(99):.0f}",
        "errors_5xx": sum(
            v for p in result.phases for k, v in p.errors.items() if k.split()[1].startswith("5")
        ),
        "transport_errors": sum(v for p in result.phases for k, v in p.errors.items() if "transport" in k),
        "milvus_healthy_s": f"{result.timeline.milvus_healthy - result.timeline.milvus_killed:.1f}",
        "recover_enrol_s": f"{result.recover_enrol_s:.1f}",
        "recover_search_s": f"{result.recover_search_s:.1f}",
        "load1_start": f"{result.load_start:.1f}",
        "load1_end": f"{result.load_avg[0]:.1f}",
    }
    return " ".join(f"{k}={v}" for k, v in pairs.items())


def section(
    result: Result, command: str, seconds: float, session_ttl_s: int, line: str, nginx_binary: str
) -> str:
    said = subprocess.run([nginx_binary, "-v"], capture_output=True, text=True).stderr.strip()
    nginx_version = said.split(": ", 1)[-1] or "nginx"  # "nginx version: nginx/1.22.1"
    by = {p.name: p for p in result.phases}
    restart, t = by["milvus restart"], result.timeline
    return f"""{SECTION}

`{command}` on the shared {os.cpu_count()}-core {cpu_name()} ({platform.machine()}), no GPU, shared with
other work during the whole run (1-minute load average {result.load_start:.1f} at the start,
{result.load_avg[0]:.1f} at the end): absolute rates and latencies here say little; the counts and
ratios are the point. The compose `scale` profile's shape from
processes on loopback: Milvus standalone 2.3.5 (the `milvus` package's server binary; embedded etcd,
rocksmq and local storage instead of the etcd and MinIO containers; `common.session.ttl` {session_ttl_s} s),
two `gaitlu serve` replicas of models/default on it (`GAITLU_GALLERY_BACKEND=milvus`, one inference
thread each), {nginx_version} running deploy/nginx-scale.conf with loopback addresses. 16 honest
closed-loop clients through nginx, a quarter enrolments (one 30-frame walker each, client sequence ids)
and the rest searches probing an acknowledged enrolment (k=1); {seconds:.0f} s for each timed phase,
after a 5 s warm-up (none with `--quick`).
"one replica": replica A killed with SIGKILL under load; "milvus restart": the server killed with
SIGKILL and started again on the same data, until both kinds of request succeed again. Each answer
counts in the phase it arrived in (so "after" holds some requests sent during the outage, its p99).

{table(result)}

- Acknowledged enrolments: {result.acked}; read back from Milvus itself after the run: {result.stored}
  sequences, **{len(result.lost)} acknowledged ones missing**, {len(result.wrong_subject)} under another
  subject; the service counted {result.api_count}. {result.sent - result.acked} enrolments were sent
  without an answer when the run ended (their outcome is unknown to the client; they may be stored).
- Searches: {sum(p.ok["search"] for p in result.phases)} answered, {result.searched["wrong"]} whose best
  subject was not the probe's own; they went on with one replica ({by["one replica"].ok["search"]}) and
  after the restart ({by["after"].ok["search"]}).
- Milvus restart: the server answered /healthz {t.milvus_healthy - t.milvus_killed:.1f} s after the kill;
  the first enrolment and the first search sent after the kill succeeded {result.recover_enrol_s:.1f} s
  and {result.recover_search_s:.1f} s after it; {sum(restart.errors.values())} non-2xx answers meanwhile.
- One replica: {by["one replica"].rps / max(by["steady"].rps, 1e-9):.2f}x the steady request rate.

Headline: `{line}`
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s phases and a 10 s Milvus session TTL")
    parser.add_argument(
        "--seconds", type=float, help="seconds of each timed phase (default 3 quick, 20 full)"
    )
    parser.add_argument("--artifact", type=Path, default=ROOT / "models" / "default")
    parser.add_argument(
        "--milvus-python", type=Path, help="Python of a venv with `pip install milvus==2.3.5`"
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="nginx binary")
    parser.add_argument(
        "--session-ttl", type=int, help="Milvus common.session.ttl (default 10 quick, 30 full)"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the logs and data in this folder (else a temporary one)"
    )
    parser.add_argument("--write-results", action="store_true", help=f"update the section in {RESULTS}")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    session_ttl_s = args.session_ttl or (10 if args.quick else 30)
    python = args.milvus_python or standalone_python()
    if python is None:
        raise SystemExit(
            "no Milvus server: python3 -m venv .data/milvus-server/venv && "
            ".data/milvus-server/venv/bin/pip install milvus==2.3.5 (or --milvus-python)"
        )
    if not Path(args.nginx).is_file():
        raise SystemExit("no nginx: apt-get install -y nginx (or --nginx)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so every child is ended
    with tempfile.TemporaryDirectory(prefix="gaitlu-bench-scale-") as tmp:
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            args.keep.mkdir(parents=True)
            tmp = str(args.keep)
        try:
            result = run(
                args.artifact,
                seconds,
                0.0 if args.quick else 5.0,
                python,
                args.nginx,
                session_ttl_s,
                Path(tmp),
            )
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}", file=sys.stderr)
            raise
    print(table(result))
    line = headline(result)
    if args.write_results:
        given = [a for a in sys.argv[1:] if a != "--keep" and Path(a) != args.keep]  # not where logs went
        command = "python benchmarks/scale.py " + " ".join(given)
        write_section(section(result, command.strip(), seconds, session_ttl_s, line, args.nginx))
    print(line)
    if result.lost or result.wrong_subject:
        print(f"LOST acknowledged enrolments: {(result.lost + result.wrong_subject)[:20]}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
