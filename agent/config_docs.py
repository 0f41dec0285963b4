"""``.env.example`` and the README's settings tables, generated from the declarations.

The agent's settings come from ``agent.config``. The Compose-only variables below are
read by ``docker compose`` (the agent never sees them); they are declared here only so
that the same generator documents them, and a test checks their defaults against the
``${NAME:-default}`` the Compose files use. ``voice-agent config`` prints or writes
these files (``make docs``).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from agent.config import VARIABLES, Variable


@dataclass(frozen=True)
class ComposeVariable:
    env: str
    default: str
    help: str
    # .env.example shows this as a commented-out line instead of ENV=default.
    commented_example: str | None = None


COMPOSE_GROUP = "Docker Compose (make up); the agent itself does not read these"

COMPOSE_ONLY: tuple[ComposeVariable, ...] = (
    ComposeVariable("OLLAMA_PORT", "11434", "Host port of Ollama, published on 127.0.0.1 only."),
    ComposeVariable("SPEACHES_PORT", "8000", "Host port of Speaches, published on 127.0.0.1 only."),
    ComposeVariable(
        "OLLAMA_KEEP_ALIVE",
        "-1",
        "How long Ollama keeps a model loaded; -1 = always, so no reply waits for a reload.",
    ),
    ComposeVariable(
        "OLLAMA_CONTEXT_LENGTH", "4096", "Context window Ollama gives the model, in tokens."
    ),
    ComposeVariable("SPEACHES_LOG_LEVEL", "info", "Speaches' log level."),
    ComposeVariable(
        "SPEACHES_MODEL_TTL", "-1", "Seconds Speaches keeps an idle model loaded; -1 = always."
    ),
    ComposeVariable(
        "AGENT_IMAGE",
        "voice-agent:0.1.0",
        "Agent image to run (built by `make image`, or from the `Dockerfile`).",
    ),
    ComposeVariable(
        "COMPOSE_FILE",
        "compose.yaml",
        "`compose.yaml:compose.gpu.yaml` makes GPU mode the default for every command "
        "(plain docker compose, make, the systemd service).",
        commented_example="compose.yaml:compose.gpu.yaml",
    ),
)

ENV_EXAMPLE_HEADER = """\
# Voice agent settings. Copy to .env and edit; every line shows the default.
# `make run` and `docker compose` both read .env. Unset or empty = the default.
# Generated from agent/config.py by `make docs`: change descriptions there, not here.
"""

SETTINGS_MARKERS = ("<!-- settings:begin -->", "<!-- settings:end -->")
COMPOSE_MARKERS = ("<!-- compose-settings:begin -->", "<!-- compose-settings:end -->")


def _comment(text: str) -> str:
    return textwrap.fill(
        text,
        width=88,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _env_value(value: str) -> str:
    return f'"{value}"' if any(c in value for c in " \t#'") else value


def _example_lines(variable: Variable) -> list[str]:
    help_text = variable.help
    value = variable.default
    if variable.example is not None and variable.example != variable.default:
        value = variable.example
        help_text += " " + variable.example_note.format(default=variable.default)
    return [_comment(help_text), f"{variable.env}={_env_value(value)}"]


def env_example() -> str:
    """The text of ``.env.example``: every variable with its default, in sections."""
    lines = [ENV_EXAMPLE_HEADER.rstrip("\n")]
    group = None
    for variable in VARIABLES:
        if variable.group != group:
            group = variable.group
            lines += ["", f"# --- {group}"]
        lines += _example_lines(variable)
    lines += ["", f"# --- {COMPOSE_GROUP}"]
    for compose in COMPOSE_ONLY:
        lines.append(_comment(compose.help))
        if compose.commented_example is None:
            lines.append(f"{compose.env}={_env_value(compose.default)}")
        else:
            lines.append(f"# {compose.env}={compose.commented_example}")
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for env, default, meaning in rows:
        cells = [f"`{env}`", default, meaning.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _shown(default: str) -> str:
    return f"`{default}`" if default else "(empty)"


def settings_table() -> str:
    """The README's table of the agent's settings."""
    return _table([(v.env, v.shown_default or _shown(v.default), v.help) for v in VARIABLES])


def compose_table() -> str:
    """The README's table of the variables only Docker Compose reads."""
    return _table([(c.env, _shown(c.default), c.help) for c in COMPOSE_ONLY])


def _replace_between(text: str, markers: tuple[str, str], block: str) -> str:
    begin, end = markers
    head, found_begin, rest = text.partition(begin + "\n")
    _, found_end, tail = rest.partition(end)
    if not (found_begin and found_end):
        raise ValueError(f"README.md has no {begin} ... {end} lines")
    return head + found_begin + block + found_end + tail


def readme_with_tables(readme: str) -> str:
    """``readme`` with both settings tables regenerated between their marker comments."""
    readme = _replace_between(readme, SETTINGS_MARKERS, settings_table())
    return _replace_between(readme, COMPOSE_MARKERS, compose_table())


def write_docs(root: Path) -> list[str]:
    """Rewrite ``.env.example`` and the README tables under ``root``; return what changed."""
    readme = root / "README.md"
    wanted = {
        root / ".env.example": env_example(),
        readme: readme_with_tables(readme.read_text(encoding="utf-8")),
    }
    changed = []
    for path, text in wanted.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path.name)
    return changed
