"""The HTTP service under closed-loop load: batching on vs off, or backends side by side, measured to the end.

A real `gaitlu serve` (uvicorn, child process) on 127.0.0.1 embeds 92-frame uploads (.npy of 92 x 64 x 44
uint8 model frames, GaitLU-1M's average length) from N closed-loop clients (each sends its next request
when the last one returns), at concurrency 1, 8 and 32. Two servers take turns per concurrency: by
default one with micro-batching on (max_batch 8, max_wait 2 ms) and one with it off (max_batch 1); with
two or more `--backend` / `--precision` pairs, one server per pair, batching on (e.g. onnxruntime fp32
against OpenVINO bf16 on the default model).

Clients are honest (benchmarks/honest.py): a 429 or 503 with Retry-After is counted as a refusal and
asked again after the wait, so every cell runs to the end and reports its refusals (target 0).

Per request the client measures the latency; the server reports its queue wait and inference time
(`X-Queue-Time-Ms`, `X-Inference-Time-Ms`), its decode + preprocessing time (response body) and, in its
request log, its own duration from the request head to the response. From these: throughput, p50/p99
latency, refusals, the share of latency spent outside inference (upload, decoding, preprocessing,
queueing, response), the HTTP + decode overhead (latency - queue - inference) relative to inference
time, and the same on the server's side alone (its duration - queue - inference, over inference:
the target is <= 10 %). Client and server share the machine's cores, as a sidecar would.

Model: a narrow GaitSSB (channels 8/16/32/64, random weights; the width configs/gaitssb_tiny.yaml trains),
exported once into the cache folder (needs torch; later runs reuse it), or `--artifact DIR` (e.g.
models/default). An OpenVINO pair the artifact has no passing parity record for is checked first on a
copy (`gaitlu parity`'s code, on `--parity-sequences`, else CASIA-B dev subjects 051-054 where the packed
set is present, else synthetic walks); a pair that fails is left out and said so.

Usage: python benchmarks/service.py [--quick] [--artifact DIR] [--backend B --precision P ...]
       [--write-results]
The last line holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from honest import send  # noqa: E402  (benchmarks run as scripts)
from results_md import RESULTS, write_section  # noqa: E402

from gaitlu.manifest import read_manifest  # noqa: E402
from gaitlu.sequence import save_sequence  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402
from tests.support.walkers import walking_sequence  # noqa: E402

SECTION, BACKENDS_SECTION = "## Service", "## Service backends"
CACHE = ROOT / ".data" / "bench" / "service-artifact"
FRAMES = 92
CONCURRENCY = (1, 8, 32)
BATCHING = {"on": {"max_batch": "8", "max_wait_ms": "2"}, "off": {"max_batch": "1", "max_wait_ms": "0"}}
PARITY_SUBJECTS = ("051", "052", "053", "054")  # CASIA-B dev test subjects: 440 real walks


@dataclass
class Run:
    mode: str  # the server: "on" / "off" (batching) or "backend/precision"
    concurrency: int
    seconds: float
    latency_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    refusals: int = 0  # 429 / 503 answers with Retry-After, waited out and asked again
    errors: int = 0  # other non-2xx answers
    server_ms: list[float] = field(default_factory=list)  # the server's request log: its duration
    server_queue_ms: list[float] = field(default_factory=list)
    server_inference_ms: list[float] = field(default_factory=list)

    @property
    def tag(self) -> str:
        """The X-Request-ID prefix of this cell's recorded requests (the server log is matched on it)."""
        return re.sub(r"[^A-Za-z0-9.:-]", ":", f"{self.mode}-c{self.concurrency}")

    @property
    def throughput(self) -> float:
        return len(self.latency_ms) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else float("nan")

    @property
    def outside_share(self) -> float:
        """Share of latency not spent in inference: upload, decode, preprocessing, queueing, response."""
        return 1 - sum(self.inference_ms) / sum(self.latency_ms)

    @property
    def overhead_ratio(self) -> float:
        """(latency - queue - inference) / inference: what HTTP and decoding add per request."""
        overhead = sum(self.latency_ms) - sum(self.queue_ms) - sum(self.inference_ms)
        return overhead / sum(self.inference_ms)

    @property
    def server_overhead_ratio(self) -> float:
        """The server's own (duration - queue - inference) / inference, from its request log."""
        inference = sum(self.server_inference_ms)
        if not inference:
            return float("nan")
        return (sum(self.server_ms) - sum(self.server_queue_ms) - inference) / inference

    @property
    def server_outside_share(self) -> float:
        """1 - inference / duration on the server's side: its time outside inference, queueing included."""
        return 1 - sum(self.server_inference_ms) / sum(self.server_ms) if self.server_ms else float("nan")


def build_artifact(out: Path) -> Path:
    """Export the narrow model once (torch is imported only here)."""
    import torch

    from export.pipeline import ExportOptions, export_artifact
    from train.checkpoint import atomic_save, build_checkpoint
    from train.model import GaitSSB, ModelConfig

    torch.manual_seed(0)
    model = GaitSSB(ModelConfig(channels=(8, 16, 32, 64))).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = atomic_save(build_checkpoint(model, {}, 0), Path(tmp) / "narrow.pt")
        export_artifact(ckpt, out, ExportOptions(max_batch=32, max_frames=720, parity_cases=((2, 3),)))
    return out


def upload() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, walking_sequence(0, FRAMES), allow_pickle=False)
    return buffer.getvalue()


async def load(url: str, concurrency: int, seconds: float, body: bytes, mode: str) -> Run:
    run = Run(mode, concurrency, seconds)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as c:

        async def client(i: int, until: float, record: bool) -> None:
            n = 0
            while time.perf_counter() < until:
                headers = {"X-Request-ID": f"{run.tag}-{i}-{n}"} if record else {}
                n += 1
                started = time.perf_counter()
                files = {"files": ("walk.npy", body)}
                post = functools.partial(c.post, "/embed", files=files, headers=headers)
                response, refusals = await send(post, until)
                latency = (time.perf_counter() - started) * 1000
                if not record:
                    continue
                run.refusals += refusals
                if response.status_code != 200:
                    run.errors += response.status_code not in (429, 503)
                    continue
                run.latency_ms.append(latency)
                run.queue_ms.append(float(response.headers["X-Queue-Time-Ms"]))
                run.inference_ms.append(float(response.headers["X-Inference-Time-Ms"]))
                run.decode_ms.append(response.json()["data"][0]["timings"]["decode_ms"])

        warm = time.perf_counter() + min(1.0, seconds / 4)
        await asyncio.gather(*(client(i, warm, False) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(client(i, started + seconds, True) for i in range(concurrency)))
        run.seconds = time.perf_counter() - started  # the last requests end after the deadline
    return run


def read_server_log(log: Path, runs: list[Run]) -> None:
    """Each run's own requests' duration / queue / inference from the server's JSON request log."""
    by_tag = {run.tag: run for run in runs}
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        rid = str(entry.get("request_id") or "")
        run = by_tag.get(rid.rsplit("-", 2)[0])
        if run is None or entry.get("status") != 200 or "duration_ms" not in entry:
            continue
        run.server_ms.append(entry["duration_ms"])
        run.server_queue_ms.append(entry["queue_ms"])
        run.server_inference_ms.append(entry["inference_ms"])


def parity_sequences(given: Path | None, work: Path) -> Path:
    """Where OpenVINO's parity is checked: the folder given, else real CASIA-B walks where the packed
    dev set is present, else synthetic walks (tests/support/walkers.py) written into `work`."""
    if given is not None:
        return given
    try:
        from tests.support.casiab_dev import dev_tree

        return _subset(dev_tree(PARITY_SUBJECTS), work)
    except (FileNotFoundError, OSError) as exc:
        print(f"parity on synthetic walks: no CASIA-B dev set ({exc})", file=sys.stderr)
    folder = work / "parity-walks"
    for i in range(32):
        save_sequence(walking_sequence(500 + i, 30 + 2 * i), folder / f"{i:02d}.npy")
    return folder


def _subset(tree: Path, work: Path) -> Path:
    """A folder of links to the parity subjects only (the cache may hold more)."""
    folder = work / "parity-casiab"
    folder.mkdir(parents=True, exist_ok=True)
    for subject in PARITY_SUBJECTS:
        link = folder / subject
        if not link.exists():
            link.symlink_to(tree / subject, target_is_directory=True)
    return folder


def checked_artifact(
    artifact: Path, runtimes: list[tuple[str, str]], sequences: Path | None, work: Path
) -> tuple[Path, list[tuple[str, str]]]:
    """The artifact, or a copy with the missing OpenVINO parity records measured; the runtimes it can
    serve (a pair whose parity fails is left out, with a message)."""
    from runtime.parity import record_parity

    manifest = read_manifest(artifact)
    missing = [(b, p) for b, p in runtimes if b == "openvino" and f"{b}/{p}" not in manifest.backend_parity]
    if missing:
        copy = work / "artifact"
        shutil.copytree(artifact, copy)
        folder = parity_sequences(sequences, work)
        for key, record in record_parity(copy, folder, missing, limit=64).items():
            print(f"parity {key}: min cosine {record.min_cosine:.6f} on {record.data}", flush=True)
        artifact, manifest = copy, read_manifest(copy)
    usable = []
    for backend, precision in runtimes:
        record = manifest.backend_parity.get(f"{backend}/{precision}")
        if backend == "openvino" and (record is None or not record.passed):
            print(f"left out {backend}/{precision}: its parity failed", file=sys.stderr)
            continue
        usable.append((backend, precision))
    return artifact, usable


def servers_for(runtimes: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Server name -> its GAITLU_* settings: batching on/off of one runtime, or one server per runtime."""
    if len(runtimes) == 1:
        [(backend, precision)] = runtimes
        return {mode: {**env, "backend": backend, "precision": precision} for mode, env in BATCHING.items()}
    return {f"{b}/{p}": {**BATCHING["on"], "backend": b, "precision": p} for b, p in runtimes}


def measure(artifact: Path, servers: dict[str, dict[str, str]], seconds: float, work: Path) -> list[Run]:
    body = upload()
    runs: list[Run] = []
    started: dict[str, ServerProcess] = {}
    try:
        for mode, env in servers.items():
            name = re.sub(r"[^A-Za-z0-9]", "-", mode)
            started[mode] = ServerProcess(
                artifact, work / name, work / f"{name}.log", max_queue="256", **env
            ).start()
        for concurrency in CONCURRENCY:
            for mode, server in started.items():  # every server idle except the one measured
                run = asyncio.run(load(server.url, concurrency, seconds, body, mode))
                print(
                    f"{mode:14} c={concurrency:2}: {run.throughput:6.1f} req/s  p50 "
                    f"{run.percentile(50):7.1f} ms  p99 {run.percentile(99):7.1f} ms  refusals "
                    f"{run.refusals}  errors {run.errors}  outside inference {run.outside_share:5.1%}",
                    flush=True,
                )
                runs.append(run)
    finally:
        for server in started.values():
            server.stop()
    for mode, server in started.items():
        read_server_log(server.log_path, [run for run in runs if run.mode == mode])
    return runs


def table(runs: list[Run]) -> str:
    modes = list(dict.fromkeys(run.mode for run in runs))
    by = {(r.mode, r.concurrency): r for r in runs}
    rows = []
    for concurrency in CONCURRENCY:
        for mode in modes:
            run = by[mode, concurrency]
            rows.append(
                f"| {concurrency} | {mode} | {run.throughput:.1f} | {run.percentile(50):.1f} | "
                f"{run.percentile(99):.1f} | {run.refusals} | {run.errors} | "
                f"{statistics.fmean(run.inference_ms):.1f} | {statistics.fmean(run.decode_ms):.2f} | "
                f"{run.outside_share:.1%} | {run.overhead_ratio:.1%} | {run.server_overhead_ratio:.1%} |"
            )
        first, second = by[modes[0], concurrency], by[modes[1], concurrency]
        label, ratio = ratio_of(modes, first, second)
        rows.append(f"| {concurrency} | {label} | **{ratio:.2f}x** | | | | | | | | | |")
    return "\n".join(
        [
            "| clients | server | req/s | p50 ms | p99 ms | refusals | errors | inference ms | decode ms "
            "| outside inference | HTTP+decode / inference | server overhead / inference |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def ratio_of(modes: list[str], first: Run, second: Run) -> tuple[str, float]:
    """Batching: on / off. Backends: the second over the first (e.g. openvino/bf16 over cpu/fp32)."""
    if modes[:2] == ["on", "off"]:
        return "on / off", first.throughput / second.throughput
    return f"{second.mode} / {first.mode}", second.throughput / first.throughput


def section(runs: list[Run], seconds: float, quick: bool, artifact: Path, command: str) -> str:
    modes = list(dict.fromkeys(run.mode for run in runs))
    batching = modes[:2] == ["on", "off"]
    by = {(r.mode, r.concurrency): r for r in runs}
    ratios = " / ".join(f"{ratio_of(modes, by[modes[0], c], by[modes[1], c])[1]:.2f}x" for c in CONCURRENCY)
    refusals = sum(run.refusals for run in runs)
    what = "batching on and off" if batching else " and ".join(modes)
    return f"""{SECTION if batching else BACKENDS_SECTION}

`{command}` on a {platform.machine()} CPU, no GPU (absolute rates swing with any other load on the
machine); {what} measured side by side, per concurrency, against identical servers of
`{artifact.name}`. Honest closed-loop clients (httpx, same machine; a 429/503 is waited out for its
Retry-After and counted) post one 92-frame .npy ({len(upload()) // 1024} KiB) to `/embed` for
{seconds:.0f} s per cell after a warm-up. "outside inference" = 1 - inference / latency;
"HTTP+decode / inference" = (latency - queue - inference) / inference as the client sees it; "server
overhead / inference" = the same from the server's request log (its duration from the request head to
the response, minus queue and inference), the target being <= 10 %.

{table(runs)}

- {"on / off" if batching else f"{modes[1]} / {modes[0]}"}: {ratios} the throughput at 1 / 8 / 32 clients.
- Refusals: {refusals} in all (target 0 at 32 honest clients).
"""


def runtimes_from(backends: list[str] | None, precisions: list[str] | None) -> list[tuple[str, str]]:
    backends, precisions = backends or ["auto"], precisions or ["auto"]
    if len(precisions) == 1:
        precisions = precisions * len(backends)
    if len(backends) == 1:
        backends = backends * len(precisions)
    if len(backends) != len(precisions):
        raise SystemExit("give one --precision per --backend (or one for all)")
    return list(zip(backends, precisions, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per cell, <= 60 s with a cached artifact")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 3 quick, 15 full)")
    parser.add_argument("--artifact", type=Path, help=f"export artifact (default: build once into {CACHE})")
    parser.add_argument(
        "--backend", action="append", help="server backend; repeat (with --precision) to compare servers"
    )
    parser.add_argument("--precision", action="append", help="server precision, one per --backend")
    parser.add_argument("--parity-sequences", type=Path, help="sequences for a missing OpenVINO parity check")
    parser.add_argument("--write-results", action="store_true", help=f"update the section in {RESULTS}")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 15.0)
    runtimes = runtimes_from(args.backend, args.precision)
    artifact = args.artifact
    if artifact is None:
        artifact = CACHE
        if not (CACHE / "manifest.json").is_file():
            started = time.perf_counter()
            build_artifact(CACHE)
            print(f"exported the benchmark model in {time.perf_counter() - started:.0f} s (cached)")
    with tempfile.TemporaryDirectory(prefix="gaitlu-bench-service-") as tmp:
        served, runtimes = checked_artifact(artifact, runtimes, args.parity_sequences, Path(tmp))
        if not runtimes:
            raise SystemExit("no runtime left to measure")
        runs = measure(served, servers_for(runtimes), seconds, Path(tmp))
    print(table(runs))
    if args.write_results:
        command = "python benchmarks/service.py " + " ".join(sys.argv[1:])
        write_section(section(runs, seconds, args.quick, artifact, command.strip()))
    modes = list(dict.fromkeys(run.mode for run in runs))
    by = {(r.mode, r.concurrency): r for r in runs}
    name = {mode: re.sub(r"[^A-Za-z0-9]", "_", mode) for mode in modes}
    pairs = [
        f"{'batching_speedup' if modes[:2] == ['on', 'off'] else 'speedup'}_c{c}="
        f"{ratio_of(modes, by[modes[0], c], by[modes[1], c])[1]:.2f}"
        for c in CONCURRENCY
    ]
    for mode in modes:
        c1, c32 = by[mode, 1], by[mode, 32]
        pairs += [
            f"rps_c32_{name[mode]}={c32.throughput:.1f}",
            f"p50_ms_c32_{name[mode]}={c32.percentile(50):.1f}",
            f"p99_ms_c32_{name[mode]}={c32.percentile(99):.1f}",
            f"server_overhead_c1_{name[mode]}={c1.server_overhead_ratio:.3f}",
            f"server_overhead_c32_{name[mode]}={c32.server_overhead_ratio:.3f}",
            f"outside_inference_c32_{name[mode]}={c32.outside_share:.3f}",
        ]
    pairs += [f"refusals={sum(r.refusals for r in runs)}", f"errors={sum(r.errors for r in runs)}"]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
