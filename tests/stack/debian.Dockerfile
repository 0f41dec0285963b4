# Test-only (tests/stack/images.py): the build base the Dockerfile takes in place of
# debian:bookworm-slim (its DEBIAN_IMAGE argument), made from a debootstrapped bookworm,
# because no image registry is reachable from the test machines.
ARG BOOKWORM_IMAGE
FROM ${BOOKWORM_IMAGE}
# `docker import` gives an image no environment at all; Debian's images set this PATH.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The test machines reach the package registries through their own certificate authority:
# pip and apt in the Dockerfile's build must trust it. Users' machines never need this.
COPY host-ca.crt /usr/local/share/voice-agent-test/host-ca.crt
ENV PIP_CERT=/usr/local/share/voice-agent-test/host-ca.crt
RUN echo 'Acquire::https::CAInfo "/usr/local/share/voice-agent-test/host-ca.crt";' \
        > /etc/apt/apt.conf.d/99voice-agent-test-ca
