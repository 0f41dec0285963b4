"""The images the stack test runs, built here: no image registry is needed.

- a Debian bookworm base made by ``debootstrap --variant=minbase`` and ``docker import``;
- on it the stand-in for ``debian:bookworm-slim``, the Dockerfile's build base, that trusts
  this machine's certificate authority for pip and apt (``tests/stack/debian.Dockerfile``;
  a property of the test machine, so it stays out of the shipped Dockerfile);
- the agent image from the project's own ``Dockerfile``, built on that base (its final
  stage starts from ``scratch``: nothing else to stand in for);
- stand-ins for the Ollama and Speaches images, tagged with the references ``compose.yaml``
  uses (without their digests, which a local image cannot have), on a Python base made
  from the Debian one (``tests/stack/python.Dockerfile``).

Each image carries the hash of its inputs in a label (the bases in their tags), so a run
builds only what changed; they live in the data root under ``VOICE_AGENT_STACK_CACHE``
(default /var/cache/voice-agent-stack). Builds need the package registries, so this runs
before the tests cut the network::

    python -m tests.stack.images      # builds what is missing or stale, prints the timings
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE

from tests.stack.engine import (
    DockerError,
    Engine,
    compose_plugin,
    missing_tools,
    running_engine,
)
from tests.standins.process import REPO_ROOT

CACHE = Path(os.environ.get("VOICE_AGENT_STACK_CACHE", "/var/cache/voice-agent-stack"))
HERE = Path(__file__).resolve().parent
ARTIFACTS = REPO_ROOT / "test-artifacts"

SUITE = "bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*")))
# debootstrap leaves the packages it installed, and apt's lists, in the tree: not imported.
IMPORT_EXCLUDES = ("./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
INPUTS_LABEL = "voice-agent.test.inputs"
STANDIN_FILES = ("standins.Dockerfile", "ollama", "speaches-standin", ".dockerignore")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (``VOICE_AGENT_STACK_MIRROR`` overrides it):
    the package registry the base image is made from, never named in the repository."""
    if mirror := os.environ.get("VOICE_AGENT_STACK_MIRROR"):
        return mirror
    for source in APT_SOURCES:
        if not source.is_file() or source.suffix not in {".list", ".sources"}:
            continue
        text = source.read_text(errors="replace")
        # One-line form ("deb [options] URI suite …") or deb822 ("URIs: URI …").
        found = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.MULTILINE) or re.search(
            r"^URIs:\s*(\S+)", text, re.MULTILINE
        )
        if found and "/debian" in found.group(1):
            return found.group(1)
    raise SystemExit(
        "No Debian mirror found in /etc/apt/sources.list(.d): set VOICE_AGENT_STACK_MIRROR "
        "to the Debian mirror the base image should be made from."
    )


def data_root() -> Path:
    return CACHE / "docker"


@contextmanager
def cache_lock() -> Iterator[None]:
    """One dockerd per data root: the builder and the tests take turns."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _files_hash(root: Path, paths: Iterable[Path]) -> str:
    return _hash(*(x for p in sorted(paths) for x in (str(p.relative_to(root)), p.read_bytes())))


def agent_context(root: Path = REPO_ROOT) -> list[Path]:
    """The files the Dockerfile's build context holds: what ``.dockerignore`` lets in (its
    ``!`` lines; it starts by leaving everything out), without byte-code."""
    files: list[Path] = [root / "Dockerfile", root / ".dockerignore"]
    for line in (root / ".dockerignore").read_text().splitlines():
        if not line.startswith("!"):
            continue
        included = root / line[1:].strip().rstrip("/")
        candidates = included.rglob("*") if included.is_dir() else [included]
        files += [
            path
            for path in candidates
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        ]
    return files


def compose_images(root: Path = REPO_ROOT) -> dict[str, str]:
    """Each service's image as ``compose.yaml`` says, with no ``.env`` and no variables of
    this shell (their defaults), read by the real Compose binary."""
    options = ["--env-file", "/dev/null", "--file", "compose.yaml"]
    result = subprocess.run(
        [str(compose_plugin()), *options, "config", "--format", "json"],
        cwd=root,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")},
        capture_output=True,
        text=True,
        check=True,
    )
    services = json.loads(result.stdout)["services"]
    return {name: service["image"] for name, service in services.items()}


def without_digest(reference: str) -> str:
    return reference.split("@", 1)[0]


@dataclass(frozen=True)
class Plan:
    """Every image's reference and the hash of its inputs."""

    bookworm: str
    debian: str
    python: str
    agent: str
    agent_inputs: str
    ollama: str
    speaches: str
    standin_inputs: str

    @classmethod
    def for_checkout(cls, root: Path = REPO_ROOT) -> Plan:
        bookworm_key = _hash(SUITE, *IMPORT_EXCLUDES)
        debian_key = _hash(
            bookworm_key, (HERE / "debian.Dockerfile").read_bytes(), HOST_CA.read_bytes()
        )
        debian = f"voice-agent-test/debian:{debian_key}"
        python_key = _hash(debian, (HERE / "python.Dockerfile").read_bytes())
        python = f"voice-agent-test/python:{python_key}"
        images = compose_images(root)
        return cls(
            bookworm=f"voice-agent-test/bookworm:{bookworm_key}",
            debian=debian,
            python=python,
            agent=images["agent"],
            agent_inputs=_hash(debian, _files_hash(root, agent_context(root))),
            ollama=without_digest(images["ollama"]),
            speaches=without_digest(images["speaches"]),
            standin_inputs=_hash(python, _files_hash(HERE, [HERE / f for f in STANDIN_FILES])),
        )

    def labelled(self) -> dict[str, str]:
        return {
            self.agent: self.agent_inputs,
            self.ollama: self.standin_inputs,
            self.speaches: self.standin_inputs,
        }


def stale(engine: Engine, plan: Plan) -> list[str]:
    """The images of ``plan`` that are missing, or were built from other inputs."""
    out = []
    for reference, inputs in plan.labelled().items():
        if not engine.has_image(reference):
            out.append(reference)
            continue
        labels = engine.inspect(reference, kind="image")[0]["Config"]["Labels"] or {}
        if labels.get(INPUTS_LABEL) != inputs:
            out.append(reference)
    return out


def _timed(timings: dict[str, float], phase: str):
    @contextmanager
    def timer() -> Iterator[None]:
        start = time.monotonic()
        yield
        timings[phase] = round(time.monotonic() - start, 1)
        print(f"[stack images] {phase}: {timings[phase]} s", flush=True)

    return timer()


def _build(engine: Engine, *args: str) -> None:
    engine.docker("build", "--network", "host", "--quiet", *args, timeout=1800)


def _bookworm(engine: Engine, tag: str) -> None:
    """debootstrap a minimal bookworm, and import it as an image."""
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        root = Path(scratch) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                SUITE,
                str(root),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
        )
        excludes = [f"--exclude={pattern}" for pattern in IMPORT_EXCLUDES]
        tar = subprocess.Popen(["tar", "-C", str(root), *excludes, "-c", "."], stdout=PIPE)
        imported = subprocess.run(
            ["docker", "import", "-", tag], stdin=tar.stdout, env=engine.env, capture_output=True
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise DockerError(f"docker import failed: {imported.stderr.decode()}")


def _debian(engine: Engine, plan: Plan) -> None:
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(HERE / "debian.Dockerfile", Path(context) / "Dockerfile")
        shutil.copy(HOST_CA, Path(context) / "host-ca.crt")
        _build(engine, "--build-arg", f"BOOKWORM_IMAGE={plan.bookworm}", "-t", plan.debian, context)


def _python(engine: Engine, plan: Plan) -> None:
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(HERE / "python.Dockerfile", Path(context) / "Dockerfile")
        _build(engine, "--build-arg", f"DEBIAN_IMAGE={plan.debian}", "-t", plan.python, context)


def _agent(engine: Engine, plan: Plan, root: Path) -> None:
    _build(
        engine,
        "--build-arg",
        f"DEBIAN_IMAGE={plan.debian}",
        "--label",
        f"{INPUTS_LABEL}={plan.agent_inputs}",
        "-t",
        plan.agent,
        "-f",
        str(root / "Dockerfile"),
        str(root),
    )


def _standin(engine: Engine, plan: Plan, target: str, reference: str) -> None:
    _build(
        engine,
        "--build-arg",
        f"PYTHON_IMAGE={plan.python}",
        "--label",
        f"{INPUTS_LABEL}={plan.standin_inputs}",
        "--target",
        target,
        "-t",
        reference,
        "-f",
        str(HERE / "standins.Dockerfile"),
        str(HERE),
    )


def build(engine: Engine, plan: Plan, root: Path = REPO_ROOT) -> dict[str, float]:
    """Build what ``plan`` needs and ``engine`` lacks; returns seconds per step taken."""
    timings: dict[str, float] = {}
    todo = stale(engine, plan)
    if not todo:
        return timings
    if not engine.has_image(plan.debian):
        if not engine.has_image(plan.bookworm):
            with _timed(timings, "debootstrap + import"):
                _bookworm(engine, plan.bookworm)
        with _timed(timings, "debian base"):
            _debian(engine, plan)
    if {plan.ollama, plan.speaches} & set(todo) and not engine.has_image(plan.python):
        with _timed(timings, "python base (stand-ins)"):
            _python(engine, plan)
    if plan.agent in todo:
        with _timed(timings, "agent image (Dockerfile)"):
            _agent(engine, plan, root)
    if plan.ollama in todo:
        with _timed(timings, "ollama stand-in image"):
            _standin(engine, plan, "ollama", plan.ollama)
    if plan.speaches in todo:
        with _timed(timings, "speaches stand-in image"):
            _standin(engine, plan, "speaches", plan.speaches)
    # Old generations of the agent and stand-in images, now untagged.
    engine.docker("image", "prune", "--force")
    return timings


def unavailable() -> str | None:
    """Why the images cannot be built here (the stack test then skips too), or None."""
    if os.geteuid() != 0:
        return "building needs root (debootstrap, our own dockerd)"
    missing = missing_tools() + [tool for tool in ("debootstrap", "tar") if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)}: install Debian docker.io and debootstrap"
    return None


def main() -> int:
    if reason := unavailable():
        print(f"[stack images] not built: {reason}", file=sys.stderr)
        return 0
    start = time.monotonic()
    plan = Plan.for_checkout()
    log = ARTIFACTS / "stack-dockerd-build.log"
    with cache_lock(), running_engine(data_root(), log, bridged=False) as engine:
        timings = build(engine, plan)
        size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", plan.agent).stdout)
    timings["total"] = round(time.monotonic() - start, 1)
    print(f"[stack images] up to date in {timings['total']} s; {plan.agent}: {size / 1e6:.0f} MB")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "stack-build-timings.json").write_text(
        json.dumps({"timings_secs": timings, "agent_image_bytes": size}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
