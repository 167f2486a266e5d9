"""The deployment files: compose validates under every profile and fails closed without API keys, the
Dockerfiles keep their invariants (pinned bases, non-root, health check, no torch in the API images),
the locks agree with pyproject.toml, and the env example and docs name only real settings.

No Docker engine is needed: compose's `config` validates and resolves the file without one.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from engine import EngineOptions
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
API_DOCKERFILES = ("Dockerfile", "docker/Dockerfile.gpu")
DOCKERFILES = (*API_DOCKERFILES, "docker/Dockerfile.train")
ENV_EXAMPLE = "deploy/gaitlu.env.example"
TORCH_PIN = "2.13.0"
KEY = "compose-test-key-0123456789"


# ----- compose


@cache
def compose_command() -> list[str]:
    """Debian's docker-compose (v1.29) or the v2 plugin; failing, not skipping, when neither exists."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    pytest.fail(
        "no compose binary to validate docker-compose.yml: install Debian's package "
        "(apt-get install -y docker-compose) or the docker compose v2 plugin"
    )


def compose(*args: str, api_keys: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAITLU_", "COMPOSE_"))}
    env["GAITLU_ENV_FILE"] = ENV_EXAMPLE
    if api_keys is not None:
        env["GAITLU_API_KEYS"] = api_keys
    command = [*compose_command(), "--project-directory", str(ROOT), "--env-file", str(ROOT / ENV_EXAMPLE)]
    command += ["-f", str(ROOT / "docker-compose.yml"), *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False
    )


def resolved(profile: str | None) -> dict:
    result = compose(*(["--profile", profile] if profile else []), "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def gpu_devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


@pytest.mark.parametrize("profile", [None, "gpu", "train", "scale"])
def test_compose_validates_under_every_profile(profile: str | None) -> None:
    services = resolved(profile)["services"]
    api = services["api"]
    assert "profiles" not in api  # the CPU API is the default service
    assert api["environment"]["GAITLU_API_KEYS"] == KEY
    assert {v.split(":")[0] for v in _volumes(api)} == {"artifacts", "gallery-data"}
    assert any(v.startswith("artifacts:/artifacts:ro") for v in _volumes(api))
    if profile == "gpu":
        gpu = services["api-gpu"]
        assert gpu["profiles"] == ["gpu"]
        assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
        assert gpu_devices(gpu)[0]["driver"] == "nvidia" and "gpu" in gpu_devices(gpu)[0]["capabilities"]
        # the engine cache is its own volume, where the runtime looks for it: <artifact>/trt-cache
        artifact = gpu["environment"]["GAITLU_ARTIFACT"]
        assert f"tensorrt-cache:{artifact}/trt-cache:rw" in _volumes(gpu)
    if profile == "train":
        train = services["train"]
        assert train["profiles"] == ["train"]
        assert train["command"][:3] == ["torchrun", "--standalone", "--nproc_per_node=1"]
        assert gpu_devices(train)[0]["count"] in ("all", -1)  # compose v2 prints "all" as -1
    if profile == "scale":
        replicas = [services["api-a"], services["api-b"]]
        for replica in replicas:
            assert replica["profiles"] == ["scale"] and replica["build"]["args"]["WITH_MILVUS"] == "1"
            env = replica["environment"]
            assert (env["GAITLU_GALLERY_BACKEND"], env["GAITLU_MILVUS_URI"]) == (
                "milvus",
                "http://milvus:19530",
            )
            assert env["GAITLU_API_KEYS"] == KEY and "ports" not in replica  # reached through the proxy only
            assert _volumes(replica) == ["artifacts:/artifacts:ro"]  # no gallery volume: Milvus holds them
        assert set(services["proxy"]["depends_on"]) == {"api-a", "api-b"}
        config = (ROOT / "deploy/nginx-scale.conf").read_text()
        assert "server api-a:8000" in config and "server api-b:8000" in config
        assert set(services["milvus"]["depends_on"]) == {"etcd", "minio"}
        for name in ("milvus", "etcd", "minio"):
            assert "ports" not in services[name]  # internal to compose's network


def _volumes(service: dict) -> list[str]:
    """Volumes in short syntax whatever form this compose version prints."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            out.append(volume if volume.count(":") >= 2 else f"{volume}:rw")
        else:
            mode = "ro" if volume.get("read_only") else "rw"
            out.append(f"{volume['source']}:{volume['target']}:{mode}")
    return out


def test_host_network_override_binds_the_api_to_loopback() -> None:
    """deploy/compose.host-network.yml (the deployment check's networking): the API shares the host's
    network stack and binds its loopback, so nothing it serves leaves 127.0.0.1."""
    override = ["-f", str(ROOT / "deploy/compose.host-network.yml")]
    result = compose(*override, "config")
    assert result.returncode == 0, result.stderr
    api = yaml.safe_load(result.stdout)["services"]["api"]
    assert api["network_mode"] == "host"
    assert api["environment"]["GAITLU_HOST"] == "127.0.0.1"
    assert api["environment"]["GAITLU_API_KEYS"] == KEY  # the main file's settings stay


def test_compose_fails_closed_without_api_keys() -> None:
    result = compose("config", api_keys=None)
    assert result.returncode != 0
    assert "set GAITLU_API_KEYS" in result.stderr


# ----- Dockerfiles


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())  # join `\`-continued lines
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 4 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages and instruction == "ARG":
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            assert stages, f"{path}: {instruction} before the first FROM"
            stages[-1].instructions.append((instruction, rest))
    return global_args, stages


def is_pinned(image: str) -> bool:
    """A digest, or a tag naming one release: python:3.11.14-... (not the moving 3.11-...), or NGC's
    monthly tensorrt:25.06-py3."""
    if "@sha256:" in image:
        return True
    _, _, tag = image.rpartition(":")
    return re.match(r"(\d+\.\d+\.\d+|\d{2}\.\d{2}-py3)\b", tag) is not None


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_invariants(dockerfile: str) -> None:
    global_args, stages = parse_dockerfile(ROOT / dockerfile)
    names = set()
    for stage in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], stage.base)
        assert base in names or is_pinned(base), f"{dockerfile}: base image {base} is not pinned"
        names.add(stage.name)
    runtime = stages[-1]
    users = runtime.args("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile}: runtime runs as root"
    for stage in stages:
        for command in stage.args("RUN"):
            installs = re.findall(r"pip install ([^&;|]*)", command)
            for words in map(shlex.split, installs):
                torch = [w for w in words if re.match(r"torch\b", w)]
                assert all(w == f"torch=={TORCH_PIN}" for w in torch), f"{dockerfile}: unpinned torch {torch}"


@pytest.mark.parametrize("dockerfile", API_DOCKERFILES)
def test_api_images_are_torch_free_locked_and_health_checked(dockerfile: str) -> None:
    _, stages = parse_dockerfile(ROOT / dockerfile)
    instructions = " ".join(f"{i} {a}" for s in stages for i, a in s.instructions)
    assert "torch" not in instructions.lower() and "[train]" not in instructions
    [health] = stages[-1].args("HEALTHCHECK")
    assert "/readyz" in health and "urllib" in health  # slim images have no curl
    runs = " ".join(a for s in stages for a in s.args("RUN"))
    assert (
        re.search(r"pip install --no-deps -r \S*requirements-serve\.lock", runs)
        or "requirements-shared" in runs
    )
    assert "pip check" in runs
    assert "0.0.0.0" in " ".join(stages[-1].args("ENV"))  # reachable from outside the container


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context: the last pattern matching the path or
    a folder above it decides, a `!pattern` bringing it back (stricter than Docker, whose `*` never
    crosses a `/`)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        if any(fnmatch.fnmatch(p, pattern.removeprefix("!").removeprefix("**/")) for p in prefixes):
            ignored = not keep
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copied_sources_exist_and_reach_the_build_context(dockerfile: str) -> None:
    global_args, stages = parse_dockerfile(ROOT / dockerfile)
    sources = [
        re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], source)  # the build argument's default
        for stage in stages
        for copy in stage.args("COPY")
        if not copy.startswith("--from")
        for source in copy.split()[:-1]
        if not source.startswith("--")  # --chown=...
    ]
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}: no such path"
        assert not dockerignored(source), f"{dockerfile}: COPY {source} is excluded by .dockerignore"
    # every package the wheel build includes is copied in (else the image's wheel silently lacks it)
    packages = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= set(sources)


def test_the_api_image_serves_a_repository_model_without_its_checkpoint() -> None:
    """The CPU image copies models/MODEL to /artifacts/current (a new artifacts volume starts as a copy):
    the ONNX graph and its manifest reach the build context, the torch checkpoint does not."""
    global_args, stages = parse_dockerfile(ROOT / "Dockerfile")
    assert "--chown=10001:10001 models/${MODEL} /artifacts/current" in stages[-1].args("COPY")
    for model in ("default", "synthetic"):
        assert not dockerignored(f"models/{model}/model.onnx")
        assert not dockerignored(f"models/{model}/manifest.json")
        assert dockerignored(f"models/{model}/checkpoint.pt")
    assert global_args["MODEL"] == "default"


def test_api_image_pip_steps_can_trust_a_host_ca_without_keeping_it() -> None:
    """Every pip step of the build stage may see a CA bundle passed as the BuildKit secret pip-cert (a TLS
    proxy's CA); secrets are mounted for the step only, and the runtime stage runs no pip at all."""
    _, stages = parse_dockerfile(ROOT / "Dockerfile")
    build, runtime = stages[0], stages[-1]
    mount = "--mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt"
    pip_steps = [r for r in build.args("RUN") if "pip " in r]
    assert pip_steps and all(r.startswith(mount) for r in pip_steps)
    assert not any("pip" in r for r in runtime.args("RUN"))


def test_train_image_takes_a_local_torch_wheel_only_by_build_argument() -> None:
    """By default the training image installs PyPI's torch==2.13.0 from its lock; TORCH_WHEEL (empty by
    default) names a wheel of deploy/wheels/ (bind-mounted from the build context) to install instead,
    and the build fails unless that is the torch installed in the end."""
    _, stages = parse_dockerfile(ROOT / "docker/Dockerfile.train")
    build = stages[0]
    assert "TORCH_WHEEL=" in build.args("ARG")
    runs = " ".join(build.args("RUN"))
    assert "--mount=type=bind,source=deploy/wheels,target=/tmp/wheels" in runs
    assert '"/tmp/wheels/$TORCH_WHEEL"' in runs and "is installed, not $TORCH_WHEEL" in runs
    assert (ROOT / "deploy/wheels").is_dir() and not dockerignored("deploy/wheels/torch-2.13.0+cpu.whl")


def test_hadolint_passes_when_installed() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the structural checks above still ran)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", *DOCKERFILES], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----- locks and pyproject


@cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock(name: str) -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "deploy" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            package, _, version = line.partition("==")
            assert version, f"{name}: {line} is not an exact pin"
            pins[canonicalize_name(package)] = Version(version)
    return pins


def serve_requirements() -> list[Requirement]:
    project = pyproject()["project"]
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["serve"])]


def test_the_api_image_requirements_exclude_torch() -> None:
    assert "torch" not in {canonicalize_name(r.name) for r in serve_requirements()}
    assert "torch" not in lock("requirements-serve.lock")


def test_serve_lock_pins_every_requirement_within_its_range() -> None:
    pins = lock("requirements-serve.lock")
    for requirement in serve_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is required by pyproject.toml but not pinned in the serve lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} violates {requirement}"
        for extra in requirement.extras:  # uvicorn[standard]: its extras' packages are locked too
            assert extra == "standard" and {"uvloop", "httptools", "websockets"} <= set(pins)


def test_gpu_lock_replaces_the_cpu_runtime_pair_with_cuda12_builds() -> None:
    serve, gpu = lock("requirements-serve.lock"), lock("requirements-gpu.lock")
    assert {"onnxruntime", "faiss-cpu"} <= set(serve) and not {"onnxruntime", "faiss-cpu"} & set(gpu)
    assert set(gpu) & set(serve) == set()  # shared pins live in one file only
    cuda12 = [name for name in gpu if name.endswith("-cu12")]
    assert cuda12, "the GPU lock names its CUDA wheels"
    assert gpu["onnxruntime-gpu"] < Version("1.27"), "onnxruntime-gpu >= 1.27 targets CUDA 13, not 12"
    text = (ROOT / "docker/Dockerfile.gpu").read_text()
    assert "grep -vE '^(onnxruntime|faiss-cpu)=='" in text  # the CPU pair never reaches the GPU image


def test_train_lock_pins_torch_exactly() -> None:
    assert lock("requirements-train.lock")["torch"] == Version(TORCH_PIN)
    train = {
        canonicalize_name(Requirement(r).name)
        for r in pyproject()["project"]["optional-dependencies"]["train"]
    }
    serve = lock("requirements-serve.lock")
    assert train <= set(lock("requirements-train.lock")) | set(serve)


# ----- settings named in the env example and the docs


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{(GAITLU_\w+?)(?::?[-?][^}]*)?\}", (ROOT / "docker-compose.yml").read_text()))


def setting_variables() -> set[str]:
    """Every service setting's variable; the engine's knobs (nested in `engine`) under their own names."""
    names = (set(Settings.model_fields) - {"engine"}) | set(EngineOptions.model_fields)
    return {f"GAITLU_{name.upper()}" for name in names}


def test_env_example_names_only_real_settings() -> None:
    names = set(re.findall(r"^#?(GAITLU_\w+)=", (ROOT / ENV_EXAMPLE).read_text(), re.MULTILINE))
    unknown = names - setting_variables() - compose_variables()
    assert not unknown, f"{ENV_EXAMPLE} sets variables nothing reads: {sorted(unknown)}"
    assert "GAITLU_API_KEYS" in names
    assert not re.search(
        r"^GAITLU_API_KEYS=\S", (ROOT / ENV_EXAMPLE).read_text(), re.MULTILINE
    )  # no default key


def test_deployment_docs_table_every_setting() -> None:
    docs = (ROOT / "docs/deployment.md").read_text()
    missing = {name for name in setting_variables() | compose_variables() if f"`{name}`" not in docs}
    assert not missing, f"docs/deployment.md does not describe {sorted(missing)}"
