# The autoencoder service: a CPU image by default, a CUDA one with --build-arg TORCH_VARIANT=cu128.
#
#   docker build -t ae-service .                                   # CPU
#   docker build --build-arg TORCH_VARIANT=cu128 -t ae-service:cuda .   # GPU (run with --gpus all)
#   docker run -p 8000:8000 ae-service
#   docker build --build-arg EXTRAS="[ray]" -t ae-service:ray .     # with Ray Serve (deploy/k8s/rayservice.yaml)
#
# Versions are pinned: the base image by tag and digest, torch by version, everything else by
# deploy/constraints.txt (written by deploy/pin_runtime.py from the environment the tests ran in). See
# docs/deployment.md.
#
# The digest is that of the multi-platform index of python:3.11.17-slim-bookworm as several public
# projects record it (Docker Hub could not be reached where this was written): check it before a release
# with `docker buildx imagetools inspect python:3.11.17-slim-bookworm`, and move tag and digest together.

ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm@sha256:2333bd330d12de02514770b3585cad313644316047cdee24a7acfdece6de6efb

# Build stage: a virtual environment holding torch, the runtime dependencies and the project.
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# cpu, or a CUDA wheel index of download.pytorch.org such as cu128 (its wheels carry the CUDA libraries)
ARG TORCH_VARIANT=cpu
# Optional extras of the project: "[ray]" adds Ray Serve and ae_ray, pinned by deploy/constraints-ray.txt.
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/constraints.txt deploy/constraints-ray.txt deploy/
# torch first, from its own index: the CPU wheel is a fraction of the size of PyPI's default (CUDA) one.
RUN pip install --no-cache-dir -c deploy/constraints.txt \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" --extra-index-url https://pypi.org/simple \
        "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY app app
COPY models models
COPY aeclient aeclient
COPY ae_ray ae_ray
RUN pip install --no-cache-dir -c deploy/constraints.txt -c deploy/constraints-ray.txt ".${EXTRAS}"

# Runtime stage: the environment and the checkpoints, nothing else; runs as an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ae
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
# Owned by root and read-only to the service: it reads weights, never writes them.
COPY checkpoints /srv/checkpoints
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AE_HOST=0.0.0.0 \
    AE_PORT=8000 \
    AE_CHECKPOINTS_DIR=/srv/checkpoints
USER ae
EXPOSE 8000
# Liveness only: readiness (/readyz) is for the orchestrator, which may wait for models to load.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('AE_PORT', '8000') + '/healthz', timeout=4)"]
# `ae serve` runs uvicorn with the AE_* settings; `docker run IMAGE serve --workers 2` passes flags on.
# It is PID 1 and gets `docker stop`'s SIGTERM: it drains (AE_SHUTDOWN_DRAIN_S) and exits 0; give
# `docker stop -t` / compose's stop_grace_period more than the drain plus the longest request.
ENTRYPOINT ["ae"]
CMD ["serve"]
