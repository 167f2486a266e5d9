"""Servers for the service tests and benchmarks: sequence files, an in-process app, a real server process."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from fastapi.testclient import TestClient

from gaitlu.safepickle import dumps_array
from service.app import create_app
from service.settings import load_settings
from tests.support.cli import gaitlu_argv
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
FULL_KEY = "full-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"


def error_code(response: httpx.Response, status: int) -> str:
    """The service's error code, after checking the status (the body shows in the failure message)."""
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


def npy_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return buffer.getvalue()


def pkl_bytes(arr: np.ndarray) -> bytes:
    return dumps_array(arr)


def settings_for(artifact: Path, data_dir: Path, **values: Any):
    return load_settings(artifact=artifact, data_dir=data_dir, **values)


@contextmanager
def client(artifact: Path, data_dir: Path, *, embedder: Any = None, **values: Any) -> Iterator[TestClient]:
    """A TestClient over a fresh app (lifespan run: model loaded, store open)."""
    app = create_app(settings_for(artifact, data_dir, **values), embedder=embedder)
    with TestClient(app, base_url="http://127.0.0.1") as c:  # a Host the server answers to
        yield c


@contextmanager
def served_in_thread(artifact: Path, data_dir: Path, **values: Any) -> Iterator[str]:
    """The real app served by uvicorn on 127.0.0.1 (a free port) in a daemon thread; yields its URL."""
    app = create_app(settings_for(artifact, data_dir, **values))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class ServerProcess:
    """`gaitlu serve` as a child process on 127.0.0.1 and a free port; its output goes to a log file."""

    def __init__(
        self, artifact: Path, data_dir: Path, log: Path, *, args: tuple[str, ...] = (), **env: str
    ) -> None:
        """env: GAITLU_* settings by lower-case name; args: more `gaitlu serve` options."""
        self.artifact, self.data_dir, self.log_path, self.args = artifact, data_dir, log, args
        self.env = {**os.environ, **{f"GAITLU_{k.upper()}": v for k, v in env.items()}}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        self.port = free_port()
        command = gaitlu_argv(
            "serve", "--artifact", self.artifact, "--data-dir", self.data_dir, "--port", self.port, *self.args
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the crash-safety case)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def gauge(client: httpx.Client | TestClient, name: str, **headers: str) -> float:
    """One unlabelled gauge from the server's /metrics, as Prometheus would scrape it."""
    return gauge_in(client.get("/metrics", headers=headers).text, name)


def gauge_in(text: str, name: str) -> float:
    """One unlabelled gauge from a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"/metrics has no {name}")


async def until_async(
    condition: Callable[[], Awaitable[bool] | bool], timeout: float = 60.0, what: str = "the condition"
) -> None:
    """`until` inside an event loop: the loop runs on while it waits (`condition` may be a coroutine)."""
    deadline = time.monotonic() + timeout
    while True:
        met = condition()
        if not isinstance(met, bool):
            met = await met
        if met:
            return
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        await asyncio.sleep(0.01)


def until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "the condition") -> None:
    """Wait for observable state (`condition()` true), polling; fails, saying `what` it waited for, after
    `timeout` seconds (generous: a loaded machine is slow, and a condition that is met ends the wait)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(0.01)
