# The agent image for machines without Nix (`docker compose build agent`, or
# automatically by `make up` when no agent image exists yet).
# `make image` builds the reference image with Nix (flake.nix); both install
# exactly the wheels pinned by hash in requirements.lock, with --no-deps, into
# a virtual environment at /opt/voice-agent, and run the agent as uid 10001.
# Difference: this image keeps the Debian base (it has a shell); the Nix image
# has none.
#
# Python 3.11 to match the interpreter requirements.lock is compiled for; 3.11.17 is the
# newest 3.11 patch release with a bookworm tag seen in public Dockerfiles (2026-12).
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/voice-agent
COPY requirements.lock /tmp/requirements.lock
# Every file is checked against its hash in the lock; nothing is resolved.
RUN /opt/voice-agent/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock
# The agent itself (its dependencies are already installed above).
COPY . /src
RUN /opt/voice-agent/bin/pip install --no-deps /src
# What the agent never loads stays out of the image (about 80 MB): pip and setuptools
# (nothing is installed at run time), ONNX Runtime's C library for other languages (its
# Python binding carries its own copy) and its model tools, and the packages' own tests.
# The stack test (tests/test_stack.py) holds a spoken conversation on this image.
WORKDIR /opt/voice-agent
RUN rm -rf bin/pip* lib/python3*/site-packages/pip lib/python3*/site-packages/pip-* \
       lib/python3*/site-packages/setuptools lib/python3*/site-packages/setuptools-* \
       lib/python3*/site-packages/_distutils_hack lib/python3*/site-packages/distutils-precedence.pth \
       lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* \
       lib/python3*/site-packages/onnxruntime/transformers \
       lib/python3*/site-packages/onnxruntime/quantization \
       lib/python3*/site-packages/onnxruntime/tools \
    && find lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -r {} +

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="voice-agent" \
      org.opencontainers.image.description="Self-hosted voice assistant: WebRTC in the browser, Pipecat, Ollama and Speaches" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 agent \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin agent \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /opt/voice-agent /opt/voice-agent
# Only what differs from the agent's own defaults (agent/config.py): the certificate
# lives in the /data volume.
ENV PATH=/opt/voice-agent/bin:$PATH \
    HOME=/data \
    TLS_DIR=/data/tls \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /data
# AGENT_PORT's default. EXPOSE takes no value from a file, so a test keeps this in step
# with agent/config.py; it only documents the port (compose.yaml uses host networking).
EXPOSE 7860
ENTRYPOINT ["voice-agent"]
CMD ["serve"]
