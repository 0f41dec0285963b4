"""The systemd unit, rendered by the real install script and checked by systemd-analyze.

`systemd-analyze verify` works without systemd running as PID 1. It only warns about
unknown keys (exit 0), so any output at all counts as a failure. The unit needs
docker.service, which a machine without Docker lacks: a stub unit is put on
SYSTEMD_UNIT_PATH (the trailing colon keeps the default search path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT as REPO
from tests.infra.tools import need

pytestmark = pytest.mark.infra

UNIT = "voice-agent.service"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the files the install script uses: it installs the checkout it lives in."""
    root = tmp_path / "voice-agent"
    (root / "scripts").mkdir(parents=True)
    (root / "systemd").mkdir()
    for name in ("install-systemd.sh", "uninstall-systemd.sh", "settings.sh"):
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    shutil.copy2(REPO / "systemd" / UNIT, root / "systemd" / UNIT)
    return root


@pytest.fixture
def fake_docker(tmp_path: Path) -> Path:
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    return docker


def install(
    checkout: Path, docker: Path, unit_dir: Path, *extra: str, cwd: Path | None = None, **env: str
) -> str:
    # COMPOSE_FILE in a developer's shell would be taken as the user's choice.
    environment = {k: v for k, v in os.environ.items() if k != "COMPOSE_FILE"}
    result = subprocess.run(
        [
            str(checkout / "scripts" / "install-systemd.sh"),
            "--no-enable",
            "--unit-dir",
            str(unit_dir),
            "--docker",
            str(docker),
            *extra,
        ],
        capture_output=True,
        text=True,
        env={**environment, **env},
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return (unit_dir / UNIT).read_text()


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    analyze = need("systemd-analyze")
    stubs = tmp_path / "stub-units"
    stubs.mkdir(exist_ok=True)
    shutil.copy(REPO / "tests" / "infra" / "stubs" / "docker.service", stubs / "docker.service")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{stubs}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, env=env, check=False
    )


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_rendered_unit_passes_systemd_analyze_verify_silently(
    gpu: bool, checkout: Path, fake_docker: Path, tmp_path: Path
) -> None:
    unit_dir = tmp_path / "units"
    install(checkout, fake_docker, unit_dir, *(["--gpu"] if gpu else []))
    result = verify(unit_dir / UNIT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == "", (
        f"systemd-analyze verify said:\n{result.stdout}{result.stderr}"
    )


def test_unit_runs_compose_in_the_checkout_after_docker_and_the_network(
    checkout: Path, fake_docker: Path, tmp_path: Path
) -> None:
    text = install(checkout, fake_docker, tmp_path / "units")
    assert "@" not in text.replace("multi-user.target", ""), "a placeholder was left"
    unit = directives(text)
    assert unit["WorkingDirectory"] == [str(checkout)]
    assert unit["ExecStart"] == [f"{fake_docker} compose up --remove-orphans"]
    assert unit["ExecStop"] == [f"{fake_docker} compose down"]
    assert "docker.service" in unit["Requires"][0]
    assert {"docker.service", "network-online.target"} <= set(unit["After"][0].split())
    assert "network-online.target" in unit["Wants"][0]
    assert unit["Restart"] == ["on-failure"]
    assert unit["WantedBy"] == ["multi-user.target"]
    # Image pulls on a first start may take long: no start timeout; a bounded stop.
    assert unit["TimeoutStartSec"] == ["infinity"]
    assert 60 <= int(unit["TimeoutStopSec"][0]) <= 600
    assert "COMPOSE_FILE=compose.yaml" in unit["Environment"]


def test_gpu_mode_adds_the_overlay(checkout: Path, fake_docker: Path, tmp_path: Path) -> None:
    unit = directives(install(checkout, fake_docker, tmp_path / "units", "--gpu"))
    assert "COMPOSE_FILE=compose.yaml:compose.gpu.yaml" in unit["Environment"]


def test_compose_file_chosen_in_dotenv_is_kept(
    checkout: Path, fake_docker: Path, tmp_path: Path
) -> None:
    (checkout / ".env").write_text('COMPOSE_FILE="compose.yaml:compose.gpu.yaml"\n')
    unit = directives(install(checkout, fake_docker, tmp_path / "units"))
    assert "COMPOSE_FILE=compose.yaml:compose.gpu.yaml" in unit["Environment"]


def test_compose_file_is_read_like_every_other_setting(
    checkout: Path, fake_docker: Path, tmp_path: Path
) -> None:
    """Through scripts/settings.sh: the environment first, then .env's last line."""
    (checkout / ".env").write_text(
        "# COMPOSE_FILE=commented.yaml\nCOMPOSE_FILE=old.yaml\n"
        "export COMPOSE_FILE='compose.yaml:compose.gpu.yaml'\n"
    )
    unit = directives(install(checkout, fake_docker, tmp_path / "units"))
    assert "COMPOSE_FILE=compose.yaml:compose.gpu.yaml" in unit["Environment"]
    unit = directives(
        install(checkout, fake_docker, tmp_path / "units", COMPOSE_FILE="compose.yaml")
    )
    assert "COMPOSE_FILE=compose.yaml" in unit["Environment"]
    # The checkout's .env counts, not one where the script is started from.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("COMPOSE_FILE=elsewhere.yaml\n")
    unit = directives(install(checkout, fake_docker, tmp_path / "units", cwd=elsewhere))
    assert "COMPOSE_FILE=compose.yaml:compose.gpu.yaml" in unit["Environment"]


def test_install_refuses_a_checkout_path_systemd_cannot_take(
    tmp_path: Path, fake_docker: Path
) -> None:
    root = tmp_path / "my voice agent"
    (root / "scripts").mkdir(parents=True)
    (root / "systemd").mkdir()
    shutil.copy2(REPO / "scripts" / "install-systemd.sh", root / "scripts")
    shutil.copy2(REPO / "scripts" / "settings.sh", root / "scripts")
    shutil.copy2(REPO / "systemd" / UNIT, root / "systemd")
    result = subprocess.run(
        [str(root / "scripts" / "install-systemd.sh"), "--no-enable", "--unit-dir",
         str(tmp_path / "units"), "--docker", str(fake_docker)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "move the checkout" in result.stderr
    assert not (tmp_path / "units" / UNIT).exists()


def test_uninstall_removes_the_unit_and_is_idempotent(
    checkout: Path, fake_docker: Path, tmp_path: Path
) -> None:
    unit_dir = tmp_path / "units"
    install(checkout, fake_docker, unit_dir)
    script = str(checkout / "scripts" / "uninstall-systemd.sh")
    for expected in ("removed", "nothing to do"):
        result = subprocess.run(
            [script, "--unit-dir", str(unit_dir)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
        assert not (unit_dir / UNIT).exists()
