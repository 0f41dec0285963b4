# Test-only (tests/stack/images.py): the base of the stand-in images (standins.Dockerfile),
# which run the stand-in servers with the image's own python3: the test's Debian base
# (debian.Dockerfile) with Debian's Python.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
