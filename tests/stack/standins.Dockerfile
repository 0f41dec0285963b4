# Test-only (tests/stack/images.py): stand-ins for the Ollama and Speaches images, tagged with
# the references compose.yaml uses. Each runs the project's stand-in server
# (tests/standins/), from the checkout and the test virtual environment's packages that
# tests/stack/compose.stack.yaml mounts read-only, with the image's own python3.
# What compose.yaml relies on is as in the real images: a user `ubuntu` (uid 1000) whose
# home /home/ubuntu (mode 750) holds the volumes, the port, `ollama list` and `curl` for
# the health checks, `find` and `chown` for ollama-init.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE} AS common
RUN useradd --uid 1000 --user-group --create-home --shell /bin/bash ubuntu \
    && chmod 750 /home/ubuntu
# Mounted by tests/stack/compose.stack.yaml: the stand-ins' code and their packages.
ENV STANDIN_SOURCE=/opt/standin/source \
    STANDIN_SITE_PACKAGES=/opt/standin/site-packages \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

FROM common AS ollama
COPY ollama /usr/local/bin/ollama
ENV OLLAMA_HOST=0.0.0.0:11434
EXPOSE 11434
ENTRYPOINT ["ollama"]
CMD ["serve"]

FROM common AS speaches
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY speaches-standin /usr/local/bin/speaches-standin
USER ubuntu
RUN mkdir -p /home/ubuntu/.cache/huggingface/hub
WORKDIR /home/ubuntu
EXPOSE 8000
CMD ["speaches-standin"]
