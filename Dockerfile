# The CPU API image: `gaitlu serve` on onnxruntime or OpenVINO + faiss-cpu. No torch: only the [serve] and
# [openvino] dependencies, installed from the exact lock deploy/requirements-serve.lock.
#   docker compose build api        (see docs/deployment.md)
# The base is pinned to an exact tag; pin its digest too where your registry lets you resolve it:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   ->   python:3.11.14-slim-bookworm@sha256:...
# Where no registry is reachable, deploy/base-image.sh makes a stand-in from Debian's packages:
#   docker build --build-arg PYTHON_IMAGE="$(deploy/base-image.sh)" ...
# Needs BuildKit (Docker's default builder since 23.0) for the secret below; no `# syntax=` line, so the
# engine's own Dockerfile frontend builds it and no frontend image is pulled.
# A network whose TLS proxy signs with its own CA: pass the bundle that trusts it as the secret pip-cert,
#   docker build --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt ...
# It replaces the image's bundle during the pip steps only; without it those steps use the image's own.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The artifact served out of the box: models/MODEL of this repository (default or synthetic).
ARG MODEL=default

# ---- build: the gaitlu wheel and a virtual environment holding it and its pinned dependencies
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# Dependencies first, from the lock alone, so this layer is reused until the lock changes.
COPY deploy/requirements-serve.lock /tmp/requirements-serve.lock
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    /opt/venv/bin/pip install --no-deps -r /tmp/requirements-serve.lock
# WITH_MILVUS=1 (the compose `scale` profile): pymilvus for galleries on a Milvus server.
ARG WITH_MILVUS=0
COPY deploy/requirements-milvus.lock /tmp/requirements-milvus.lock
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    if [ "$WITH_MILVUS" = 1 ]; then /opt/venv/bin/pip install --no-deps -r /tmp/requirements-milvus.lock; fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gaitlu gaitlu
COPY corpus corpus
COPY synth synth
COPY train train
COPY export export
COPY service service
COPY gallery gallery
COPY audit audit
COPY video video
COPY runtime runtime
COPY engine engine
COPY client client
COPY workflows workflows
# setuptools for the wheel build is pinned through PIP_CONSTRAINT (pip passes it to the isolated build).
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    echo "setuptools==84.2.1" > /tmp/build-constraints.txt \
    && PIP_CONSTRAINT=/tmp/build-constraints.txt /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/gaitlu-*.whl \
    && /opt/venv/bin/pip check

# ---- runtime: the slim base, the venv, a non-root user
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GAITLU_ARTIFACT=/artifacts/current \
    GAITLU_DATA_DIR=/data \
    GAITLU_HOST=0.0.0.0 \
    GAITLU_PORT=8000
RUN groupadd --system --gid 10001 gaitlu \
    && useradd --system --uid 10001 --gid gaitlu --no-create-home --shell /usr/sbin/nologin gaitlu \
    && mkdir -p /artifacts /data \
    && chown gaitlu:gaitlu /artifacts /data
COPY --from=build /opt/venv /opt/venv
# A new `artifacts` volume mounted on /artifacts starts as a copy of this folder, so the API serves the
# repository's model until an export replaces /artifacts/current (docs/deployment.md).
ARG MODEL
COPY --chown=10001:10001 models/${MODEL} /artifacts/current
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# Ready = the model answers a probe (GET /readyz is 200). slim has no curl: Python's urllib does the request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GAITLU_PORT', '8000') + '/readyz', timeout=4)"]
# `gaitlu serve` takes the artifact and data folders as options: the shell passes the GAITLU_* values
# (overridable in the env file); further arguments (compose `command:`) are appended.
ENTRYPOINT ["/bin/sh", "-c", "exec gaitlu serve --artifact \"$GAITLU_ARTIFACT\" --data-dir \"$GAITLU_DATA_DIR\" \"$@\"", "gaitlu-serve"]
