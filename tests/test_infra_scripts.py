"""The helper scripts and Makefile targets of the appliance.

Scripts are linted with shellcheck and run for real against a fake `docker` that
answers from a script of states, so their decisions (wait, fail, explain) are tested
without a Docker engine. Makefile targets are dry-run with `make -n`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import VARIABLES, env_names, load_settings
from agent.config_docs import COMPOSE_ONLY
from tests.helpers import REPO_ROOT as REPO
from tests.infra.tools import need

pytestmark = pytest.mark.infra

SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
LIBRARIES = ["settings.sh"]  # sourced by the others, never run
MINE = ["doctor.sh", "wait-healthy.sh", "install-systemd.sh", "uninstall-systemd.sh"]


# --- lint -------------------------------------------------------------------------------


def test_there_are_scripts() -> None:
    names = {script.name for script in SCRIPTS}
    assert set(MINE) <= names


def test_every_script_passes_shellcheck() -> None:
    shellcheck = need("shellcheck")
    result = subprocess.run(
        [shellcheck, "--severity=style", "--format=gcc", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "script", [s for s in SCRIPTS if s.name not in LIBRARIES], ids=lambda p: p.name
)
def test_every_script_is_strict_executable_bash(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_dockerfile_passes_hadolint_and_installs_only_the_hashed_lock() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r /tmp/requirements.lock" in text
    assert re.search(r"^USER 10001", text, re.M)
    assert ":latest" not in text
    hadolint = need("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_locks_python_on_a_root_of_its_own() -> None:
    """requirements.lock is compiled for one Python version (`make lock`); the Dockerfile
    builds the environment with Debian's interpreter of that version and unpacks the same
    into the image's root, which starts from nothing (the stack test looks inside)."""
    version = re.search(r"--python-version (\d+\.\d+)", (REPO / "Makefile").read_text())
    assert version
    text = (REPO / "Dockerfile").read_text()
    assert f"RUN python{version[1]} -m venv /opt/voice-agent" in text
    assert f"python{version[1]}-minimal libpython{version[1]}-minimal" in text
    assert re.findall(r"^FROM (\S+)", text, re.M)[-1] == "scratch"


def test_both_images_leave_out_the_same_unused_files(tmp_path: Path) -> None:
    """scripts/prune-venv.sh, run by the Dockerfile and by flake.nix on their environments,
    takes out what the agent never loads and nothing it does."""
    assert "&& /src/scripts/prune-venv.sh /opt/voice-agent\n" in (REPO / "Dockerfile").read_text()
    assert "!scripts/prune-venv.sh" in (REPO / ".dockerignore").read_text().splitlines()
    assert 'bash ${./scripts/prune-venv.sh} "$out"' in (REPO / "flake.nix").read_text()
    site = "lib/python3.11/site-packages"
    unused = [
        "bin/pip3",
        "bin/pip",
        f"{site}/pip/__init__.py",
        f"{site}/setuptools/__init__.py",
        f"{site}/setuptools-80.9.0.dist-info/RECORD",
        f"{site}/distutils-precedence.pth",
        f"{site}/onnxruntime/capi/libonnxruntime.so.1.23.2",
        f"{site}/onnxruntime/transformers/__init__.py",
        f"{site}/onnxruntime/quantization/__init__.py",
        f"{site}/onnxruntime/tools/__init__.py",
        f"{site}/numpy/_core/tests/test_api.py",
        f"{site}/av/tests/__init__.py",
    ]
    used = [
        "bin/python3.11",
        "bin/voice-agent",
        f"{site}/pipecat/__init__.py",
        f"{site}/onnxruntime/capi/onnxruntime_pybind11_state.so",
        f"{site}/onnxruntime/capi/libonnxruntime_providers_shared.so",
        f"{site}/numpy/testing/__init__.py",
        f"{site}/agent/turns.py",
    ]
    for name in unused + used:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    subprocess.run([REPO / "scripts/prune-venv.sh", tmp_path], check=True)
    assert [name for name in unused if (tmp_path / name).exists()] == []
    assert [name for name in used if not (tmp_path / name).exists()] == []


def test_dockerfile_restates_no_agent_default_and_exposes_the_default_port() -> None:
    text = (REPO / "Dockerfile").read_text()
    defaults = {variable.env: variable.default for variable in VARIABLES}
    instructions = re.findall(r"^ENV (.*?)(?<!\\)\n", text, re.M | re.S)
    assigned = [pair for block in instructions for pair in re.findall(r"([A-Z_]+)=(\S+)", block)]
    assert ("TLS_DIR", "/data/tls") in assigned
    for name, value in assigned:
        if name in defaults:  # only what differs from the agent's own default
            assert value != defaults[name], f"{name}={value} restates the agent's default"
    assert re.findall(r"^EXPOSE (\S+)$", text, re.M) == [defaults["AGENT_PORT"]]


# --- a fake docker ------------------------------------------------------------------------

FAKE_DOCKER = r"""#!/usr/bin/env bash
# Test double for the docker CLI. Answers from files in $FAKE_DIR:
#   ps.N          output of the Nth `compose ps --format ...` (the last one repeats)
#   running       output of `compose ps --status running --quiet`
#   compose-version, server-version, root-dir, runtimes, inspect
# Every call is appended to $FAKE_DIR/calls.
set -u
dir="$FAKE_DIR"
echo "$*" >> "$dir/calls"
answer() { if [ -f "$dir/$1" ]; then cat "$dir/$1"; else return "${2:-0}"; fi; }
case "$1" in
  version) answer server-version 1 ;;
  info)
    case "$*" in
      *DockerRootDir*) answer root-dir 1 ;;
      *Runtimes*) answer runtimes ;;
      *) answer server-version 1 ;;
    esac ;;
  inspect) answer inspect ;;
  compose)
    shift
    while [ "$#" -gt 0 ] && [ "$1" = "-f" ]; do shift 2; done
    case "$1" in
      version) answer compose-version 1 ;;
      ps)
        case "$*" in
          *--status*) answer running ;;
          *--quiet*) echo 0123456789ab ;;
          *)
            n=$(( $(cat "$dir/ps-count" 2>/dev/null || echo 0) + 1 ))
            echo "$n" > "$dir/ps-count"
            last=$(find "$dir" -maxdepth 1 -name 'ps.*' | sed 's/.*ps\.//' | sort -n | tail -n 1)
            if [ -z "$last" ]; then exit 1; fi
            [ "$n" -le "$last" ] || n="$last"
            cat "$dir/ps.$n" ;;
        esac ;;
      *) exit 0 ;;
    esac ;;
  *) exit 0 ;;
esac
"""


# Settings a developer's shell may hold: the scripts would read them before any file.
SCRUBBED = {*env_names(), *(c.env for c in COMPOSE_ONLY), "COMPOSE", "MIN_FREE_GB"}


class Fake:
    def __init__(self, root: Path) -> None:
        self.dir = root / "fake"
        self.bin = root / "bin"
        self.dir.mkdir()
        self.bin.mkdir()
        docker = self.bin / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(0o755)
        self.work = root / "work"
        self.work.mkdir()
        self.scripts = REPO / "scripts"  # a test may point this at a copied checkout

    def set(self, name: str, text: str) -> None:
        (self.dir / name).write_text(text)

    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base_path = os.environ.get("PATH", "/usr/bin:/bin")
        environment = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        environment.update(
            {
                "FAKE_DIR": str(self.dir),
                "PATH": f"{self.bin}:{base_path}",
                "COMPOSE": f"{self.bin / 'docker'} compose",
                "WAIT_INTERVAL": "0",
                **env,
            }
        )
        return subprocess.run(
            [str(self.scripts / script), *args],
            cwd=self.work,
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            check=False,
        )


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


HEALTHY = "ollama running healthy\nspeaches running healthy\nagent running healthy\n"


# --- wait-healthy.sh --------------------------------------------------------------------


def test_wait_healthy_prints_the_urls_when_all_is_healthy(fake: Fake) -> None:
    fake.set("ps.1", HEALTHY)
    (fake.work / ".env").write_text("AGENT_PORT=8443\nAGENT_HTTP_PORT=8080\n")
    result = fake.run("wait-healthy.sh")
    assert result.returncode == 0, result.stderr
    assert "All services are healthy." in result.stdout
    assert "https://localhost:8443/" in result.stdout
    assert "http://localhost:8080/" in result.stdout
    assert re.search(r"https://\S+:8443/", result.stdout)


@pytest.mark.parametrize(
    ("dotenv", "phone", "here"),
    [
        ("TLS=off\n", r"http://\S+:7860/", ["http://localhost:7860/"]),
        ("TLS=OFF\nAGENT_HOST=0.0.0.0\n", r"http://\S+:7860/", ["http://localhost:7860/"]),
        ("AGENT_HOST=127.0.0.1\n", None, ["http://localhost:7860/"]),
        (
            "AGENT_HOST=127.0.0.1\nTLS=on\n",
            None,
            ["https://localhost:7860/", "http://localhost:7861/"],
        ),
        ("AGENT_HOST=192.168.1.20\nTLS=off\n", r"http://192\.168\.1\.20:7860/", []),
        ("AGENT_HOST=192.168.1.20\n", r"https://192\.168\.1\.20:7860/", ["http://localhost:7861/"]),
    ],
    ids=["tls-off", "tls-off-caps", "loopback", "loopback-tls-on", "lan-ip-off", "lan-ip"],
)
def test_wait_healthy_prints_the_scheme_and_addresses_the_agent_serves(
    fake: Fake, dotenv: str, phone: str | None, here: list[str]
) -> None:
    fake.set("ps.1", HEALTHY)
    (fake.work / ".env").write_text(dotenv)
    result = fake.run("wait-healthy.sh")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "All services are healthy."
    phone_lines = [line for line in lines if "From a phone or laptop:" in line]
    if phone is None:
        assert phone_lines == []
    else:
        [line] = phone_lines
        assert re.search(rf"From a phone or laptop: {phone}  ", line), line
        if line.split()[5].startswith("http:"):
            assert "no microphone" in line and "TLS=auto" in line
        else:
            assert "self-signed certificate" in line
    local = [line for line in lines if "On this machine:" in line]
    assert [url for line in local for url in re.findall(r"https?://\S+", line)] == here
    if "TLS=off" in dotenv or "TLS=OFF" in dotenv:
        assert "https://" not in result.stdout


def test_wait_healthy_waits_for_a_starting_agent(fake: Fake) -> None:
    starting = "ollama running healthy\nspeaches running healthy\nagent running starting\n"
    fake.set("ps.1", starting)
    fake.set("ps.2", starting)
    fake.set("ps.3", HEALTHY)
    result = fake.run("wait-healthy.sh", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert "waiting" in result.stdout and "agent(starting)" in result.stdout
    assert "https://localhost:7860/" in result.stdout
    assert "http://localhost:7861/" in result.stdout
    assert int((fake.dir / "ps-count").read_text()) == 3


def test_wait_healthy_fails_fast_when_a_service_stops(fake: Fake) -> None:
    fake.set("ps.1", "ollama running healthy\nspeaches exited \nagent created \n")
    result = fake.run("wait-healthy.sh", "--timeout", "30")
    assert result.returncode == 1
    assert "speaches has stopped" in result.stderr
    assert "make logs" in result.stderr


@pytest.mark.parametrize(
    ("inspect", "done"), [("true 0\n", True), ("true 1\n", False), (" 0\n", False)]
)
def test_wait_healthy_counts_only_a_one_shot_that_exited_0_as_done(
    fake: Fake, inspect: str, done: bool
) -> None:
    """ollama-init (labelled voice-agent.one-shot) exits once it has done its work."""
    fake.set("ps.1", "ollama-init exited \n" + HEALTHY)
    fake.set("inspect", inspect)
    result = fake.run("wait-healthy.sh", "--timeout", "5")
    assert (result.returncode == 0) is done, result.stderr
    if not done:
        assert "ollama-init has stopped" in result.stderr


def test_wait_healthy_gives_up_with_the_last_health_check_and_a_hint(fake: Fake) -> None:
    fake.set("ps.1", "ollama running healthy\nspeaches running healthy\nagent running unhealthy\n")
    fake.set("inspect", "speaches: model Systran/faster-distil-whisper-small.en is not installed\n")
    result = fake.run("wait-healthy.sh", "--timeout", "0")
    assert result.returncode == 1
    assert "agent(unhealthy)" in result.stderr
    assert "is not installed" in result.stderr
    assert "make models" in result.stderr


def test_wait_healthy_explains_an_empty_stack(fake: Fake) -> None:
    fake.set("ps.1", "")
    result = fake.run("wait-healthy.sh")
    assert result.returncode == 1
    assert "make up" in result.stderr


# --- doctor.sh --------------------------------------------------------------------------


@pytest.fixture
def healthy_host(fake: Fake, tmp_path: Path) -> Fake:
    fake.set("server-version", "28.2.2\n")
    fake.set("compose-version", "2.40.3\n")
    fake.set("root-dir", f"{tmp_path}\n")
    (fake.work / ".env").write_text("")
    return fake


@pytest.fixture
def free_ports() -> dict[str, str]:
    ports = {}
    for key in ("AGENT_PORT", "OLLAMA_PORT", "SPEACHES_PORT"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports[key] = str(probe.getsockname()[1])
    return ports


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("FAIL")]


def test_doctor_passes_on_a_ready_host(healthy_host: Fake, free_ports: dict[str, str]) -> None:
    result = healthy_host.run("doctor.sh", MIN_FREE_GB="0", **free_ports)
    assert result.returncode == 0, result.stdout
    assert problems(result.stdout) == []
    assert "compose: 2.40.3" in result.stdout
    assert "doctor: all checks passed" in result.stdout


def test_doctor_explains_an_old_compose_in_one_line(
    healthy_host: Fake, free_ports: dict[str, str]
) -> None:
    healthy_host.set("compose-version", "v2.20.3\n")
    result = healthy_host.run("doctor.sh", MIN_FREE_GB="0", **free_ports)
    assert result.returncode == 1
    [line] = problems(result.stdout)
    assert "2.20.3 is too old" in line and "2.24.6" in line


def test_doctor_explains_a_missing_daemon_and_compose(
    fake: Fake, free_ports: dict[str, str]
) -> None:
    result = fake.run("doctor.sh", MIN_FREE_GB="0", **free_ports)
    assert result.returncode == 1
    lines = problems(result.stdout)
    assert any("cannot reach the Docker daemon" in line for line in lines)
    assert any("Compose v2 plugin" in line for line in lines)


def test_doctor_reports_a_busy_port_unless_the_stack_holds_it(
    healthy_host: Fake, free_ports: dict[str, str], listener: int
) -> None:
    ports = {**free_ports, "OLLAMA_PORT": str(listener)}
    result = healthy_host.run("doctor.sh", MIN_FREE_GB="0", **ports)
    assert result.returncode == 1
    [line] = problems(result.stdout)
    assert f"port {listener} (ollama)" in line and "OLLAMA_PORT" in line

    healthy_host.set("running", "0123456789ab\n")
    result = healthy_host.run("doctor.sh", MIN_FREE_GB="0", **ports)
    assert result.returncode == 0, result.stdout
    assert "the stack is running" in result.stdout


def test_doctor_reports_too_little_disk(healthy_host: Fake, free_ports: dict[str, str]) -> None:
    result = healthy_host.run("doctor.sh", MIN_FREE_GB="999999", **free_ports)
    assert result.returncode == 1
    [line] = problems(result.stdout)
    assert line.startswith("FAIL  disk:") and "999999 GB" in line


def test_doctor_gpu_mode_explains_missing_driver_and_toolkit(
    healthy_host: Fake, free_ports: dict[str, str], tmp_path: Path
) -> None:
    # A PATH without any NVIDIA tools, whatever the machine has.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "sed", "awk", "sort", "head", "tail", "df", "grep", "cat", "find",
                 "env", "printf"):  # fmt: skip
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    result = healthy_host.run(
        "doctor.sh", "--gpu", MIN_FREE_GB="0", PATH=f"{healthy_host.bin}:{tools}", **free_ports
    )
    assert result.returncode == 1
    lines = problems(result.stdout)
    assert any("NVIDIA driver" in line for line in lines)
    assert any("nvidia-container-toolkit" in line for line in lines)

    nvidia_smi = healthy_host.bin / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-x)'\n")
    nvidia_smi.chmod(0o755)
    healthy_host.set("runtimes", '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}\n')
    result = healthy_host.run(
        "doctor.sh", "--gpu", MIN_FREE_GB="0", PATH=f"{healthy_host.bin}:{tools}", **free_ports
    )
    assert result.returncode == 0, result.stdout
    assert "RTX 3060" in result.stdout


# --- settings.sh ----------------------------------------------------------------------


def settings_call(work: Path, command: str, scripts: Path | None = None, **env: str):
    library = (scripts or REPO / "scripts") / "settings.sh"
    environment = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "{library}"; {command}'],
        cwd=work,
        capture_output=True,
        text=True,
        env={**environment, **env},
        timeout=60,
        check=False,
    )


def test_a_setting_comes_from_the_environment_then_dotenv_then_env_example(
    tmp_path: Path,
) -> None:
    read = "setting AGENT_PORT"
    assert settings_call(tmp_path, read).stdout == "7860\n"  # .env.example's default
    (tmp_path / ".env").write_text("# note\nAGENT_PORT=1\nexport AGENT_PORT='8443'\nTLS=\n")
    assert settings_call(tmp_path, read).stdout == "8443\n"  # last line wins, unquoted
    assert settings_call(tmp_path, read, AGENT_PORT="9000").stdout == "9000\n"
    assert settings_call(tmp_path, "setting TLS").stdout == "auto\n"  # empty = default
    # No value anywhere: the caller's default, else a failure that says which key.
    assert settings_call(tmp_path, "setting COMPOSE_FILE compose.yaml").stdout == ("compose.yaml\n")
    missing = settings_call(tmp_path, "port=$(setting NO_SUCH_KEY); echo reached")
    assert missing.returncode == 1
    assert "reached" not in missing.stdout
    assert "no value for NO_SUCH_KEY" in missing.stderr


def test_the_scripts_decide_https_exactly_as_the_agent_does(tmp_path: Path) -> None:
    tls_values = ["auto", "on", "off", "AUTO", ""]
    hosts = ["0.0.0.0", "::", "127.0.0.1", "127.8.9.10", "localhost", "::1", "192.168.1.20",
             "homeserver", "fe80::1"]  # fmt: skip
    cases = [(tls, host) for tls in tls_values for host in hosts]
    loop = "; ".join(f"TLS='{tls}' AGENT_HOST='{host}' agent_scheme" for tls, host in cases)
    result = settings_call(tmp_path, loop)
    assert result.returncode == 0, result.stderr
    expected = [
        "https" if load_settings({"TLS": tls, "AGENT_HOST": host}).https else "http"
        for tls, host in cases
    ]
    assert result.stdout.split() == expected


def test_doctor_takes_its_default_ports_from_env_example(
    healthy_host: Fake, tmp_path: Path, listener: int
) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    example = (REPO / ".env.example").read_text()
    assert "\nSPEACHES_PORT=8000\n" in example
    (checkout / ".env.example").write_text(
        example.replace("\nSPEACHES_PORT=8000\n", f"\nSPEACHES_PORT={listener}\n")
    )
    healthy_host.scripts = checkout / "scripts"
    free = {}
    for key in ("AGENT_PORT", "AGENT_HTTP_PORT", "OLLAMA_PORT"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free[key] = str(probe.getsockname()[1])
    result = healthy_host.run("doctor.sh", MIN_FREE_GB="0", **free)
    assert result.returncode == 1, result.stdout
    [line] = problems(result.stdout)
    assert f"port {listener} (speaches)" in line and "SPEACHES_PORT" in line


def test_the_minimum_compose_version_is_the_same_everywhere() -> None:
    [minimum] = re.findall(
        r'^min_compose="([0-9.]+)"$', (REPO / "scripts/doctor.sh").read_text(), re.M
    )
    readme = (REPO / "README.md").read_text()
    compose = (REPO / "compose.yaml").read_text()
    assert f"Compose plugin {minimum} or newer" in readme
    assert f"needs Docker Compose {minimum} or newer" in readme  # the doctor example line
    assert f"Needs Docker Compose {minimum} or newer" in compose
    claims = re.findall(r"Compose(?: plugin)? ([0-9]+\.[0-9]+\.[0-9]+) or newer", readme + compose)
    assert set(claims) == {minimum}


# --- Makefile -----------------------------------------------------------------------------

# The Makefile is the lead's; INFRA_MAKEFILE points these checks at another file
# (e.g. the proposed recipes) before they are merged.
MAKEFILE = Path(os.environ.get("INFRA_MAKEFILE", REPO / "Makefile"))

DRY_RUNS = {
    "up": ["docker compose up --detach", "scripts/wait-healthy.sh"],
    "up-gpu": ["-f compose.yaml -f compose.gpu.yaml up --detach", "scripts/wait-healthy.sh"],
    "down": ["docker compose down"],
    "logs": ["docker compose logs --follow"],
    "status": ["docker compose ps"],
    "models": ["up --detach --wait ollama speaches", "run --rm --no-deps agent pull-models"],
    "image": ["build .#image", "docker load"],
    "install": ["scripts/install-systemd.sh"],
    "uninstall": ["scripts/uninstall-systemd.sh"],
    "doctor": ["scripts/doctor.sh"],
}


def make(*args: str) -> subprocess.CompletedProcess[str]:
    tool = need("make")
    if not MAKEFILE.exists():
        pytest.fail(f"{MAKEFILE} is missing")
    return subprocess.run(
        [tool, "--no-print-directory", "-f", str(MAKEFILE), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("target", DRY_RUNS)
def test_make_dry_run(target: str) -> None:
    result = make("-n", target)
    assert result.returncode == 0, result.stderr
    for expected in DRY_RUNS[target]:
        assert expected in result.stdout, f"make -n {target}:\n{result.stdout}"


@pytest.mark.parametrize("target", ["up", "models", "logs", "doctor", "install"])
def test_make_gpu_variable_selects_the_overlay(target: str) -> None:
    result = make("-n", target, "GPU=1")
    assert result.returncode == 0, result.stderr
    if target == "install":
        assert "install-systemd.sh --gpu" in result.stdout
    else:
        assert "-f compose.yaml -f compose.gpu.yaml" in result.stdout
    plain = make("-n", target)
    assert "compose.gpu.yaml" not in plain.stdout


def test_make_help_lists_the_appliance_targets() -> None:
    result = make("help")
    assert result.returncode == 0, result.stderr
    for target in DRY_RUNS:
        assert re.search(rf"^\s*(make\s+)?{re.escape(target)}\s", result.stdout, re.M), target
