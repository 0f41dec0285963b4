"""Settings: every variable set is used, every unset one takes its default, bad ones stop."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.config import VARIABLES, ConfigError, load_settings, read_env_file
from tests.standins.process import REPO_ROOT

EXAMPLES = settings(max_examples=150, deadline=None)


def _number(low: float, high: float) -> st.SearchStrategy[tuple[str, float]]:
    return st.floats(low, high, allow_nan=False).map(lambda x: (repr(x), x))


def _whole(low: int, high: int) -> st.SearchStrategy[tuple[str, int]]:
    return st.integers(low, high).map(lambda x: (str(x), x))


def _text() -> st.SearchStrategy[tuple[str, str]]:
    return (
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1)
        .filter(str.strip)
        .map(lambda x: (x, x.strip()))
    )


def _one_of(*options: str) -> st.SearchStrategy[tuple[str, str]]:
    return st.sampled_from(options).map(lambda x: (x, x))


_url = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}:{port}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["localhost", "127.0.0.1", "ollama", "speaches.lan", "[::1]"]),
    st.integers(1, 65535),
).map(lambda url: (url + "/", url))

_ice = st.lists(
    st.sampled_from(["stun:stun.lan:3478", "turn:turn.lan:3478", "turns:relay.lan:5349"]),
    min_size=1,
    max_size=3,
).map(lambda urls: (",".join(urls), tuple(urls)))

_addresses = st.lists(st.ip_addresses().map(str), min_size=1, max_size=3).map(
    lambda items: (", ".join(items), tuple(items))
)

# A valid raw value and what the setting must become, for each variable.
VALID = {
    "AGENT_HOST": _one_of("0.0.0.0", "127.0.0.1", "::", "homeserver"),
    "AGENT_PORT": _whole(1, 65535),
    "SPEACHES_BASE_URL": _url,
    "OLLAMA_BASE_URL": _url,
    "OLLAMA_MODEL": _text(),
    "STT_MODEL": _text(),
    "TTS_MODEL": _text(),
    "TTS_VOICE": _text(),
    "TTS_SPEED": _number(0.25, 4.0),
    "LANGUAGE": _one_of("en", "de", "fr", "es", "it", "nl"),
    "SYSTEM_PROMPT": _text(),
    "MAX_SESSIONS": _whole(1, 256),
    "SESSION_IDLE_TIMEOUT_SECS": _number(10, 86400),
    "LOG_LEVEL": _one_of("debug", "info", "warning", "error"),
    "LOG_FORMAT": _one_of("auto", "console", "json"),
    "ICE_SERVERS": _ice,
    "WEBRTC_HOST_ADDRESSES": _addresses,
    "WEBRTC_CONNECT_TIMEOUT_SECS": _number(1, 600),
    "VAD_CONFIDENCE": _number(0, 1),
    "VAD_START_SECS": _number(0, 2),
    "VAD_STOP_SECS": _number(0, 2),
    "VAD_MIN_VOLUME": _number(0, 1),
    "TURN_DETECTION": _one_of("silence", "smart-turn"),
    "TURN_SILENCE_SECS": _number(0, 5),
    "BACKEND_RETRY_MAX_SECS": _number(0.1, 600),
    "TLS": _one_of("auto", "on", "off"),
    "TLS_DIR": _text().map(lambda pair: (pair[0], Path(pair[1]))),
    "AGENT_HTTP_PORT": _whole(1, 65535),
}

INVALID = {
    "AGENT_PORT": ["0", "65536", "http", "80.5"],
    "SPEACHES_BASE_URL": ["localhost:8000", "ftp://x", "http://", "http://host:port"],
    "OLLAMA_BASE_URL": ["ollama", "//ollama:11434"],
    "TTS_SPEED": ["0", "5", "fast", "nan"],
    "LANGUAGE": ["english", "xx"],
    "MAX_SESSIONS": ["0", "-1", "many"],
    "LOG_LEVEL": ["verbose"],
    "LOG_FORMAT": ["xml"],
    "ICE_SERVERS": ["stun.l.google.com:19302", "http://turn"],
    "WEBRTC_HOST_ADDRESSES": ["192.168.1", "localhost"],
    "VAD_CONFIDENCE": ["1.5", "-0.1"],
    "TURN_DETECTION": ["vad"],
    "TURN_SILENCE_SECS": ["-1", "10"],
    "TLS": ["yes", "https"],
}


def test_every_variable_has_a_valid_value_strategy() -> None:
    assert set(VALID) == {variable.env for variable in VARIABLES}


@st.composite
def environments(draw):
    """Some variables set to valid values, the others unset or empty."""
    environ, expected = {}, {}
    for variable in VARIABLES:
        choice = draw(st.sampled_from(["set", "unset", "empty"]))
        if choice == "set":
            raw, value = draw(VALID[variable.env])
            environ[variable.env] = raw
            expected[variable.field] = value
        else:
            if choice == "empty":
                environ[variable.env] = draw(st.sampled_from(["", " ", "\t"]))
            expected[variable.field] = variable.parse(variable.default)
    return environ, expected


@EXAMPLES
@given(environments())
def test_set_variables_are_used_and_unset_ones_take_their_defaults(case) -> None:
    environ, expected = case
    assume(expected["port"] != expected["http_port"])  # HTTPS needs two ports: tested below
    loaded = load_settings(environ)
    for name, value in expected.items():
        assert getattr(loaded, name) == value, name


@EXAMPLES
@given(
    st.sampled_from(sorted(INVALID)).flatmap(
        lambda env: st.tuples(st.just(env), st.sampled_from(INVALID[env]))
    )
)
def test_an_invalid_value_names_the_variable_the_value_and_what_is_allowed(case) -> None:
    env, raw = case
    with pytest.raises(ConfigError) as error:
        load_settings({env: raw})
    message = str(error.value)
    assert message.startswith(f"{env}={raw!r} is not valid: expected ")
    assert "\n" not in message


def test_https_needs_its_own_port_for_plain_http() -> None:
    with pytest.raises(ConfigError, match="AGENT_HTTP_PORT=7860 is not valid"):
        load_settings({"AGENT_HOST": "0.0.0.0", "AGENT_HTTP_PORT": "7860"})
    assert load_settings({"AGENT_HOST": "0.0.0.0"}).https
    assert not load_settings({"AGENT_HOST": "127.0.0.1"}).https
    assert load_settings({"AGENT_HOST": "127.0.0.1", "TLS": "on"}).https
    assert not load_settings({"AGENT_HOST": "0.0.0.0", "TLS": "off"}).https


def test_the_agent_refuses_to_start_with_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "check"],
        env={"PATH": "/usr/bin:/bin", "AGENT_PORT": "99999"},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "voice-agent: AGENT_PORT='99999' is not valid: expected a whole number from 1 to 65535."
    )


def test_env_example_lists_every_variable_with_its_default() -> None:
    example = read_env_file(str(REPO_ROOT / ".env.example"))
    for variable in VARIABLES:
        assert variable.env in example, variable.env
        assert example[variable.env] in (variable.default, ""), variable.env  # empty = default
    readme = (REPO_ROOT / "README.md").read_text()
    compose_only = set(example) - {variable.env for variable in VARIABLES}
    for name in compose_only:  # read by docker compose, documented in their own table
        assert f"| `{name}` |" in readme, name


def test_readme_table_lists_every_variable() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([A-Z_]+)` \| (.+?) \|", readme, flags=re.MULTILINE)
    documented = dict(rows)
    for variable in VARIABLES:
        assert variable.env in documented, variable.env
        if variable.default and variable.env != "SYSTEM_PROMPT":
            assert documented[variable.env] == f"`{variable.default}`", variable.env


def test_env_file_reading_handles_quotes_comments_and_export(tmp_path) -> None:
    path = tmp_path / ".env"
    path.write_text("# comment\n\nexport A=1\nB=\"two words\"\nC='x=y'\nD=\n")
    assert read_env_file(str(path)) == {"A": "1", "B": "two words", "C": "x=y", "D": ""}
    path.write_text("not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:1: expected KEY=value"):
        read_env_file(str(path))
