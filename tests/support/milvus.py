"""A real milvus-lite gRPC server on loopback for the tests and benchmarks of the milvus gallery backend.

milvus-lite speaks Milvus' protocol, so the backend runs the same pymilvus calls against it as against a
cluster. It is part of the `[milvus]` extra that `make venv` installs: without it the tests fail (they
never skip), naming the install.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

START_TIMEOUT_S = 60


def unique_db() -> str:
    """A fresh Milvus database name: each test's galleries apart from every other's on one server."""
    return f"t_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class MilvusLite:
    uri: str
    pid: int


@contextmanager
def milvus_lite_server(data_dir: Path, log: Path | None = None, **env: str) -> Iterator[MilvusLite]:
    """`milvus-lite server` on 127.0.0.1 and a free port, as a child process (`env`: its environment,
    e.g. MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES)."""
    try:
        import milvus_lite  # noqa: F401
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise RuntimeError("the milvus tests need the [milvus] extra: pip install -e '.[milvus]'") from exc
    port = free_port()
    log = log or data_dir.with_name(data_dir.name + ".log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"milvus-lite exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                client = MilvusClient(uri=uri, timeout=2)
                client.list_collections()
                client.close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"milvus-lite did not answer on {uri}:\n{log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        yield MilvusLite(uri, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ----- Milvus standalone: the server binary that the `milvus` package on PyPI ships (2.3.5)

STANDALONE_VENV = Path(__file__).resolve().parents[2] / ".data" / "milvus-server" / "venv"
STANDALONE_PORTS = (
    "etcd_port", "root_coord_port", "proxy_port", "proxy_internal_port", "query_coord_port",
    "query_node_port", "index_coord_port", "index_node_port", "data_coord_port", "data_node_port",
)  # fmt: skip
# Run by the server venv's Python: write the config once (the package's template, our ports), unpack the
# binaries into a cache kept between runs, then become the server (exec: its pid is the server's).
_LAUNCH = """
import json, os, sys
import milvus
spec = json.loads(sys.argv[1])
data, cache = spec["data_dir"], spec["bin_cache"]
if not os.path.exists(os.path.join(data, "configs", "milvus.yaml")):
    config = milvus.MilvusServerConfig(data_dir=data, **spec["ports"])
    for key, value in spec["extra"].items():
        config.set(key, value)
    config.resolve()
milvus._initialize_data_files(cache)
bin_dir = os.path.join(cache, "bin")
env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(spec["metrics_port"]),
           MILVUS_RUN_DIR=os.path.join(data, "run"), LD_LIBRARY_PATH=bin_dir)
os.chdir(data)
os.execve(os.path.join(bin_dir, "milvus"), ["milvus", "run", "standalone"], env)
"""


def distinct_ports(n: int) -> list[int]:
    """n free loopback ports, all different (free_port() one after another may repeat one)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def standalone_python() -> Path | None:
    """The Python of a venv holding the `milvus` server package: GAITLU_MILVUS_SERVER_PYTHON, else
    .data/milvus-server/venv (`python3 -m venv .data/milvus-server/venv && .data/milvus-server/venv/bin/pip
    install milvus==2.3.5`); None when neither exists."""
    given = os.environ.get("GAITLU_MILVUS_SERVER_PYTHON")
    path = Path(given) if given else STANDALONE_VENV / "bin" / "python"
    return path if path.is_file() else None


class MilvusStandalone:
    """`milvus run standalone` (embedded etcd, rocksmq, local storage in `data_dir`) as a child process in
    its own process group, on free loopback ports kept across restarts."""

    def __init__(self, python: Path, data_dir: Path, log: Path, *, session_ttl_s: int = 30) -> None:
        self.python, self.log = python, log
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = distinct_ports(len(STANDALONE_PORTS) + 1)
        self.spec: dict[str, Any] = {
            "data_dir": str(data_dir),
            "bin_cache": str(STANDALONE_VENV.parent / "bin-cache"),
            "ports": dict(zip(STANDALONE_PORTS, ports[:-1], strict=True)),
            "metrics_port": ports[-1],
            "extra": {"common.session.ttl": session_ttl_s},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.spec['ports']['proxy_port']}"

    def healthy(self) -> bool:
        import urllib.request

        try:
            url = f"http://127.0.0.1:{self.spec['metrics_port']}/healthz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return b"OK" in answer.read()
        except OSError:
            return False

    def start(self, timeout: float = 180.0) -> MilvusStandalone:
        """Start and wait for /healthz (the server's own readiness: its collections may still be loading)."""
        import json

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(self.python), "-c", _LAUNCH, json.dumps(self.spec)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-3000:]
                raise RuntimeError(f"milvus exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"milvus did not become healthy within {timeout} s (log: {self.log})")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL to the server's process group (a crash: nothing flushed on the way out)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(30)
