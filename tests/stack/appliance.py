"""The appliance as a user runs it: a copy of the checkout, its ``.env``, ``make`` targets,
and what Docker says about the containers (state, health, process, restarts).

The copy's ``.env`` selects ``tests/stack/compose.stack.yaml`` over ``compose.yaml`` (the
stand-in images, mounting the copy and the test virtual environment read-only) and the
models the stand-ins serve; everything else is the appliance's default.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.stack.engine import DockerError, Engine
from tests.stack.images import Plan
from tests.standins.process import REPO_ROOT
from tests.standins.speaches import STT_MODEL, TTS_MODEL

# Not part of a clone of the repository, or large and irrelevant to the appliance.
LEFT_OUT = (
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "test-artifacts",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".env",
    "data",
    "result*",
)
SERVICES = ("ollama", "speaches", "agent")
ONE_SHOT = "ollama-init"


def site_packages() -> Path:
    """The test virtual environment's packages, which the stand-in containers import with
    the image's own python3 (bookworm's 3.11): wheels for the same Python minor version."""
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(f"the stand-in images run Python 3.11, the tests run {sys.version}")
    return Path(sysconfig.get_path("purelib")).resolve()


def copy_checkout(destination: Path) -> Path:
    shutil.copytree(REPO_ROOT, destination, ignore=shutil.ignore_patterns(*LEFT_OUT), symlinks=True)
    return destination


def dot_env(copy: Path, plan: Plan) -> str:
    return "\n".join(
        [
            "# Written by tests/test_stack.py: the stand-ins in place of Ollama and Speaches.",
            "COMPOSE_FILE=compose.yaml:tests/stack/compose.stack.yaml",
            f"STACK_OLLAMA_IMAGE={plan.ollama}",
            f"STACK_SPEACHES_IMAGE={plan.speaches}",
            f"STACK_SOURCE={copy}",
            f"STACK_SITE_PACKAGES={site_packages()}",
            # The models the Speaches stand-in serves (Ollama's default model it has).
            f"STT_MODEL={STT_MODEL}",
            f"TTS_MODEL={TTS_MODEL}",
            "TTS_VOICE=joe",
            "",
        ]
    )


@dataclass
class Appliance:
    engine: Engine
    directory: Path
    transcript: Path  # every make command and its output, for when something fails
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Only what Docker needs: nothing of this shell's settings reaches Compose's
        interpolation or the agent, which read the copy's .env alone."""
        keep = ("PATH", "HOME", "LANG", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_BUILDKIT")
        env = {name: self.engine.env[name] for name in keep if name in self.engine.env}
        return {**env, "WAIT_INTERVAL": "1"}

    def make(self, *args: str, phase: str, timeout: float = 900) -> str:
        """``make *args`` in the copy; its output (stdout and stderr). Raises if it fails."""
        start = time.monotonic()
        result = subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.timings[phase] = round(time.monotonic() - start, 1)
        with self.transcript.open("a") as log:
            log.write(f"$ make {' '.join(args)}  ({self.timings[phase]} s)\n{result.stdout}\n")
        print(f"$ make {' '.join(args)}  ({self.timings[phase]} s)\n{result.stdout}")
        if result.returncode != 0:
            raise AssertionError(f"make {' '.join(args)} exited {result.returncode}")
        return result.stdout

    def compose(self, *args: str) -> str:
        result = subprocess.run(
            ["docker", "compose", *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise DockerError(f"docker compose {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def container(self, service: str) -> dict[str, Any]:
        """``docker inspect`` of the service's container."""
        ids = self.compose("ps", "--all", "--quiet", service).split()
        if len(ids) != 1:
            raise DockerError(f"{service}: {len(ids)} containers")
        return self.engine.inspect(ids[0])[0]

    def states(self) -> dict[str, tuple[str, str]]:
        """Each service's (state, health), as ``docker compose ps`` reports them."""
        lines = self.compose("ps", "--all", "--format", "{{.Service}} {{.State}} {{.Health}}")
        return {
            service: (state, health[0] if health else "")
            for service, state, *health in (line.split() for line in lines.splitlines() if line)
        }

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--timestamps")
        except DockerError as error:
            return str(error)


def process_status(pid: int) -> dict[str, str]:
    """A process's /proc status fields: Uid and Gid (real, effective, saved, filesystem),
    CapEff (its effective capabilities), NoNewPrivs, ..."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, value in (line.split(":", 1) for line in lines)}


def listening(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` in this namespace."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # /proc shows each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(packed)))
    return found


def can_connect_from(namespace_pid: int, address: str, port: int) -> bool:
    """Whether a TCP connection to ``address:port`` from the network namespace of
    ``namespace_pid`` is accepted."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=5).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    result = subprocess.run(
        ["nsenter", "-t", str(namespace_pid), "-n", sys.executable, "-c", probe],
        capture_output=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    return result.returncode == 0
