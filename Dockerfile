# syntax=docker/dockerfile:1
# One image for the API and the workers; docker-compose.yml picks the role with its command.
#   docker build -t gradserve:0.1.0 .                                   # CPU torch (default)
#   docker build -t gradserve:0.1.0-cuda --build-arg TORCH_FLAVOUR=cu128 .   # CUDA torch, for GPU hosts
# For byte-for-byte rebuilds pin the base by digest too: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# cpu, or a CUDA build PyTorch publishes for TORCH_VERSION (cu126, cu128, ...): the suffix of its wheel index.
ARG TORCH_FLAVOUR=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Torch alone first, and from PyTorch's own index: PyPI's Linux wheel bundles CUDA (gigabytes) even
# where there is no GPU, and this layer, the biggest, then survives any change below it.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_FLAVOUR}" "torch==${TORCH_VERSION}"
# Then the locked closure, --no-deps so nothing floats, and pip check so a gap in the lock fails here.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-deps --requirement /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY api /src/api
COPY models /src/models
COPY worker /src/worker
COPY launcher /src/launcher
COPY gradserve /src/gradserve
RUN pip install --no-deps /src && pip check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="gradserve" \
      org.opencontainers.image.description="Training as a service for PyTorch: API and Celery workers"
# Graphviz's `dot` renders the autograd graphs as SVG; pinned to bookworm's build.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends graphviz=2.42.2-7+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid so volumes and host-side permissions stay stable across rebuilds.
RUN groupadd --system --gid 10001 gradserve \
    && useradd --system --uid 10001 --gid gradserve --create-home --home-dir /home/gradserve \
       --shell /usr/sbin/nologin gradserve
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/gradserve
EXPOSE 8000
# Knows from PID 1 whether this container is the API (/readyz) or a worker (its heartbeat in Redis).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "launcher.healthcheck"]
# Secrets (REDIS_URL with its password, GRADSERVE_API_KEYS) come from the environment at run time, never from the image.
CMD ["gradserve", "api", "--host", "0.0.0.0", "--port", "8000"]
