"""The Compose stack, checked with a real Compose v2 binary (no Docker engine needed).

`docker compose config` loads compose.yaml with its `include:` and, for GPU mode, the
compose.gpu.yaml overlay, validates them against the Compose schema, interpolates .env,
and prints the merged model; the tests read that model and assert what the appliance
depends on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT as REPO
from tests.infra.tools import compose_command

pytestmark = pytest.mark.infra

FILES = ["compose.yaml", "compose.gpu.yaml", "speaches/compose.yaml", "Dockerfile"]
BACKENDS = ["ollama", "speaches"]
SERVICES = {"agent", *BACKENDS}
# Variables the Compose files interpolate; removed from the test's environment so a
# developer's shell cannot change what is checked.
INTERPOLATED = [
    "AGENT_IMAGE",
    "OLLAMA_PORT",
    "SPEACHES_PORT",
    "OLLAMA_BASE_URL",
    "SPEACHES_BASE_URL",
    "OLLAMA_KEEP_ALIVE",
    "OLLAMA_CONTEXT_LENGTH",
    "SPEACHES_LOG_LEVEL",
    "SPEACHES_MODEL_TTL",
    "STT_MODEL",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_PROFILES",
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Compose files, copied: a developer's .env stays out, the repo stays untouched."""
    for name in FILES:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, target)
    return tmp_path


def run_config(project: Path, *files: str, env: dict[str, str] | None = None) -> dict:
    command = compose_command()
    args = [*command, "--project-directory", str(project)]
    for name in files:
        args += ["-f", str(project / name)]
    environment = {k: v for k, v in os.environ.items() if k not in INTERPOLATED}
    environment.update(env or {})
    result = subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, f"compose config failed:\n{result.stderr}"
    assert "warn" not in result.stderr.lower(), f"compose config warned:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture
def base(project: Path) -> dict:
    return run_config(project, "compose.yaml")


@pytest.fixture
def gpu(project: Path) -> dict:
    return run_config(project, "compose.yaml", "compose.gpu.yaml")


@pytest.fixture(params=["base", "gpu"])
def merged(request: pytest.FixtureRequest, project: Path) -> dict:
    files = ["compose.yaml"] + (["compose.gpu.yaml"] if request.param == "gpu" else [])
    return run_config(project, *files)


def test_both_setups_validate_and_define_the_three_services(base: dict, gpu: dict) -> None:
    assert set(base["services"]) == SERVICES
    assert set(gpu["services"]) == SERVICES
    assert base["name"] == gpu["name"] == "voice-agent"


def test_agent_starts_only_after_both_backends_are_healthy(merged: dict) -> None:
    depends = merged["services"]["agent"]["depends_on"]
    assert set(depends) == set(BACKENDS)
    for backend in BACKENDS:
        assert depends[backend]["condition"] == "service_healthy"


def test_every_service_is_health_checked_and_restarts(merged: dict) -> None:
    services = merged["services"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert not service["healthcheck"].get("disable"), name
    assert services["ollama"]["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    speaches_check = services["speaches"]["healthcheck"]["test"]
    assert speaches_check[:2] == ["CMD", "curl"]
    assert speaches_check[-1].endswith(":8000/health")
    assert services["agent"]["healthcheck"]["test"] == ["CMD", "voice-agent", "healthcheck"]


def test_data_lives_in_named_volumes_at_the_right_paths(merged: dict) -> None:
    expected = {
        "ollama": "/root/.ollama",
        "speaches": "/home/ubuntu/.cache/huggingface/hub",
        "agent": "/data",
    }
    for name, target in expected.items():
        mounts = merged["services"][name]["volumes"]
        assert [m["target"] for m in mounts] == [target], name
        mount = mounts[0]
        assert mount["type"] == "volume", f"{name}: {target} must be a named volume"
        assert mount["source"] in merged["volumes"], name
    for service in merged["services"].values():
        assert all(m["type"] == "volume" for m in service.get("volumes", [])), "no bind mounts"


def test_backends_are_published_on_loopback_only(merged: dict) -> None:
    for name in BACKENDS:
        ports = merged["services"][name]["ports"]
        assert ports, f"{name} must be reachable from the host-networked agent"
        for port in ports:
            assert port["host_ip"] == "127.0.0.1", f"{name} port {port} is reachable from the LAN"
    assert merged["services"]["ollama"]["ports"][0]["target"] == 11434
    assert merged["services"]["speaches"]["ports"][0]["target"] == 8000


def test_agent_uses_host_networking_and_reaches_backends_on_loopback(merged: dict) -> None:
    agent = merged["services"]["agent"]
    assert agent["network_mode"] == "host"
    assert "ports" not in agent
    assert agent["environment"]["OLLAMA_BASE_URL"] == "http://127.0.0.1:11434"
    assert agent["environment"]["SPEACHES_BASE_URL"] == "http://127.0.0.1:8000"
    assert agent["environment"]["TLS_DIR"].startswith("/data/")


def test_gpu_reservations_only_in_the_overlay(base: dict, gpu: dict) -> None:
    for service in base["services"].values():
        assert not service.get("deploy", {}).get("resources", {}).get("reservations")
    for name in BACKENDS:
        devices = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}], name
    assert "deploy" not in gpu["services"]["agent"]


IMAGE = re.compile(
    r"^(?P<repo>[a-z0-9./_-]+):(?P<tag>[A-Za-z0-9_.-]+)(@sha256:(?P<digest>[0-9a-f]{64}))?$"
)


@pytest.mark.parametrize("setup", ["base", "gpu"])
def test_every_image_has_an_explicit_version(setup: str, project: Path) -> None:
    files = ["compose.yaml"] + (["compose.gpu.yaml"] if setup == "gpu" else [])
    config = run_config(project, *files)
    for name, service in config["services"].items():
        match = IMAGE.match(service["image"])
        assert match, f"{name}: image {service['image']!r} has no explicit tag"
        tag = match["tag"]
        assert "latest" not in tag, f"{name}: {tag}"
        assert re.search(r"\d+\.\d+", tag), f"{name}: tag {tag!r} is not a version"


def test_gpu_overlay_switches_speaches_to_the_cuda_build_of_the_same_release(
    base: dict, gpu: dict
) -> None:
    cpu_tag = IMAGE.match(base["services"]["speaches"]["image"])["tag"]
    cuda_tag = IMAGE.match(gpu["services"]["speaches"]["image"])["tag"]
    assert cpu_tag.endswith("-cpu") and cuda_tag.endswith("-cuda")
    assert cpu_tag.removesuffix("-cpu") == cuda_tag.removesuffix("-cuda")
    assert base["services"]["ollama"]["image"] == gpu["services"]["ollama"]["image"]


def test_agent_image_is_local_and_matches_the_package_version(base: dict) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    agent = base["services"]["agent"]
    assert agent["image"] == f"voice-agent:{version}"
    assert agent["pull_policy"] == "never"
    assert agent["build"]["dockerfile"] == "Dockerfile"


def test_ollama_keeps_the_model_loaded_with_a_bounded_context(merged: dict) -> None:
    env = merged["services"]["ollama"]["environment"]
    assert env["OLLAMA_KEEP_ALIVE"] == "-1"
    assert int(env["OLLAMA_CONTEXT_LENGTH"]) >= 2048


def test_env_file_is_optional_and_used_when_present(project: Path) -> None:
    # No .env: still valid (env_file is `required: false`), nothing from it.
    assert "MAX_SESSIONS" not in run_config(project, "compose.yaml")["services"]["agent"].get(
        "environment", {}
    )

    (project / ".env").write_text(
        "OLLAMA_PORT=12345\nSPEACHES_PORT=18000\nMAX_SESSIONS=2\nTLS_DIR=./tls\n"
        "STT_MODEL=Systran/faster-whisper-tiny.en\n"
    )
    for files in (["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]):
        config = run_config(project, *files)
        agent = config["services"]["agent"]
        # `config` inlines the env_file into the environment.
        assert agent["environment"]["MAX_SESSIONS"] == "2"
        # A host path meant for `make run` does not leak into the container.
        assert agent["environment"]["TLS_DIR"] == "/data/tls"
        assert agent["environment"]["OLLAMA_BASE_URL"] == "http://127.0.0.1:12345"
        assert agent["environment"]["SPEACHES_BASE_URL"] == "http://127.0.0.1:18000"
        ollama_port = config["services"]["ollama"]["ports"][0]
        assert (ollama_port["host_ip"], ollama_port["published"]) == ("127.0.0.1", "12345")
        if "compose.gpu.yaml" in files:
            # The overlay's GPU default never overrides the user's choice.
            assert agent["environment"]["STT_MODEL"] == "Systran/faster-whisper-tiny.en"


def test_gpu_overlay_only_adds_differences() -> None:
    overlay = yaml.safe_load((REPO / "compose.gpu.yaml").read_text())
    assert set(overlay) == {"services"}, "no include, volumes or networks in the overlay"
    allowed = {"deploy", "image", "environment"}
    for name, service in overlay["services"].items():
        assert name in SERVICES
        assert set(service) <= allowed, f"{name} copies more than the differences: {set(service)}"


def test_speaches_comes_from_its_own_included_file() -> None:
    main = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert main["include"] == ["speaches/compose.yaml"]
    assert "speaches" not in main["services"]
    fragment = yaml.safe_load((REPO / "speaches" / "compose.yaml").read_text())
    assert set(fragment["services"]) == {"speaches"}
