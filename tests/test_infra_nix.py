"""flake.nix: parsed by Nix, and its outputs evaluated against a stub nixpkgs.

nixpkgs cannot be fetched here, so tests/infra/stub-nixpkgs stands in for it: every
package is a derivation that is never built, and dockerTools/stdenv keep the arguments
they were given. Evaluation runs in a private Nix store under tmp, on a copy of the
files the flake reads (Nix would see only git-tracked files in the checkout).
Building the image for real needs nixpkgs and the network; that is not done here.
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

from agent.config import VARIABLES
from tests.helpers import REPO_ROOT as REPO
from tests.infra.tools import need

pytestmark = pytest.mark.infra

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
DEFAULTS = {variable.env: variable.default for variable in VARIABLES}
# Every file the flake reads when evaluated (Nix sees only these in the copy).
FLAKE_FILES = ("flake.nix", "pyproject.toml", "requirements.lock", "README.md", ".env.example")
SYSTEMS = ["x86_64-linux", "aarch64-linux"]


def nix_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "NIX_REMOTE": f"local?root={root / 'store'}",
        "NIX_CONFIG": "\n".join(
            [
                "experimental-features = nix-command flakes",
                "sandbox = false",
                "substituters =",
                "build-users-group =",
            ]
        ),
        "HOME": str(root / "home"),
        "XDG_CACHE_HOME": str(root / "cache"),
    }


def test_flake_parses() -> None:
    tool = need("nix-instantiate")
    result = subprocess.run(
        [tool, "--parse", str(REPO / "flake.nix")],
        capture_output=True,
        text=True,
        env={**os.environ, "NIX_REMOTE": "dummy://"},
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_nixpkgs_is_pinned_to_a_commit_not_a_branch() -> None:
    text = (REPO / "flake.nix").read_text()
    urls = re.findall(r'inputs\.nixpkgs\.url\s*=\s*"([^"]+)"', text)
    assert len(urls) == 1
    assert re.fullmatch(r"github:NixOS/nixpkgs/[0-9a-f]{40}", urls[0]), urls[0]
    assert "nixos-25.11" in text, "say which release branch the commit belongs to"


class Flake:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = nix_env(root)
        self.nix = need("nix")
        self.ref = f"path:{root / 'flake'}"
        self.override = [
            "--no-write-lock-file",
            "--override-input",
            "nixpkgs",
            f"path:{root / 'stub'}",
        ]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.nix, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=300,
            check=False,
        )

    def eval(self, attribute: str) -> object:
        result = self.run("eval", "--json", *self.override, f"{self.ref}#{attribute}")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def store_path(self, path: str) -> Path:
        return self.root / "store" / path.lstrip("/")


def copy_flake(root: Path) -> Flake:
    source = root / "flake"
    source.mkdir()
    for name in FLAKE_FILES:
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "agent", source / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    # Files the image must not depend on.
    (source / "tests").mkdir()
    (source / "tests" / "test_x.py").write_text("")
    (source / "agent" / "__pycache__").mkdir()
    (source / "agent" / "__pycache__" / "x.pyc").write_text("")
    shutil.copytree(REPO / "tests" / "infra" / "stub-nixpkgs", root / "stub")
    return Flake(root)


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> Flake:
    need("nix")
    return copy_flake(tmp_path_factory.mktemp("nix"))


def test_flake_outputs_evaluate(flake: Flake) -> None:
    result = flake.run("flake", "check", "--no-build", *flake.override, flake.ref)
    assert result.returncode == 0, result.stderr
    result = flake.run("flake", "show", "--json", *flake.override, flake.ref)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)
    for system in SYSTEMS:
        assert {"image", "agent", "wheels", "default"} <= set(outputs["packages"][system])
        assert "default" in outputs["devShells"][system]


@pytest.mark.parametrize("system", SYSTEMS)
def test_image_name_tag_entrypoint_and_user(flake: Flake, system: str) -> None:
    args = flake.eval(f"packages.{system}.image.stubArgs")
    assert args["name"] == "voice-agent"
    assert args["tag"] == VERSION
    config = args["config"]
    [entrypoint] = config["Entrypoint"]
    store_path = rf"/nix/store/[0-9a-z]{{32}}-voice-agent-env-{re.escape(VERSION)}"
    assert re.fullmatch(rf"{store_path}/bin/voice-agent", entrypoint)
    assert config["Cmd"] == ["serve"]
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) >= 1000 and group == user, "non-root, numeric user"
    assert config["WorkingDir"] == "/data"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["TLS_DIR"].startswith("/data/")
    assert env["PATH"] == entrypoint.removesuffix("/voice-agent")
    assert "7860/tcp" in config["ExposedPorts"]
    assert list(config["ExposedPorts"]) == [f"{DEFAULTS['AGENT_PORT']}/tcp"]
    for name, value in env.items():  # only what differs from the agent's own defaults
        assert DEFAULTS.get(name) != value, f"{name}={value} restates the agent's default"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "voice-agent"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"]
    assert labels["org.opencontainers.image.description"]


def test_image_has_no_shell_and_a_writable_home_for_its_user(flake: Flake) -> None:
    args = flake.eval("packages.x86_64-linux.image.stubArgs")
    contents = args["contents"]
    assert len(contents) == 1 and contents[0].endswith("-cacert-stub"), contents
    uid = args["config"]["User"].split(":")[0]
    commands = args["fakeRootCommands"]
    assert f"chown {uid}:{uid} data" in commands
    assert f"agent:x:{uid}:{uid}:" in commands


def test_dependencies_come_from_the_hashed_lock_only(flake: Flake) -> None:
    wheels = flake.eval("packages.x86_64-linux.wheels.stubArgs")
    assert wheels["outputHashMode"] == "recursive"
    assert wheels["outputHashAlgo"] == "sha256"
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", wheels["outputHash"])
    download = wheels["buildCommand"]
    assert "pip download" in download
    for flag in ("--require-hashes", "--no-deps"):
        assert flag in download, flag
    assert re.search(r"--requirement /nix/store/[0-9a-z]{32}-requirements\.lock", download)

    agent = flake.eval("packages.x86_64-linux.agent.stubArgs")
    install = agent["installPhase"]
    assert "--no-index --find-links" in install
    assert install.count("--no-deps") == 2
    assert "--require-hashes" in install and "--requirement requirements.lock" in install


def test_image_source_is_only_what_the_agent_needs(flake: Flake) -> None:
    src = flake.eval("packages.x86_64-linux.agent.stubArgs.src")
    tree = flake.store_path(src)
    top = {path.name for path in tree.iterdir()}
    assert {"agent", "pyproject.toml", "requirements.lock"} <= top
    assert top <= {"agent", "pyproject.toml", "requirements.lock", "README.md", "LICENSE"}
    assert not list(tree.rglob("__pycache__"))
    assert (tree / "agent" / "__init__.py").exists()


def test_dev_shell_has_the_project_tools(flake: Flake) -> None:
    packages = flake.eval("devShells.x86_64-linux.default.stubArgs.packages")
    names = " ".join(packages)
    for tool in ("python3", "uv", "shellcheck", "docker-compose"):
        assert tool in names, tool


def test_the_exposed_port_is_read_from_env_example(tmp_path: Path) -> None:
    need("nix")
    flake = copy_flake(tmp_path)
    example = flake.root / "flake" / ".env.example"
    text = example.read_text()
    line = f"\nAGENT_PORT={DEFAULTS['AGENT_PORT']}\n"
    assert line in text
    example.write_text(text.replace(line, "\nAGENT_PORT=9443\n"))
    config = flake.eval("packages.x86_64-linux.image.stubArgs.config")
    assert list(config["ExposedPorts"]) == ["9443/tcp"]
