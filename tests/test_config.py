"""Settings: every variable set is used, every unset one takes its default, bad ones stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent import config_docs
from agent.config import (
    VARIABLES,
    ConfigError,
    env_names,
    load_settings,
    read_env_file,
    tts_speed_range,
)
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

CORES = len(os.sched_getaffinity(0))

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
    "TTS_FIRST_CLAUSE_WORDS": _whole(0, 50),
    "LANGUAGE": _one_of("en", "de", "fr", "es", "it", "nl"),
    "SYSTEM_PROMPT": _text(),
    "MAX_SESSIONS": _whole(1, 256),
    "NEW_SESSIONS_PER_MINUTE": _whole(0, 100000),
    "SESSION_IDLE_TIMEOUT_SECS": _number(10, 86400),
    "WORKERS": _whole(1, 64) | _one_of("auto", "Auto").map(lambda x: (x[0], CORES)),
    "BUSY_LOOP_LAG_MS": _number(0, 10000),
    "AGENT_TOKEN": st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8).map(
        lambda token: (f" {token} ", token)
    ),
    "LOG_LEVEL": _one_of("debug", "info", "warning", "error"),
    "LOG_FORMAT": _one_of("auto", "console", "json"),
    "LOG_TRANSCRIPTS": _one_of("off", "on"),
    "ICE_SERVERS": _ice,
    "TURN_USERNAME": _text(),
    "TURN_PASSWORD": _text(),
    "WEBRTC_HOST_ADDRESSES": _addresses,
    "WEBRTC_CONNECT_TIMEOUT_SECS": _number(1, 600),
    "WEBRTC_RECONNECT_GRACE_SECS": _number(1, 600),
    "WEBRTC_AUDIO_REORDER_PACKETS": _whole(0, 15),
    "VAD_CONFIDENCE": _number(0, 1),
    "VAD_START_SECS": _number(0, 2),
    "VAD_STOP_SECS": _number(0, 2),
    "VAD_MIN_VOLUME": _number(0, 1),
    "TURN_DETECTION": _one_of("transcript", "transcript+smart-turn", "silence", "smart-turn"),
    "TURN_SILENCE_SECS": _number(0, 5),
    "TURN_HESITATION_SECS": _number(0, 10),
    "TURN_SPECULATION": _one_of("on", "off"),
    "TURN_RESUME_SECS": _number(0, 10),
    "BACKEND_RETRY_MAX_SECS": _number(0.1, 600),
    "BACKEND_FIRST_BYTE_TIMEOUT_SECS": _number(0.5, 600),
    "BACKEND_STALL_TIMEOUT_SECS": _number(0.5, 600),
    "TLS": _one_of("auto", "on", "off"),
    "TLS_DIR": _text().map(lambda pair: (pair[0], Path(pair[1]))),
    "AGENT_HTTP_PORT": _whole(1, 65535),
}

INVALID = {
    "AGENT_PORT": ["0", "65536", "http", "80.5"],
    "SPEACHES_BASE_URL": ["localhost:8000", "ftp://x", "http://", "http://host:port"],
    "OLLAMA_BASE_URL": ["ollama", "//ollama:11434"],
    "TTS_SPEED": ["0", "5", "fast", "nan"],
    "TTS_FIRST_CLAUSE_WORDS": ["-1", "51", "four"],
    "LANGUAGE": ["english", "xx"],
    "MAX_SESSIONS": ["0", "-1", "many"],
    "NEW_SESSIONS_PER_MINUTE": ["-1", "100001", "twelve", "1.5"],
    "WORKERS": ["0", "65", "many", "2.5"],
    "BUSY_LOOP_LAG_MS": ["-1", "fast"],
    "LOG_LEVEL": ["verbose"],
    "LOG_FORMAT": ["xml"],
    "LOG_TRANSCRIPTS": ["yes", "all"],
    "ICE_SERVERS": ["stun.l.google.com:19302", "http://turn"],
    "WEBRTC_HOST_ADDRESSES": ["192.168.1", "localhost"],
    "VAD_CONFIDENCE": ["1.5", "-0.1"],
    "WEBRTC_AUDIO_REORDER_PACKETS": ["-1", "16", "two"],
    "WEBRTC_RECONNECT_GRACE_SECS": ["0", "601", "soon"],
    "TURN_DETECTION": ["vad"],
    "TURN_SILENCE_SECS": ["-1", "10"],
    "TURN_HESITATION_SECS": ["-0.5", "11", "long"],
    "TURN_SPECULATION": ["yes"],
    "BACKEND_FIRST_BYTE_TIMEOUT_SECS": ["0", "601", "soon"],
    "BACKEND_STALL_TIMEOUT_SECS": ["0.1", "-1", "never"],
    "TLS": ["yes", "https"],
}


def test_every_variable_has_a_valid_value_strategy() -> None:
    assert set(VALID) == {variable.env for variable in VARIABLES}


TURN_CREDENTIALS = ("TURN_USERNAME", "TURN_PASSWORD")


def _has_turn(ice: str) -> bool:
    return any(url.startswith(("turn:", "turns:")) for url in ice.split(","))


@st.composite
def environments(draw):
    """Some variables set to valid values, the others unset or empty.

    TURN credentials are always set when ICE_SERVERS names a TURN server (without them
    the settings are refused: tested below).
    """
    environ, expected = {}, {}
    for variable in VARIABLES:
        choice = draw(st.sampled_from(["set", "unset", "empty"]))
        if variable.env in TURN_CREDENTIALS and _has_turn(environ.get("ICE_SERVERS", "")):
            choice = "set"
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
    _, (low, high) = tts_speed_range(expected["tts_model"])
    assume(low <= expected["tts_speed"] <= high)  # the model family's range: tested below
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


@pytest.mark.parametrize(
    ("model", "speed", "allowed"),
    [
        ("speaches-ai/Kokoro-82M-v1.0-ONNX", "3", "0.5 to 2"),
        ("speaches-ai/Kokoro-82M-v1.0-ONNX", "0.3", "0.5 to 2"),
        ("speaches-ai/piper-en_US-joe-medium", "4.5", None),  # outside every range
    ],
)
def test_tts_speed_is_checked_against_the_model_family(model, speed, allowed) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"TTS_MODEL": model, "TTS_SPEED": speed})
    if allowed:
        assert str(error.value) == (
            f"TTS_SPEED={speed} is not valid for TTS_MODEL={model}: Kokoro voices speak at "
            f"{allowed} times normal speed."
        )
    piper = load_settings({"TTS_MODEL": "speaches-ai/piper-en_US-joe-medium", "TTS_SPEED": "3"})
    assert piper.tts_speed == 3.0, "Piper takes 0.25 to 4"


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


def test_env_names_are_every_setting_once() -> None:
    names = env_names()
    assert len(names) == len(set(names)) == len(VARIABLES)
    assert set(names) == set(VALID)
    assert {"AGENT_PORT", "TLS", "VAD_STOP_SECS", "TURN_PASSWORD"} <= set(names)


# --- TURN credentials and the ICE servers a browser is given ------------------------------


def test_turn_urls_get_the_credentials_and_stun_urls_do_not() -> None:
    loaded = load_settings(
        {
            "ICE_SERVERS": "stun:stun.lan:3478, turn:turn.lan:3478?transport=udp,"
            "turns:relay.lan:5349",
            "TURN_USERNAME": " appliance ",
            "TURN_PASSWORD": "s3cret pass",
        }
    )
    assert loaded.ice_servers_for_browser == [
        {"urls": "stun:stun.lan:3478"},
        {
            "urls": "turn:turn.lan:3478?transport=udp",
            "username": "appliance",
            "credential": "s3cret pass",
        },
        {"urls": "turns:relay.lan:5349", "username": "appliance", "credential": "s3cret pass"},
    ]
    assert load_settings({}).ice_servers_for_browser == []
    assert load_settings({"ICE_SERVERS": "stun:a:1"}).ice_servers_for_browser == [
        {"urls": "stun:a:1"}
    ]


@pytest.mark.parametrize(
    "credentials",
    [{}, {"TURN_USERNAME": "user"}, {"TURN_PASSWORD": "pass"}, {"TURN_USERNAME": " "}],
    ids=["none", "no-password", "no-user", "blank"],
)
@pytest.mark.parametrize("url", ["turn:turn.lan:3478", "turns:relay.lan:5349"])
def test_a_turn_server_without_both_credentials_is_refused_in_one_sentence(
    url: str, credentials: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"ICE_SERVERS": f"stun:stun.lan:3478,{url}", **credentials})
    message = str(error.value)
    assert message == (
        f"ICE_SERVERS names a TURN server ({url}), so TURN_USERNAME and TURN_PASSWORD "
        "must both be set to its credentials."
    )


@pytest.mark.parametrize("token", ["short12", "has a space", "pässwort-1234", "tab\tinside1"])
def test_an_unusable_access_token_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"AGENT_TOKEN": token})
    message = str(error.value)
    assert message.startswith("AGENT_TOKEN=(hidden) is not valid: expected ")
    assert token not in message and token.strip() not in message
    assert load_settings({"AGENT_TOKEN": " "}).agent_token == ""  # empty: no token


def test_the_access_token_stays_out_of_the_settings_repr() -> None:
    loaded = load_settings({"AGENT_TOKEN": "kitchen-7Rq2-lamp"})
    assert loaded.agent_token == "kitchen-7Rq2-lamp"
    assert "kitchen-7Rq2-lamp" not in repr(loaded)


def test_the_turn_password_stays_out_of_the_settings_repr() -> None:
    loaded = load_settings(
        {"ICE_SERVERS": "turn:t:3478", "TURN_USERNAME": "u", "TURN_PASSWORD": "hunter2-xyz"}
    )
    assert loaded.turn_password == "hunter2-xyz"
    assert "hunter2-xyz" not in repr(loaded)
    assert "turn:t:3478" in repr(loaded)


# --- .env.example and the README tables are generated from the declarations ---------------


def test_committed_env_example_is_what_the_code_generates() -> None:
    committed = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    assert committed == config_docs.env_example(), "run `make docs` and commit .env.example"


def test_committed_readme_tables_are_what_the_code_generates() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert config_docs.readme_with_tables(readme) == readme, "run `make docs`, commit README"
    for marker in (*config_docs.SETTINGS_MARKERS, *config_docs.COMPOSE_MARKERS):
        assert readme.count(marker) == 1, marker


def test_readme_generation_replaces_only_between_the_markers() -> None:
    begin, end = config_docs.SETTINGS_MARKERS
    compose_begin, compose_end = config_docs.COMPOSE_MARKERS
    stale = (
        f"intro\n{begin}\n| old | table |\n{end}\nmiddle\n"
        f"{compose_begin}\nold\n{compose_end}\noutro\n"
    )
    fresh = config_docs.readme_with_tables(stale)
    assert fresh == (
        f"intro\n{begin}\n{config_docs.settings_table()}{end}\nmiddle\n"
        f"{compose_begin}\n{config_docs.compose_table()}{compose_end}\noutro\n"
    )
    with pytest.raises(ValueError, match="settings:begin"):
        config_docs.readme_with_tables("no markers here\n")


def test_env_example_reads_back_as_every_default() -> None:
    """What .env.example says is what the agent would use with no .env at all."""
    example = read_env_file(str(REPO_ROOT / ".env.example"))
    assert load_settings(example) == load_settings({})
    compose_only = {c.env for c in config_docs.COMPOSE_ONLY}
    assert set(example) == set(env_names()) | compose_only - {"COMPOSE_FILE"}


def _compose_files() -> str:
    names = ["compose.yaml", "compose.gpu.yaml", "speaches/compose.yaml"]
    return "\n".join((REPO_ROOT / name).read_text() for name in names)


def test_compose_only_defaults_are_the_ones_the_compose_files_use() -> None:
    text = _compose_files()
    # Innermost ${NAME:-default} only: a default holding another ${...} is not literal.
    defaults: dict[str, set[str]] = {}
    for name, default in re.findall(r"\$\{([A-Z_]+):-([^${}]*)\}", text):
        defaults.setdefault(name, set()).add(default)
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", text))
    declared = {c.env: c for c in config_docs.COMPOSE_ONLY}
    assert interpolated <= set(declared) | set(env_names()), "document every variable"
    for name, variable in declared.items():
        if name == "COMPOSE_FILE":  # read by Compose itself, never interpolated
            assert name not in interpolated
            continue
        assert defaults.get(name) == {variable.default}, name


def test_env_example_names_the_stt_model_gpu_mode_picks() -> None:
    [gpu_model] = re.findall(r"\$\{STT_MODEL:-([^}]+)\}", _compose_files())
    stt = next(v for v in VARIABLES if v.env == "STT_MODEL")
    assert stt.example == ""
    assert f"{stt.default}, or {gpu_model} in GPU" in " ".join(
        line.removeprefix("# ") for line in config_docs.env_example().splitlines()
    )


def _cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "AGENT_PORT": "99999"},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_config_command_prints_the_generated_docs_even_with_bad_settings() -> None:
    example = _cli("config", "--env-example")
    assert example.returncode == 0, example.stderr
    assert example.stdout == (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    markdown = _cli("config", "--markdown")
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout == (config_docs.settings_table() + "\n" + config_docs.compose_table())
    bare = _cli("config")
    assert bare.returncode == 2
    assert "config needs --env-example, --markdown or --write-docs" in bare.stderr
    stray = _cli("check", "--markdown")
    assert stray.returncode == 2
    assert "go with the config command" in stray.stderr


def test_config_write_docs_rewrites_both_files_and_then_has_nothing_to_do(tmp_path) -> None:
    begin, end = config_docs.SETTINGS_MARKERS
    compose_begin, compose_end = config_docs.COMPOSE_MARKERS
    (tmp_path / "README.md").write_text(
        f"# x\n{begin}\nstale\n{end}\n{compose_begin}\n{compose_end}\n"
    )
    (tmp_path / ".env.example").write_text("AGENT_PORT=1\n")
    first = _cli("config", "--write-docs", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "rewrote .env.example, README.md"
    assert (tmp_path / ".env.example").read_text() == config_docs.env_example()
    assert config_docs.settings_table() in (tmp_path / "README.md").read_text()
    again = _cli("config", "--write-docs", cwd=tmp_path)
    assert again.stdout.strip() == "docs already up to date"

    (tmp_path / "README.md").write_text("no markers\n")
    broken = _cli("config", "--write-docs", cwd=tmp_path)
    assert broken.returncode == 1
    assert "README.md has no <!-- settings:begin -->" in broken.stderr


def test_env_file_reading_handles_quotes_comments_and_export(tmp_path) -> None:
    path = tmp_path / ".env"
    path.write_text("# comment\n\nexport A=1\nB=\"two words\"\nC='x=y'\nD=\n")
    assert read_env_file(str(path)) == {"A": "1", "B": "two words", "C": "x=y", "D": ""}
    path.write_text("not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:1: expected KEY=value"):
        read_env_file(str(path))
