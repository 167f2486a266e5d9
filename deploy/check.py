"""The deployment check: build the CPU API image, run it with docker compose and prove that it serves.

Builds `Dockerfile` (on the official base when it is present locally or named by GAITLU_PYTHON_IMAGE,
else on the Debian-made one of deploy/base-image.sh), starts compose's default profile with host
networking (deploy/compose.host-network.yml: everything stays on loopback), waits for the container's
health check, enrols two subjects and searches them through the API's port, restarts the container and
finds the gallery intact (the gallery volume), checks that the server runs as a non-root user, then
`compose down -v` and checks that nothing of the project is left. Every wait has a deadline; every
failure stops the check with a message saying what was expected. It removes the containers, volumes and
API image it made; the base image and the build cache stay, so a rerun is fast.

Needs a Docker engine with BuildKit and a compose binary: `.ci/deploy-check` (`make deploy-check`)
installs and starts them, then runs this with the project's venv (httpx, numpy).

`deploy/check.py train` (`make deploy-train-check`) checks the training image instead: built with the
CPU torch wheel, then 10 pretraining steps on a synthetic corpus inside it (minutes of CPU; not in CI).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_BASE = "python:3.11.14-slim-bookworm"
GALLERY = "deploy-check"
SERVICE = "api"
EXPECTED_UID = 10001  # the Dockerfile's `gaitlu` user


class CheckFailed(Exception):
    pass


def step(message: str) -> None:
    print(f"deploy-check: {message}", flush=True)


def run(command: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a command to completion within `timeout` seconds; its stdout, or CheckFailed with its output."""
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise CheckFailed(f"`{' '.join(command)}` did not finish within {timeout:.0f} s") from error
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-4000:]
        raise CheckFailed(f"`{' '.join(command)}` exited {done.returncode}:\n{output}")
    return done.stdout


def wait_for(what: str, ready: Callable[[], bool], timeout: float, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# ----- tools and images


def docker_build_command() -> tuple[list[str], dict[str, str]]:
    """A `docker build` that runs BuildKit (the Dockerfile mounts a secret): the buildx plugin where the
    client has it, else a client older than 23.0 (their BuildKit is built in, DOCKER_BUILDKIT=1), such as
    Debian's docker.io next to a newer static client that lacks buildx."""
    env = dict(os.environ)
    clients = [
        c for c in dict.fromkeys([shutil.which("docker"), "/usr/bin/docker"]) if c and os.access(c, os.X_OK)
    ]
    for client in clients:
        if subprocess.run([client, "buildx", "version"], capture_output=True, check=False).returncode == 0:
            return [client, "buildx", "build", "--load"], env
    for client in clients:
        version = subprocess.run(
            [client, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if version and int(version.split(".")[0]) < 23:
            return [client, "build"], env | {"DOCKER_BUILDKIT": "1"}
    raise CheckFailed(
        "no docker client can build with BuildKit: install the buildx plugin "
        "(apt-get install docker-buildx where available) or Debian's docker.io client"
    )


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise CheckFailed("no compose binary: apt-get install -y docker-compose, or the docker compose v2 plugin")


def base_image() -> str:
    """GAITLU_PYTHON_IMAGE, else the official base if the engine has it, else the Debian-made stand-in."""
    named = os.environ.get("GAITLU_PYTHON_IMAGE")
    if named:
        return named
    if (
        subprocess.run(
            ["docker", "image", "inspect", OFFICIAL_BASE], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return OFFICIAL_BASE
    step(f"{OFFICIAL_BASE} is not here: the base made from Debian's packages instead (deploy/base-image.sh)")
    return run([str(ROOT / "deploy/base-image.sh")], timeout=600).strip()


def ca_bundle() -> Path | None:
    """The CA bundle pip trusts on this host (PIP_CERT, pip's configuration, else the system's): the build's
    pip steps see it as the secret pip-cert, as the host's pip does, and it never reaches the image."""
    configured = os.environ.get("PIP_CERT")
    if not configured:
        probe = [sys.executable, "-m", "pip", "config", "get", "global.cert"]
        configured = subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
    for candidate in (configured, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_image(dockerfile: str, tag: str, base: str, *args: str, timeout: float = 900) -> float:
    """Seconds to build `dockerfile` as `tag` on `base`, its pip steps reaching the package index through
    the host's network and trusting the host's CA bundle."""
    command, env = docker_build_command()
    command += ["--network", "host", "--build-arg", f"PYTHON_IMAGE={base}", "-t", tag, *args]
    bundle = ca_bundle()
    if bundle is not None:
        command += ["--secret", f"id=pip-cert,src={bundle}"]
    start = time.monotonic()
    run([*command, "-f", dockerfile, "."], timeout=timeout, env=env)
    return time.monotonic() - start


# ----- compose project


@dataclass
class Project:
    name: str
    port: int
    key: str
    env_file: Path
    image: str
    compose: list[str]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GAITLU_", "COMPOSE_"))}
        version = self.image.partition(":")[2]
        return env | {
            "GAITLU_ENV_FILE": str(self.env_file),
            "GAITLU_API_KEYS": self.key,
            "GAITLU_VERSION": version,
            "GAITLU_PORT": str(self.port),
        }

    def __call__(self, *args: str, files: Sequence[Path] = (), timeout: float = 180) -> str:
        command = [*self.compose, "-p", self.name, "--project-directory", str(ROOT)]
        for file in files or [self.resolved]:
            command += ["-f", str(file)]
        command += ["--env-file", str(self.env_file), *args]
        return run(command, timeout=timeout, env=self.env())

    @property
    def resolved(self) -> Path:
        return self.env_file.with_name("compose.yml")

    def resolve(self) -> None:
        """docker-compose.yml with deploy/compose.host-network.yml over it, as compose resolves them, less
        the API's published ports: host networking makes them meaningless, and Debian's compose (v1)
        refuses them beside it, where an override file cannot remove a list (v2's `!reset` can)."""
        files = [ROOT / "docker-compose.yml", ROOT / "deploy/compose.host-network.yml"]
        config = yaml.safe_load(self("config", files=files))
        config["services"][SERVICE].pop("ports", None)
        self.resolved.write_text(yaml.safe_dump(config, sort_keys=False))

    def container(self) -> str:
        ids = self("ps", "-q", SERVICE).split()
        if len(ids) != 1:
            raise CheckFailed(f"expected one {SERVICE} container, compose lists {ids}")
        return ids[0]

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.name}"
        containers = run(["docker", "ps", "-aq", "--filter", label], timeout=30).split()
        volumes = run(["docker", "volume", "ls", "-q", "--filter", label], timeout=30).split()
        return containers + volumes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def compose_project(image: str) -> Iterator[Project]:
    """A compose project of its own name, port and key, taken down with its volumes whatever happens."""
    with tempfile.TemporaryDirectory(prefix="gaitlu-deploy-check-") as folder:
        key = secrets.token_urlsafe(32)
        env_file = Path(folder) / "gaitlu.env"
        example = (ROOT / "deploy/gaitlu.env.example").read_text()
        env_file.write_text(example + f"\nGAITLU_API_KEYS={key}\n")
        name = f"gaitlu-check-{os.getpid()}"
        project = Project(name, free_port(), key, env_file, image, compose_command())
        project.resolve()
        try:
            yield project
        finally:
            try:
                project("down", "-v", "--remove-orphans", timeout=120)
            except CheckFailed as error:
                step(f"cleanup: {error}")


def health(container: str) -> str:
    return run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container], timeout=30).strip()


def wait_healthy(container: str, timeout: float = 180) -> float:
    """Seconds until the engine's health check (the image's HEALTHCHECK, GET /readyz) reports healthy."""
    start = time.monotonic()
    deadline = start + timeout
    while (status := health(container)) != "healthy":
        if status == "unhealthy" or time.monotonic() > deadline:
            logs = subprocess.run(
                ["docker", "logs", "--tail", "40", container], capture_output=True, text=True
            )
            raise CheckFailed(
                f"container {container[:12]} is {status} after {time.monotonic() - start:.0f} s "
                f"(expected healthy within {timeout:.0f} s); its log:\n{logs.stdout}{logs.stderr}"
            )
        time.sleep(2)
    return time.monotonic() - start


# ----- the API


def walk(subject: int, frames: int = 40, height: int = 64, width: int = 44) -> bytes:
    """A synthetic walker as an .npz upload: a torso and two swinging legs whose proportions and gait
    frequency depend on `subject`, so two subjects embed apart and one sequence matches itself."""
    rng = np.random.default_rng(subject)
    torso_w, leg_len, freq = rng.uniform(5, 9), rng.uniform(20, 30), rng.uniform(0.15, 0.35)
    y, x = np.mgrid[0:height, 0:width]
    masks = np.zeros((frames, height, width), np.uint8)
    hip = height - leg_len - 2
    for t in range(frames):
        body = ((x - width / 2) / torso_w) ** 2 + ((y - hip / 2) / (hip / 2)) ** 2 <= 1
        for side in (-1, 1):
            swing = side * 0.5 * np.sin(2 * np.pi * freq * t)
            foot_x = width / 2 + leg_len * np.sin(swing)
            along = np.clip((y - hip) / leg_len, 0, 1)
            centre = width / 2 + along * (foot_x - width / 2)
            body |= (y >= hip) & (y <= hip + leg_len) & (np.abs(x - centre) <= 2.5)
        masks[t] = body * 255
    buffer = io.BytesIO()
    np.savez_compressed(buffer, silhouettes=masks)
    return buffer.getvalue()


def expect(response: httpx.Response, status: int, what: str) -> Any:
    """The response's JSON, after checking its status."""
    if response.status_code != status:
        raise CheckFailed(f"{what}: HTTP {response.status_code} (expected {status}): {response.text[:500]}")
    return response.json() if response.content else None


def search_top(client: httpx.Client, probe: bytes) -> tuple[str, float]:
    form = {"gallery": GALLERY, "k": "2"}
    body = expect(client.post("/search", data=form, files=[("files", ("probe.npz", probe))]), 200, "search")
    [result] = body["data"]
    hits = result["data"]
    if not hits:
        raise CheckFailed(f"search: no hit in gallery {GALLERY}: {body}")
    return str(hits[0]["subject_id"]), float(hits[0]["score"])


def enrol_and_search(client: httpx.Client, walks: dict[str, bytes]) -> None:
    expect(client.get("/healthz"), 200, "GET /healthz")
    expect(client.get("/readyz"), 200, "GET /readyz")
    keyless = httpx.get(client.base_url.join("/galleries"), timeout=30)
    expect(keyless, 401, "GET /galleries without a key")
    expect(client.post("/galleries", json={"name": GALLERY}), 201, "create gallery")
    for subject, upload in walks.items():
        url = f"/galleries/{GALLERY}/subjects/{subject}/sequences"
        files = [("files", (f"{subject}.npz", upload))]
        enrolled = expect(client.post(url, files=files, data={"sequence_ids": [subject]}), 201, "enrol")
        if enrolled["count"] != 1:
            raise CheckFailed(f"enrol {subject}: expected one sequence stored, got {enrolled}")
    check_gallery(client, walks)


def check_gallery(client: httpx.Client, walks: dict[str, bytes]) -> None:
    """The gallery holds every subject once and each enrolled walk finds its own subject first."""
    gallery = expect(client.get(f"/galleries/{GALLERY}"), 200, f"GET /galleries/{GALLERY}")
    if gallery["subject_count"] != len(walks) or not gallery["model_matches"]:
        raise CheckFailed(
            f"gallery {GALLERY}: expected {len(walks)} subjects of the running model: {gallery}"
        )
    for subject, upload in walks.items():
        top, score = search_top(client, upload)
        if top != subject or score < 0.99:
            raise CheckFailed(
                f"search with {subject}'s own walk: top hit {top} at {score:.4f} (expected itself)"
            )


def data_volume(container: str) -> str:
    """The named volume mounted on /data (the root filesystem is read-only, so the gallery can be nowhere
    else)."""
    mounts = run(
        ["docker", "inspect", "-f", "{{range .Mounts}}{{.Destination}}={{.Name}} {{end}}", container], 30
    )
    volume = dict(m.split("=", 1) for m in mounts.split()).get("/data", "")
    if not volume:
        raise CheckFailed(f"no volume on /data in {container[:12]}: {mounts}")
    return volume


def server_uid(container: str) -> int:
    """The real and effective uids of the container's first process (the server, exec'd by the entrypoint)."""
    status = run(["docker", "exec", container, "cat", "/proc/1/status"], timeout=30)
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    if len(set(uids)) != 1:
        raise CheckFailed(f"the server's uids differ: {uids}")
    return int(uids[0])


# ----- the check


def main() -> int:
    started = time.monotonic()
    compose_command()  # fail before a long build when compose is missing
    base = base_image()
    tag = f"gaitlu-api:check-{os.getpid()}"
    step(f"building {tag} on {base}")
    build_s = build_image("Dockerfile", tag, base)
    step(f"built in {build_s:.0f} s")
    walks = {f"subject-{i}": walk(i) for i in (1, 2)}
    try:
        with compose_project(tag) as project:
            step(f"compose up (project {project.name}, API on 127.0.0.1:{project.port}, host network)")
            project("up", "-d", "--no-build", SERVICE)
            container = project.container()
            step(f"healthy after {wait_healthy(container):.0f} s")
            headers = {"X-API-Key": project.key}
            base_url = f"http://127.0.0.1:{project.port}"
            with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
                enrol_and_search(client, walks)
                step("enrolled 2 subjects; each walk found its own subject first")
                project("restart", SERVICE, timeout=120)
                container = project.container()
                step(f"restarted; healthy after {wait_healthy(container):.0f} s")
                check_gallery(client, walks)
                step("gallery intact after the restart")
                project("up", "-d", "--no-build", "--force-recreate", SERVICE)
                container = project.container()
                step(f"recreated; healthy after {wait_healthy(container):.0f} s")
                check_gallery(client, walks)
                data = data_volume(container)
                step(f"gallery intact in a new container: /data is the volume {data}")
            uid = server_uid(container)
            if uid != EXPECTED_UID:
                raise CheckFailed(f"the server runs as uid {uid} (expected {EXPECTED_UID}, never root)")
            step(f"the server runs as uid {uid}")
        left = project.leftovers()
        if left:
            raise CheckFailed(f"compose down left containers or volumes of {project.name}: {left}")
        step("compose down left nothing running")
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120, check=False)
    step(f"passed in {time.monotonic() - started:.0f} s")
    return 0


# ----- the training image (`deploy/check.py train`: manual, minutes of CPU; not part of CI)

TORCH_CPU_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
PRETRAIN = (
    "set -e; gaitlu synth --out /runs/corpus --subjects 64 --layout gaitlu --workers 2"
    " && gaitlu train pretrain --config configs/gaitssb_tiny.yaml --data /runs/corpus --out /runs/pretrain"
    " --max-steps 10 --device cpu"
    " && python -c 'import torch; assert torch.version.cuda is None, torch.__version__'"
    " && ls /runs/pretrain/checkpoints"
)


def cpu_torch_wheel() -> Path:
    """GAITLU_TORCH_WHEEL, else the CPU build among pip's find-links folders (where `pip install
    torch==2.13.0` takes it from on this host)."""
    named = os.environ.get("GAITLU_TORCH_WHEEL")
    if named:
        return Path(named)
    probe = [sys.executable, "-m", "pip", "config", "get", "global.find-links"]
    configured = subprocess.run(probe, capture_output=True, text=True, check=False).stdout
    for folder in [*os.environ.get("PIP_FIND_LINKS", "").split(), *configured.split()]:
        wheel = Path(folder) / TORCH_CPU_WHEEL
        if wheel.is_file():
            return wheel
    raise CheckFailed(f"no {TORCH_CPU_WHEEL} in pip's find-links: set GAITLU_TORCH_WHEEL to its path")


def train_check() -> int:
    """The training image built with the CPU torch wheel, then 10 pretraining steps of the tiny GaitSSB
    on a synthetic corpus inside it, without a network; the image and the volume are removed after."""
    started = time.monotonic()
    base = base_image()
    wheel = cpu_torch_wheel()
    staged = ROOT / "deploy/wheels" / wheel.name  # the build context holds the wheel during the build only
    tag, volume = f"gaitlu-train:check-{os.getpid()}", f"gaitlu-train-check-{os.getpid()}"
    try:
        try:
            os.link(wheel, staged)
        except OSError:
            shutil.copy2(wheel, staged)
        step(f"building {tag} on {base} with {wheel.name}")
        build_s = build_image(
            "docker/Dockerfile.train", tag, base, "--build-arg", f"TORCH_WHEEL={wheel.name}"
        )
        step(f"built in {build_s:.0f} s")
    finally:
        staged.unlink(missing_ok=True)
    try:
        run(["docker", "volume", "create", volume], timeout=30)
        start = time.monotonic()
        listing = run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                f"{volume}:/runs",
                tag,
                "sh",
                "-c",
                PRETRAIN,
            ],
            timeout=1200,
        )
        if "step-00000010.pt" not in listing.split():
            raise CheckFailed(f"no step-10 checkpoint after the pretraining run: {listing}")
        step(f"synthetic corpus + 10 pretraining steps on CPU in {time.monotonic() - start:.0f} s")
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, timeout=60, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120, check=False)
    step(f"passed in {time.monotonic() - started:.0f} s")
    return 0


def interrupted(signum: int, _frame: object) -> None:
    raise CheckFailed(f"stopped by signal {signum}")  # so that the compose project is taken down


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupted)
    try:
        if sys.argv[1:] not in ([], ["train"]):
            sys.exit("usage: deploy/check.py [train]")
        sys.exit(train_check() if sys.argv[1:] == ["train"] else main())
    except CheckFailed as failure:
        print(f"deploy-check: FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    except httpx.HTTPError as failure:
        print(f"deploy-check: FAILED: {type(failure).__name__}: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
