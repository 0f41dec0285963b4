# The agent image for machines without Nix (`docker compose build agent`, or
# automatically by `make up` when no agent image exists yet).
# `make image` builds the reference image with Nix (flake.nix); both install
# exactly the wheels pinned by hash in requirements.lock, with --no-deps, into
# a virtual environment at /opt/voice-agent, and run the agent as uid 10001.
# Neither image has a shell or a package manager. This one's root file system is made
# of Debian bookworm packages, unpacked: the interpreter is Debian's python3.11 (3.11.2
# with Debian's security fixes; 3.11 is the version requirements.lock is compiled for),
# and every rebuild takes Debian's current versions, so their security fixes too.
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Here only: Python to build the virtual environment, the CA certificates (their bundle
# goes into the image), strip(1) and file(1) for the shared libraries below. Then the
# packages the image's root is unpacked from, in the same step so that they are the
# versions installed here: the interpreter that builds the environment is the one that
# runs it. Unpinned: Debian's current bookworm versions, with their security fixes.
# The packages are those of Google's distroless Python image (no longer updated) less
# what nothing in this image loads (checked by loading every module of the agent and
# every shared library of its packages, and by the stack test's conversation): the time
# zones (the agent logs in UTC and reads no zone), libgomp1 (the wheels bring their own),
# and the libraries of the standard library's modules for terminals (readline, curses),
# databases (sqlite3, dbm), NIS and crypt(3), which only command-line tools import.
WORKDIR /debs
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates binutils file \
    && apt-get download \
        # The directory tree and /etc/os-release; /etc/services and /etc/protocols for
        # name lookups; /etc/mime.types, the types of the files the agent serves.
        base-files netbase media-types \
        # The C and C++ runtimes: the interpreter and every wheel's libraries link to
        # them (gcc-12-base holds their copyright file).
        libc6 libgcc-s1 libstdc++6 gcc-12-base \
        # The interpreter and its standard library, with the libraries the modules the
        # agent imports load: ssl and hashlib, zlib, pyexpat, ctypes, bz2, lzma, uuid.
        python3.11-minimal libpython3.11-minimal libpython3.11-stdlib \
        libssl3 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libuuid1 \
    && rm -rf /var/lib/apt/lists/*
# The image's root. The packages are unpacked with dpkg-deb, which runs none of their
# maintainer scripts, so what those would do is done here: the CA bundle, the C.UTF-8
# locale, the users, and the standard library's byte-code (at run time the root is
# read-only and the agent writes no byte-code, so without it every process, each worker
# and each health check, would compile what it imports: 0.3 s of CPU more per health
# check). /bin, /lib, /lib64 and /sbin link into /usr, as in bookworm. Each package's
# control fields go where vulnerability scanners look for them (status.d, as distroless).
WORKDIR /rootfs
RUN mkdir -p usr/bin usr/lib/locale usr/lib64 usr/sbin var/lib/dpkg/status.d etc/ssl/certs \
    && for dir in bin lib lib64 sbin; do ln -s "usr/$dir" "$dir"; done \
    && for deb in /debs/*.deb; do \
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink \
        && dpkg-deb --field "$deb" > "var/lib/dpkg/status.d/$(dpkg-deb --field "$deb" Package)"; \
    done \
    && find usr/share/doc -type f ! -name copyright -delete \
    && rm -rf usr/share/man \
    && cp /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/ \
    && cp -a /usr/lib/locale/C.utf8 usr/lib/locale/ \
    && printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
        'agent:x:10001:10001:voice agent:/data:/usr/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' > etc/passwd \
    && printf '%s\n' 'root:x:0:' 'agent:x:10001:' 'nogroup:x:65534:' > etc/group \
    && printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' > etc/nsswitch.conf \
    && install -d -o 10001 -g 10001 data \
    && chroot . /usr/bin/python3.11 -m compileall -q /usr/lib/python3.11
WORKDIR /
RUN python3.11 -m venv /opt/voice-agent
COPY requirements.lock /tmp/requirements.lock
# Every file is checked against its hash in the lock; nothing is resolved.
RUN /opt/voice-agent/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock
# The agent itself (its dependencies are already installed above).
# Then what the agent never loads leaves the environment (about 80 MB; the script says
# what; flake.nix's image runs it too).
COPY . /src
RUN /opt/voice-agent/bin/pip install --no-deps /src \
    && /src/scripts/prune-venv.sh /opt/voice-agent
WORKDIR /opt/voice-agent
# Many wheels ship their shared libraries with symbol tables and debug sections: strip
# those that file(1) reports "not stripped" (46 MB), and only those. --strip-unneeded
# keeps the dynamic symbols that loading and linking use. Not the libraries auditwheel
# copied into a wheel's *.libs folder: patchelf renamed them, and strip makes numpy's
# OpenBLAS unloadable ("ELF load command address/offset not page-aligned"). The stack test
# holds a spoken conversation on the stripped libraries.
RUN find lib -type f -name '*.so*' ! -path '*.libs/*' -exec sh -c 'for so; do \
        case "$(file -b "$so")" in ELF*"not stripped"*) strip --strip-unneeded "$so" ;; esac; \
    done' sh {} +

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="voice-agent" \
      org.opencontainers.image.description="Self-hosted voice assistant: WebRTC in the browser, Pipecat, Ollama and Speaches" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /rootfs /
COPY --from=build /opt/voice-agent /opt/voice-agent
# Only what differs from the agent's own defaults (agent/config.py): the certificate
# lives in the /data volume. Python's ssl finds the CA bundle only through SSL_CERT_FILE
# (OpenSSL's own default paths come with Debian's openssl package, which is left out).
ENV PATH=/opt/voice-agent/bin:/usr/bin \
    LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
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
