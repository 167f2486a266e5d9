"""A real milvus-lite gRPC server on loopback for the tests and benchmarks of the milvus gallery backend.

milvus-lite speaks Milvus' protocol, so the backend runs the same pymilvus calls against it as against a
cluster. It is part of the `[milvus]` extra that `make venv` installs: without it the tests fail (they
never skip), naming the install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
