"""The locks leave out what Pipecat requires but the agent never runs (video, a resampler we
do not use): most of the image's size. These tests prove the agent does not need them,
even in a development environment where they are still installed."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys

import pytest

import agent
from tests.standins.process import REPO_ROOT

LOCKS = ("requirements.lock", "requirements-test.lock")
# The import names of the Makefile's UNUSED_PACKAGES.
IMPORT_NAMES = {
    "opencv-python-headless": "cv2",
    "numba": "numba",
    "llvmlite": "llvmlite",
    "resampy": "resampy",
}


def unused_packages() -> list[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    found = re.search(r"^UNUSED_PACKAGES := (.+)$", makefile, re.MULTILINE)
    assert found, "the Makefile names the packages the locks leave out"
    return found.group(1).split()


def locked_names(lock: str) -> set[str]:
    text = (REPO_ROOT / lock).read_text()
    return {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", text, re.MULTILINE)}


def test_every_left_out_package_has_its_import_name_known() -> None:
    assert sorted(unused_packages()) == sorted(IMPORT_NAMES)


@pytest.mark.parametrize("lock", LOCKS)
def test_the_locks_leave_out_the_unused_packages(lock: str) -> None:
    names = locked_names(lock)
    assert "pipecat-ai" in names  # the lock was read
    assert names.isdisjoint(unused_packages())


def test_every_agent_module_imports_without_the_unused_packages() -> None:
    """Each module of the agent, imported in a fresh interpreter where importing a left-out
    package fails (as it does in the image), and a conversation's pipeline built."""
    modules = sorted(info.name for info in pkgutil.walk_packages(agent.__path__, prefix="agent."))
    assert "agent.pipeline" in modules and "agent.worker" in modules
    blocked = sorted(IMPORT_NAMES.values())
    program = f"""
import importlib, sys

class LeftOut:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not in the image")
        return None

sys.meta_path.insert(0, LeftOut())
for module in {modules!r}:
    importlib.import_module(module)

from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from agent.config import load_settings
from agent.pipeline import build_worker

settings = load_settings({{}})
worker, transport = build_worker(SmallWebRTCConnection(), settings)
print("built", type(worker).__name__)
"""
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built PipelineWorker" in result.stdout


def test_an_installed_agent_has_every_package_of_the_source_tree() -> None:
    """What pyproject.toml tells setuptools to install is every package under agent/. The
    editable install used in development reads the source tree and would not show a
    subpackage (agent.backends, once) missing from the image's install."""
    import setuptools
    from setuptools.config.pyprojecttoml import read_configuration

    declared = read_configuration(REPO_ROOT / "pyproject.toml")["tool"]["setuptools"]["packages"]
    if isinstance(declared, dict):  # [tool.setuptools.packages.find]
        found = declared["find"]
        installed = set(setuptools.find_packages(str(REPO_ROOT), include=found["include"]))
    else:
        installed = set(declared)
    in_source = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for init in (REPO_ROOT / "agent").rglob("__init__.py")
    }
    assert in_source <= installed, f"not installed: {sorted(in_source - installed)}"
