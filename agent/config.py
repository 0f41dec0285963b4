"""Every setting of the agent, read from the environment once and validated.

Each variable is declared once in ``VARIABLES`` with its default, how it is parsed and
what it means; ``load_settings`` turns an environment into a frozen ``Settings``. A
bad value stops start-up with one line naming the variable, the value and what is
allowed. The README table and ``.env.example`` list the same variables (a test keeps
them in step).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant running on the user's home server. "
    "Your replies are spoken aloud, so answer in one to three short sentences of plain "
    "speech: no lists, no markdown, no emoji. If you are unsure, say so briefly."
)


class ConfigError(ValueError):
    """A setting has a value the agent cannot use; the message is meant for the user."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    speaches_base_url: str
    ollama_base_url: str
    ollama_model: str
    stt_model: str
    tts_model: str
    tts_voice: str
    tts_speed: float
    language: str
    system_prompt: str
    max_sessions: int
    session_idle_timeout_secs: float
    log_level: str
    log_format: str
    ice_servers: tuple[str, ...]
    webrtc_host_addresses: tuple[str, ...]
    connect_timeout_secs: float
    vad_confidence: float
    vad_start_secs: float
    vad_stop_secs: float
    vad_min_volume: float
    turn_detection: str
    turn_silence_secs: float
    backend_retry_max_secs: float
    tls: str
    tls_dir: Path
    http_port: int

    @property
    def https(self) -> bool:
        """Whether the page is served over HTTPS (with plain HTTP kept on 127.0.0.1)."""
        if self.tls == "auto":
            return not _is_loopback(self.host)
        return self.tls == "on"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- parsers: each takes the raw string and returns the value or raises ValueError(allowed)


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("a non-empty text")
    return raw.strip()


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        allowed = f"a whole number from {low} to {high}"
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(allowed) from None
        if not low <= value <= high:
            raise ValueError(allowed)
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        allowed = f"a number from {low:g} to {high:g}"
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(allowed) from None
        if not low <= value <= high:  # also rejects nan
            raise ValueError(allowed)
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return value

    return parse


def _http_url(raw: str) -> str:
    allowed = "an http:// or https:// URL such as http://localhost:8000"
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(allowed)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError(allowed) from None
    return raw.strip().rstrip("/")


def _host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("an IP address or host name to listen on, such as 0.0.0.0")
    return value


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _ice_servers(raw: str) -> tuple[str, ...]:
    urls = _csv(raw)
    for url in urls:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ValueError("comma-separated stun:, turn: or turns: URLs (or empty for none)")
    return urls


def _ip_addresses(raw: str) -> tuple[str, ...]:
    addresses = _csv(raw)
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError("comma-separated IP addresses (or empty for all)") from None
    return addresses


def _language(raw: str) -> str:
    from pipecat.transcriptions.language import Language

    try:
        return Language(raw.strip()).value
    except ValueError:
        raise ValueError("a language code such as en, de, fr or es") from None


def _path(raw: str) -> Path:
    return Path(_text(raw))


def _log_level(raw: str) -> str:
    return _choice("debug", "info", "warning", "error")(raw)


@dataclass(frozen=True)
class Variable:
    env: str
    field: str
    default: str
    parse: Callable[[str], Any]
    help: str


VARIABLES: tuple[Variable, ...] = (
    Variable("AGENT_HOST", "host", "0.0.0.0", _host, "Address the web server listens on."),
    Variable("AGENT_PORT", "port", "7860", _int_range(1, 65535), "Port of the web page and API."),
    Variable(
        "SPEACHES_BASE_URL",
        "speaches_base_url",
        "http://localhost:8000",
        _http_url,
        "Speaches server (speech-to-text and text-to-speech), without /v1.",
    ),
    Variable(
        "OLLAMA_BASE_URL",
        "ollama_base_url",
        "http://localhost:11434",
        _http_url,
        "Ollama server, without /v1.",
    ),
    Variable("OLLAMA_MODEL", "ollama_model", "llama3.2:3b", _text, "LLM that writes the replies."),
    Variable(
        "STT_MODEL",
        "stt_model",
        "Systran/faster-distil-whisper-small.en",
        _text,
        "Speaches speech-to-text model.",
    ),
    Variable(
        "TTS_MODEL",
        "tts_model",
        "speaches-ai/Kokoro-82M-v1.0-ONNX",
        _text,
        "Speaches text-to-speech model.",
    ),
    Variable("TTS_VOICE", "tts_voice", "af_heart", _text, "Voice of the TTS model."),
    Variable("TTS_SPEED", "tts_speed", "1.0", _float_range(0.25, 4.0), "Speaking rate."),
    Variable(
        "LANGUAGE", "language", "en", _language, "Language spoken to the assistant (ISO 639-1)."
    ),
    Variable(
        "SYSTEM_PROMPT",
        "system_prompt",
        DEFAULT_SYSTEM_PROMPT,
        _text,
        "Instructions given to the LLM at the start of every conversation.",
    ),
    Variable(
        "MAX_SESSIONS",
        "max_sessions",
        "4",
        _int_range(1, 256),
        "Conversations at once; further visitors are told the assistant is busy.",
    ),
    Variable(
        "SESSION_IDLE_TIMEOUT_SECS",
        "session_idle_timeout_secs",
        "300",
        _float_range(10, 86400),
        "A conversation with no speech for this long is ended.",
    ),
    Variable("LOG_LEVEL", "log_level", "info", _log_level, "One of debug, info, warning, error."),
    Variable(
        "LOG_FORMAT",
        "log_format",
        "auto",
        _choice("auto", "console", "json"),
        "console (coloured), json (one object a line) or auto (console on a terminal).",
    ),
    Variable(
        "ICE_SERVERS",
        "ice_servers",
        "",
        _ice_servers,
        "Comma-separated STUN/TURN URLs; empty keeps WebRTC on the local network.",
    ),
    Variable(
        "WEBRTC_HOST_ADDRESSES",
        "webrtc_host_addresses",
        "",
        _ip_addresses,
        "IP addresses offered to browsers for audio; empty offers every interface's.",
    ),
    Variable(
        "WEBRTC_CONNECT_TIMEOUT_SECS",
        "connect_timeout_secs",
        "30",
        _float_range(1, 600),
        "A browser that has not connected this long after its offer is let go.",
    ),
    Variable(
        "VAD_CONFIDENCE",
        "vad_confidence",
        "0.7",
        _float_range(0.0, 1.0),
        "How sure the voice detector must be that it hears speech.",
    ),
    Variable(
        "VAD_START_SECS",
        "vad_start_secs",
        "0.2",
        _float_range(0.0, 2.0),
        "Speech needed before the user counts as speaking (and interrupts the bot).",
    ),
    Variable(
        "VAD_STOP_SECS",
        "vad_stop_secs",
        "0.2",
        _float_range(0.0, 2.0),
        "Silence after which the voice detector says speech stopped.",
    ),
    Variable(
        "VAD_MIN_VOLUME",
        "vad_min_volume",
        "0.6",
        _float_range(0.0, 1.0),
        "Quietest sound the voice detector considers.",
    ),
    Variable(
        "TURN_DETECTION",
        "turn_detection",
        "silence",
        _choice("silence", "smart-turn"),
        "How the end of the user's turn is found: a pause of TURN_SILENCE_SECS, "
        "or the Smart Turn model.",
    ),
    Variable(
        "TURN_SILENCE_SECS",
        "turn_silence_secs",
        "0.6",
        _float_range(0.0, 5.0),
        "With TURN_DETECTION=silence: pause that ends the user's turn.",
    ),
    Variable(
        "BACKEND_RETRY_MAX_SECS",
        "backend_retry_max_secs",
        "10",
        _float_range(0.1, 600),
        "Longest wait between tries to reach Ollama or Speaches.",
    ),
    Variable(
        "TLS",
        "tls",
        "auto",
        _choice("auto", "on", "off"),
        "HTTPS for the page: auto (on unless AGENT_HOST is a loopback address), on or off.",
    ),
    Variable(
        "TLS_DIR",
        "tls_dir",
        "./data/tls",
        _path,
        "Your cert.pem and key.pem, or where a self-signed pair is made on first start.",
    ),
    Variable(
        "AGENT_HTTP_PORT",
        "http_port",
        "7861",
        _int_range(1, 65535),
        "With HTTPS on: plain HTTP on 127.0.0.1 at this port (development, health checks).",
    ),
)

assert {v.field for v in VARIABLES} == {f.name for f in fields(Settings)}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default: the process environment).

    An unset or empty variable takes its default.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for variable in VARIABLES:
        raw = env.get(variable.env, "")
        if raw.strip() == "":
            raw = variable.default
        try:
            values[variable.field] = variable.parse(raw)
        except ValueError as error:
            raise ConfigError(f"{variable.env}={raw!r} is not valid: expected {error}.") from None
    settings = Settings(**values)
    if settings.https and settings.http_port == settings.port:
        raise ConfigError(
            f"AGENT_HTTP_PORT={settings.http_port} is not valid: expected a port other than "
            f"AGENT_PORT ({settings.port}), since HTTPS is on."
        )
    return settings


def read_env_file(path: str) -> dict[str, str]:
    """Read a Compose-style ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes.

    Used by ``make run``; in containers Compose passes the same file as the environment.
    """
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.removeprefix("export ").partition("=")
            if not sep or not key.strip().isidentifier():
                raise ConfigError(f"{path}:{number}: expected KEY=value, got {line!r}.")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[key.strip()] = value
    return values
