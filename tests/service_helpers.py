"""Shared builders for the service tests: sequence files, an in-process app, a real server process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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

REPO = Path(__file__).resolve().parents[1]
FULL_KEY = "full-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"


def walking_sequence(seed: int, frames: int = 8) -> np.ndarray:
    """(T, 64, 44) uint8 person-like frames (torso ellipse + swinging legs), shaped and phased by `seed`;
    model-frame size, so no alignment is needed. Distinct seeds give distinct embeddings."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :44]  # (64, 44) each
    width, height, centre = rng.uniform(5, 12), rng.uniform(14, 24), rng.uniform(16, 28)
    phase, sway, leg = rng.uniform(0, 2 * np.pi), rng.uniform(2, 8), rng.uniform(2, 5)
    out = np.zeros((frames, 64, 44), np.uint8)
    for t in range(frames):
        swing = sway * np.sin(phase + t / 2)
        torso = ((yy - 40 + height) / height) ** 2 + ((xx - centre) / width) ** 2 < 1
        below = np.clip((yy - 38) / 26, 0, None)
        legs = (yy > 38) & (
            (np.abs(xx - centre + 3 - swing * below) < leg) | (np.abs(xx - centre - 3 + swing * below) < leg)
        )
        out[t] = (torso | legs) * 255
    return out


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`gaitlu serve` as a child process on 127.0.0.1 and a free port; its output goes to a log file."""

    def __init__(self, artifact: Path, data_dir: Path, log: Path, **env: str) -> None:
        self.artifact, self.data_dir, self.log_path = artifact, data_dir, log
        self.env = {**os.environ, **{f"GAITLU_{k.upper()}": v for k, v in env.items()}}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        self.port = free_port()
        command = [sys.executable, "-c", "from gaitlu.cli import main; main()", "serve"]
        command += [
            "--artifact",
            str(self.artifact),
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
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
