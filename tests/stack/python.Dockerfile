# Test-only (tests/stack/images.py): a Python base like the official python:3.11 image,
# made from a debootstrapped bookworm (python3 and python3-venv already in it), because no
# image registry is reachable from the test machines.
ARG BOOKWORM_IMAGE
FROM ${BOOKWORM_IMAGE}
# `docker import` gives an image no environment at all; the Dockerfile's
# `ENV PATH=/opt/voice-agent/bin:$PATH` needs a PATH to extend, as python images have.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
# The test machines reach the package registries through their own certificate authority:
# pip in the Dockerfile's build must trust it. Users' machines never need this.
COPY host-ca.crt /usr/local/share/voice-agent-test/host-ca.crt
ENV PIP_CERT=/usr/local/share/voice-agent-test/host-ca.crt
RUN ln -s /usr/bin/python3 /usr/local/bin/python
