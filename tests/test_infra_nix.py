"""flake.nix: parsed by Nix, and its outputs evaluated against a stub nixpkgs.

nixpkgs cannot be fetched here, so tests/infra/stub-nixpkgs stands in for it: every
package is a derivation that is never built, and dockerTools/stdenv keep the arguments
they were given. Evaluation runs in a private Nix store under tmp, on a copy of the
files the flake reads (Nix would see only git-tracked files in the checkout).
Building the image for real needs nixpkgs and the network; that is not done here.
scripts/wheels-hash.sh (what `make lock` runs to recompute the wheels' hashes) is
tested without the network: its flake.nix rewriting, and the pip options it downloads
with, against this machine's own Python.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import VARIABLES
from tests.helpers import REPO_ROOT as REPO
from tests.infra.tools import need

pytestmark = pytest.mark.infra

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
DEFAULTS = {variable.env: variable.default for variable in VARIABLES}
# Every file the flake reads when evaluated (Nix sees only these in the copy).
FLAKE_FILES = (
    "flake.nix",
    "pyproject.toml",
    "requirements.lock",
    "README.md",
    ".env.example",
    "scripts/prune-venv.sh",
)
SYSTEMS = ["x86_64-linux", "aarch64-linux"]
WHEELS_HASH_SCRIPT = REPO / "scripts" / "wheels-hash.sh"
SRI_SHA256 = r"sha256-[A-Za-z0-9+/]{43}="
# The stub's lib.fakeHash, which nixpkgs' is too.
FAKE_HASH = "sha256-" + "A" * 43 + "="


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
                # Nix 2.8's evaluation cache cannot read back a string that depends on
                # several derivations ("... is not in the Nix store").
                "eval-cache = false",
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
    assert "nixos-26.05" in text, "say which release branch the commit belongs to"


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
            (source / name).parent.mkdir(parents=True, exist_ok=True)
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
    assert re.fullmatch(SRI_SHA256, wheels["outputHash"])
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
    assert re.search(r"bash /nix/store/[0-9a-z]{32}-prune-venv\.sh \"\$out\"", install)


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


# --- the wheels' fixed-output hashes and scripts/wheels-hash.sh ---------------------------


def test_the_wheels_hashes_are_real_values_one_per_system(flake: Flake) -> None:
    assert "fakeHash" not in (REPO / "flake.nix").read_text()
    hashes = [flake.eval(f"packages.{system}.wheels.stubArgs.outputHash") for system in SYSTEMS]
    for value in hashes:
        assert re.fullmatch(SRI_SHA256, value), value
        assert value != FAKE_HASH
    # Each system downloads its own platform's wheels.
    assert len(set(hashes)) == len(SYSTEMS)


def test_pip_and_setuptools_come_from_the_cached_default_package_set(flake: Flake) -> None:
    """python311Packages is not built by Hydra; the default set (python3Packages) is."""
    download = flake.eval("packages.x86_64-linux.wheels.stubArgs.buildCommand")
    install = flake.eval("packages.x86_64-linux.agent.stubArgs.installPhase")
    tools = re.compile(
        r"PYTHONPATH=/nix/store/[0-9a-z]{32}-python3\.13-pip-stub/lib/python3\.13/site-packages"
        r":/nix/store/[0-9a-z]{32}-python3\.13-setuptools-stub/lib/python3\.13/site-packages "
    )
    assert tools.search(download), download
    assert len(tools.findall(install)) == 2, install
    for text in (download, install):
        assert "python3.11-pip-stub" not in text and "python3.11-setuptools-stub" not in text
    # ...while the interpreter that downloads, installs and runs is still CPython 3.11.
    assert re.search(r"-python3-3\.11-stub/bin/python3\.11 -m pip download", download)


def test_make_lock_refreshes_the_wheels_hashes_after_compiling_the_locks() -> None:
    make = need("make")
    result = subprocess.run(
        [make, "--no-print-directory", "-n", "lock"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    compiles = [i for i, line in enumerate(lines) if "uv pip compile" in line]
    refresh = [i for i, line in enumerate(lines) if "scripts/wheels-hash.sh" in line]
    assert len(compiles) == 2 and len(refresh) == 1, result.stdout
    assert refresh[0] > max(compiles), "the hashes follow the new requirements.lock"
    assert "PYTHON=.venv/bin/python " in lines[refresh[0]], "the lock's Python 3.11 runs pip"


def run_script_function(function: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Call one function of scripts/wheels-hash.sh (sourcing it runs nothing else)."""
    command = f'source "$1" && shift && {function} "$@"'
    return subprocess.run(
        ["bash", "-c", command, "wheels-hash-test", str(WHEELS_HASH_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sourcing_the_script_only_defines_its_functions() -> None:
    """Even with $0 naming the script, as `bash -c 'source "$0"' script` sets it.

    Were main to run, the Python check would fail (PYTHON is /bin/false) and say so.
    """
    command = 'source "$0" && type set_wheels_hash target_options >/dev/null'
    result = subprocess.run(
        ["bash", "-c", command, str(WHEELS_HASH_SCRIPT)],
        env={**os.environ, "PYTHON": "/bin/false", "NIX_BIN": "/bin/false"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""


def sri(digest: bytes) -> str:
    return "sha256-" + base64.b64encode(digest).decode()


@settings(max_examples=100, deadline=None)
@given(x86=st.binary(min_size=32, max_size=32), arm=st.binary(min_size=32, max_size=32))
def test_the_script_rewrites_exactly_the_two_hash_lines(x86: bytes, arm: bytes) -> None:
    original = (REPO / "flake.nix").read_text()
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "flake.nix"
        target.write_text(original)
        wanted = {"x86_64-linux": sri(x86), "aarch64-linux": sri(arm)}
        for system, value in wanted.items():
            result = run_script_function("set_wheels_hash", str(target), system, value)
            assert result.returncode == 0, result.stderr
        before, after = original.splitlines(), target.read_text().splitlines()
        assert len(before) == len(after)
        changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
        assert len(changed) <= 2
        for system, value in wanted.items():
            [line] = [line for line in after if line.strip().startswith(f"{system} = ")]
            assert line.strip() == f'{system} = "{value}";'
            assert line.index(system) == 8, "indentation kept"
        assert target.read_text().endswith("}\n")
        assert [p.name for p in Path(directory).iterdir()] == ["flake.nix"]


def test_the_rewritten_flake_evaluates_to_the_new_hashes(tmp_path: Path) -> None:
    need("nix")
    flake = copy_flake(tmp_path)
    copy = flake.root / "flake" / "flake.nix"
    wanted = {"x86_64-linux": sri(b"\x01" * 32), "aarch64-linux": sri(b"\xfe" * 32)}
    for system, value in wanted.items():
        result = run_script_function("set_wheels_hash", str(copy), system, value)
        assert result.returncode == 0, result.stderr
    for system, value in wanted.items():
        assert flake.eval(f"packages.{system}.wheels.stubArgs.outputHash") == value


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("FLAKE", "sha256-tooshort="),
        ("FLAKE", "sha512-" + "A" * 86 + "=="),
        ("FLAKE", 'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";\nx = "'),
        ('{ x86_64-linux = "x"; }\n', sri(b"\x00" * 32)),
        ("FLAKE_TWICE", sri(b"\x00" * 32)),
    ],
    ids=["short", "sha512", "injection", "no-wheelsHash-block", "two-blocks"],
)
def test_the_script_refuses_bad_hashes_and_unexpected_files(
    tmp_path: Path, content: str, value: str
) -> None:
    text = (REPO / "flake.nix").read_text()
    content = {"FLAKE": text, "FLAKE_TWICE": text + text}.get(content, content)
    target = tmp_path / "flake.nix"
    target.write_text(content)
    result = run_script_function("set_wheels_hash", str(target), "x86_64-linux", value)
    assert result.returncode != 0
    assert result.stderr.strip()
    assert target.read_text() == content, "left as it was"
    assert [p.name for p in tmp_path.iterdir()] == ["flake.nix"], "no temporary file left"


def test_the_script_downloads_with_the_same_pip_options_as_the_derivation(flake: Flake) -> None:
    download = flake.eval("packages.x86_64-linux.wheels.stubArgs.buildCommand")
    script = WHEELS_HASH_SCRIPT.read_text()
    for option in ("--no-deps", "--require-hashes", "--no-build-isolation"):
        assert option in download and option in script, option
    assert "--requirement requirements.lock" in script


def host_glibc_minor() -> int:
    library, version = platform.libc_ver()
    if library != "glibc" or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("needs a glibc Linux on x86_64 or aarch64")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("compares with this Python's own tags, which must be CPython 3.11")
    major, minor = (int(part) for part in version.split(".")[:2])
    assert major == 2
    return minor


def test_the_pip_options_rank_wheels_as_this_python_itself_would() -> None:
    """What pip downloads for a target is what CPython 3.11 on that glibc and CPU takes.

    The script tells pip the target (interpreter, ABIs, platform tags); nixpkgs' CPython
    3.11 would compute its own tags. Told this machine's glibc and CPU, the script's
    options must give exactly this Python's tags, in this Python's order, which is what
    decides which of a package's locked files pip picks. Only three kinds may sit
    elsewhere: `linux_*` (PyPI serves no such wheel), and manylinux2010 / manylinux1,
    which pip moves up next to manylinux2014; the script refuses a download whose
    choice that could change (see the next test).
    """
    from pip._internal.utils.compatibility_tags import get_supported
    from pip._vendor.packaging.tags import sys_tags

    minor = host_glibc_minor()
    result = run_script_function(
        f"GLIBC_MINOR={minor} && target_options", f"{platform.machine()}-linux"
    )
    assert result.returncode == 0, result.stderr
    options = result.stdout.split()
    values: dict[str, list[str]] = {}
    for flag, value in zip(options[::2], options[1::2], strict=True):
        values.setdefault(flag, []).append(value)
    assert set(values) == {"--python-version", "--implementation", "--abi", "--platform"}
    told = get_supported(
        version=values["--python-version"][0].replace(".", ""),
        platforms=values["--platform"],
        impl=values["--implementation"][0],
        abis=values["--abi"],
    )
    real = list(sys_tags())
    assert set(told) == set(real)

    moved = ("linux_", "manylinux2010_", "manylinux1_")

    def ranked(tags: list) -> list[str]:
        return [str(tag) for tag in tags if not tag.platform.startswith(moved)]

    assert ranked(told) == ranked(real)


@pytest.mark.parametrize(
    ("name", "alike"),
    [
        ("protobuf-6.33.6-cp39-abi3-manylinux2014_x86_64.whl", True),
        ("yarl-1.25.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", True),
        ("frozenlist-1.8.0-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.whl", True),
        ("cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl", True),
        ("soundfile-0.13.1-py2.py3-none-manylinux_2_28_aarch64.whl", True),
        ("aiofiles-25.1.0-py3-none-any.whl", True),
        ("docopt-0.6.2.tar.gz", True),
        ("old-1.0-cp311-cp311-manylinux2010_x86_64.manylinux_2_12_x86_64.whl", False),
        ("old-1.0-1-cp311-cp311-manylinux1_x86_64.whl", False),
        ("odd-1.0-cp311-abi3-manylinux_2_16_x86_64.whl", False),
    ],
)
def test_the_script_refuses_wheels_pip_may_rank_unlike_cpython(name: str, alike: bool) -> None:
    result = run_script_function("ranked_alike", f"/tmp/download/{name}")
    assert (result.returncode == 0) is alike, result.stderr
