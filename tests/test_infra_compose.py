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
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT as REPO
from tests.infra.tools import compose_command, need

pytestmark = pytest.mark.infra

FILES = ["compose.yaml", "compose.gpu.yaml", "speaches/compose.yaml", "Dockerfile"]
BACKENDS = ["ollama", "speaches"]
SERVICES = {"agent", *BACKENDS}  # the long-running ones
# Runs before Ollama and exits: gives Ollama's volume to Ollama's user.
OLLAMA_INIT = "ollama-init"
# The volume's name in earlier releases, whose Ollama ran as root with it at /root/.ollama:
# an upgrade must find the models already downloaded there.
OLLAMA_VOLUME = "ollama-models"
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
    assert set(base["services"]) == SERVICES | {OLLAMA_INIT}
    assert set(gpu["services"]) == SERVICES | {OLLAMA_INIT}
    assert base["name"] == gpu["name"] == "voice-agent"


def test_agent_starts_only_after_both_backends_are_healthy(merged: dict) -> None:
    depends = merged["services"]["agent"]["depends_on"]
    assert set(depends) == set(BACKENDS)
    for backend in BACKENDS:
        assert depends[backend]["condition"] == "service_healthy"


def test_every_service_is_health_checked_and_restarts(merged: dict) -> None:
    services = merged["services"]
    for name in SERVICES:
        service = services[name]
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
        "ollama": "/home/ubuntu/.ollama",
        OLLAMA_INIT: "/volume",
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


# What each service runs as: its image's own unprivileged user.
USERS = {"agent": "10001:10001", "ollama": "1000:1000", "speaches": "1000:1000"}


def test_no_service_runs_as_root_or_can_gain_privileges(merged: dict) -> None:
    for name, service in merged["services"].items():
        if name != OLLAMA_INIT:  # root, with one capability: the next test
            assert service.get("user") == USERS[name], name
            assert not service.get("cap_add"), f"{name} needs no capability"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert not service.get("privileged"), name
        for shared in ("pid", "ipc", "userns_mode"):
            assert service.get(shared) != "host", f"{name} shares the host's {shared}"


def test_ollama_init_runs_before_ollama_as_root_with_only_chown(merged: dict) -> None:
    services = merged["services"]
    init, ollama = services[OLLAMA_INIT], services["ollama"]
    assert ollama["depends_on"][OLLAMA_INIT]["condition"] == "service_completed_successfully"
    assert not any(
        OLLAMA_INIT in s.get("depends_on", {}) for s in services.values() if s is not ollama
    )
    assert init["image"] == ollama["image"], "the image already there: nothing more to pull"
    assert init["user"] == "0:0"
    assert init["cap_drop"] == ["ALL"] and init["cap_add"] == ["CHOWN"]
    assert init["security_opt"] == ["no-new-privileges:true"]
    assert init["read_only"] is True and "tmpfs" not in init, "it writes no file"
    assert init["network_mode"] == "none"
    assert "ports" not in init and not init.get("environment")
    assert init["restart"] == "no" and "healthcheck" not in init
    # scripts/wait-healthy.sh counts a service with this label as done once it exited 0.
    assert init["labels"] == {"voice-agent.one-shot": "true"}
    assert "voice-agent.one-shot" in (REPO / "scripts" / "wait-healthy.sh").read_text()
    # It gives the volume to the user Ollama runs as.
    command = [*init["entrypoint"], *init["command"]]
    assert ollama["user"] in command and ollama["user"].split(":")[0] in command
    # /home/ubuntu is uid 1000's (mode 750): root without DAC_OVERRIDE may not enter it.
    assert not init["volumes"][0]["target"].startswith(ollama["environment"]["HOME"])


def test_ollama_keeps_the_volume_earlier_releases_downloaded_models_into(merged: dict) -> None:
    assert merged["volumes"][OLLAMA_VOLUME]["name"] == f"voice-agent_{OLLAMA_VOLUME}"
    for name in ("ollama", OLLAMA_INIT):
        assert [m["source"] for m in merged["services"][name]["volumes"]] == [OLLAMA_VOLUME]
    # It held /root/.ollama (models/, id_ed25519): now Ollama's $HOME/.ollama.
    ollama = merged["services"]["ollama"]
    assert ollama["volumes"][0]["target"] == ollama["environment"]["HOME"] + "/.ollama"
    readme = (REPO / "README.md").read_text()
    assert f"`voice-agent_{OLLAMA_VOLUME}`" in readme and f"`{OLLAMA_INIT}`" in readme


def legacy_ollama_volume(root: Path) -> Path:
    """What an earlier release's Ollama, running as root, left in its volume."""
    volume = root / "volume"
    manifest = volume / "models" / "manifests" / "registry.ollama.ai" / "library" / "llama3.2"
    manifest.mkdir(parents=True)
    (manifest / "3b").write_text("{}")
    (volume / "models" / "blobs").mkdir()
    (volume / "models" / "blobs" / "sha256-6a0746a1ec1a").write_bytes(b"GGUF" * 1024)
    (volume / "id_ed25519").write_text("private key")
    (volume / "id_ed25519").chmod(0o600)
    (volume / "id_ed25519.pub").write_text("public key")
    return volume


def as_user(user: str, *command: str) -> subprocess.CompletedProcess[str]:
    uid, gid = user.split(":")
    return subprocess.run(
        [need("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command],
        capture_output=True,
        text=True,
        check=False,
    )


def run_ollama_init(service: dict, volume: Path, caps: list[str]) -> subprocess.CompletedProcess:
    """The init's own command, as root with only `caps`, on `volume` in place of its mount."""
    target = service["volumes"][0]["target"]
    command = [str(volume) if arg == target else arg for arg in service["entrypoint"]]
    command += [str(volume) if arg == target else arg for arg in service["command"]]
    bounding = ",".join(["-all", *(f"+{cap.lower()}" for cap in caps)])
    return subprocess.run(
        [
            need("setpriv"),
            "--reuid=0",
            "--regid=0",
            "--clear-groups",
            "--inh-caps=-all",
            f"--bounding-set={bounding}",
            "--no-new-privs",
            *command,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_ollama_init_gives_an_earlier_releases_models_to_ollamas_user(base: dict) -> None:
    """The init's command run for real, with exactly the capabilities compose.yaml grants.

    The host's GNU find and chown stand in for the Ollama image's (Ubuntu's, the same
    programs); root is needed to own the files as the earlier release did.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: the earlier release's files are root's")
    init, ollama_user = base["services"][OLLAMA_INIT], base["services"]["ollama"]["user"]
    uid, gid = (int(part) for part in ollama_user.split(":"))
    with tempfile.TemporaryDirectory() as root:
        Path(root).chmod(0o755)  # Ollama's user must reach the volume, as in a container
        volume = legacy_ollama_volume(Path(root))
        blobs = volume / "models" / "blobs"
        assert as_user(ollama_user, "touch", str(blobs / "new")).returncode != 0

        # Without CHOWN it fails, and so Ollama would not start on a volume it cannot use.
        assert run_ollama_init(init, volume, []).returncode != 0
        result = run_ollama_init(init, volume, init["cap_add"])
        assert result.returncode == 0, result.stderr

        entries = [volume, *volume.rglob("*")]
        assert len(entries) == 11
        assert {(e.stat().st_uid, e.stat().st_gid) for e in entries} == {(uid, gid)}
        assert (volume / "id_ed25519").stat().st_mode & 0o777 == 0o600, "the key stays private"
        assert as_user(ollama_user, "touch", str(blobs / "new")).returncode == 0
        read = as_user(ollama_user, "cat", str(volume / "id_ed25519"))
        assert read.stdout == "private key", read.stderr

        # Once the top folder is Ollama's, a start does not even walk the volume: a file
        # put back to root stays root's.
        os.chown(volume / "id_ed25519", 0, 0)
        assert run_ollama_init(init, volume, init["cap_add"]).returncode == 0
        assert (volume / "id_ed25519").stat().st_uid == 0

        # A run cut short changes the top folder last, so the next start finishes it.
        os.chown(volume, 0, 0)
        assert run_ollama_init(init, volume, init["cap_add"]).returncode == 0
        assert {(e.stat().st_uid, e.stat().st_gid) for e in entries} == {(uid, gid)}


def test_agent_user_is_the_one_its_images_create() -> None:
    uid = USERS["agent"].split(":")[0]
    assert f"USER {USERS['agent']}" in (REPO / "Dockerfile").read_text()
    assert f'uid = "{uid}";' in (REPO / "flake.nix").read_text()


def test_root_filesystems_are_read_only_with_a_small_tmp(merged: dict) -> None:
    for name, service in merged["services"].items():
        assert service.get("read_only") is True, name
        if name == OLLAMA_INIT:
            continue  # no /tmp: it only changes owners
        tmpfs = {entry.split(":")[0]: entry for entry in service.get("tmpfs", [])}
        assert set(tmpfs) == {"/tmp"}, name
        size = re.search(r"size=(\d+)m\b", tmpfs["/tmp"])
        assert size and int(size[1]) <= 256, f"{name}: /tmp must be bounded ({tmpfs['/tmp']})"


def test_every_service_writes_only_to_its_volume_and_tmp(merged: dict) -> None:
    services = merged["services"]
    # Ollama keeps its key and models in $HOME/.ollama: the volume.
    ollama = services["ollama"]
    assert ollama["volumes"][0]["target"] == ollama["environment"]["HOME"] + "/.ollama"
    # The agent's HOME and TLS_DIR are in /data (its image sets HOME=/data).
    assert services["agent"]["environment"]["TLS_DIR"].startswith(
        services["agent"]["volumes"][0]["target"] + "/"
    )
    # Speaches downloads straight into its volume, with no Xet chunk cache beside it.
    assert services["speaches"]["environment"]["HF_HUB_DISABLE_XET"] == "1"


def test_no_secret_is_set_in_the_compose_files_or_sent_to_the_backends(project: Path) -> None:
    secret = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY", re.IGNORECASE)
    for files in (["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]):
        config = run_config(project, *files)
        for name, service in config["services"].items():
            named = [key for key in service.get("environment", {}) if secret.search(key)]
            assert named == [], f"{name} gets {named} from the Compose files themselves"
            assert not service.get("build", {}).get("args"), name

    (project / ".env").write_text("AGENT_TOKEN=kitchen-7Rq2-lamp\nTURN_PASSWORD=relay-pw-1\n")
    config = run_config(project, "compose.yaml", "compose.gpu.yaml")
    agent = config["services"]["agent"]
    assert agent["environment"]["AGENT_TOKEN"] == "kitchen-7Rq2-lamp"  # at run time only
    for name in BACKENDS:
        rendered = json.dumps(config["services"][name])
        assert "kitchen-7Rq2-lamp" not in rendered and "relay-pw-1" not in rendered, name


def test_the_image_build_never_sees_the_env_file() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the build context starts from nothing"
    assert not any(".env" in rule for rule in rules if rule.startswith("!"))


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
        # Images from a registry are pinned by digest too; only the agent is built here.
        if name != "agent":
            assert match["digest"], f"{name}: image {service['image']!r} has no digest"


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
