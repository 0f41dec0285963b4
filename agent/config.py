"""Every setting of the agent, read from the environment once and validated.

Each setting is declared once, as a field of ``Settings`` made by ``setting(...)``: its
environment variable, default, parser, help text and the section it belongs to.
``load_settings`` turns an environment into a frozen ``Settings``; a bad value stops
start-up with one line naming the variable, the value and what is allowed.
``.env.example`` and the README's table are generated from the same declarations
(``agent/config_docs.py``, ``make docs``), and a test fails when they drift.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import config_parsers as parse

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant running on the user's home server. "
    "Your replies are spoken aloud, so answer in one to three short sentences of plain "
    "speech: no lists, no markdown, no emoji. If you are unsure, say so briefly."
)

# Sections of .env.example and the README table, in the order settings are declared.
WEB = "Web server"
MODELS = "Backends and models"
WEBRTC = "WebRTC"
LISTENING = "Listening: voice detection and end of turn"
HTTPS = "HTTPS (browsers give the microphone only to https:// pages or localhost)"
LOGS = "Logs"


class ConfigError(ValueError):
    """A setting has a value the agent cannot use; the message is meant for the user."""


@dataclass(frozen=True)
class Variable:
    """One setting: what the environment calls it, its default and how it is read."""

    env: str
    default: str
    parse: Callable[[str], Any]
    group: str
    help: str
    # The README's Default column, for a default too long to show.
    shown_default: str | None = None
    # The value .env.example writes instead of the default, and the comment saying why.
    example: str | None = None
    example_note: str = ""
    # A secret's value is never shown: not in repr, logs or error messages.
    secret: bool = False
    # The ``Settings`` attribute; filled in from the dataclass field.
    field: str = ""


def setting(
    env: str,
    default: str,
    parser: Callable[[str], Any],
    group: str,
    help: str,
    *,
    shown_default: str | None = None,
    example: str | None = None,
    example_note: str = "",
    secret: bool = False,
) -> Any:
    """Declare a ``Settings`` field; a secret one stays out of ``repr`` (and so out of logs)."""
    variable = Variable(
        env, default, parser, group, help, shown_default, example, example_note, secret
    )
    return dataclasses.field(metadata={"setting": variable}, repr=not secret)


@dataclass(frozen=True)
class Settings:
    # One setting per statement, laid out like a table.
    # fmt: off
    host: str = setting(
        "AGENT_HOST", "0.0.0.0", parse.host, WEB, "Address the web server listens on."
    )
    port: int = setting(
        "AGENT_PORT", "7860", parse.int_range(1, 65535), WEB, "Port of the web page and API."
    )
    max_sessions: int = setting(
        "MAX_SESSIONS", "4", parse.int_range(1, 256), WEB,
        "Conversations at once; further visitors are told the assistant is busy.",
    )
    new_sessions_per_minute: int = setting(
        "NEW_SESSIONS_PER_MINUTE", "12", parse.int_range(0, 100000), WEB,
        "New conversations one device (one IP address) may start in a minute; more are "
        "refused until the minute is over. Behind a reverse proxy all visitors share the "
        "proxy's address, and this limit. 0: no limit.",
    )
    session_idle_timeout_secs: float = setting(
        "SESSION_IDLE_TIMEOUT_SECS", "300", parse.float_range(10, 86400), WEB,
        "A conversation with no speech for this long is ended.",
    )
    workers: int = setting(
        "WORKERS", "auto", parse.count_or_cores(64), WEB,
        "Worker processes that run the conversations (each on its own event loop); auto: "
        "one per usable core.",
    )
    busy_loop_lag_ms: float = setting(
        "BUSY_LOOP_LAG_MS", "50", parse.float_range(0, 10000), WEB,
        "New conversations are refused as busy while every worker's event loop runs this "
        "late on average (over 2 s), so the ones running keep answering on time; 0 never "
        "refuses.",
    )
    agent_token: str = setting(
        "AGENT_TOKEN", "", parse.access_token, WEB,
        "Access token: the page asks for it once (each device remembers it), the API and "
        "/metrics refuse requests without it, and /health tells others only ok or not. "
        "Empty: anyone who can reach AGENT_PORT can talk to the assistant.",
        secret=True,
    )

    speaches_base_url: str = setting(
        "SPEACHES_BASE_URL", "http://localhost:8000", parse.http_url, MODELS,
        "Speaches server (speech-to-text and text-to-speech), without /v1.",
    )
    ollama_base_url: str = setting(
        "OLLAMA_BASE_URL", "http://localhost:11434", parse.http_url, MODELS,
        "Ollama server, without /v1.",
    )
    ollama_model: str = setting(
        "OLLAMA_MODEL", "llama3.2:3b", parse.text, MODELS, "LLM that writes the replies."
    )
    stt_model: str = setting(
        "STT_MODEL", "Systran/faster-distil-whisper-small.en", parse.text, MODELS,
        "Speaches speech-to-text model.",
        # Left empty so that compose.gpu.yaml can pick a larger model when .env does not.
        example="",
        example_note="Empty: {default}, or Systran/faster-distil-whisper-large-v3 in GPU "
        "mode (compose.gpu.yaml).",
    )
    tts_model: str = setting(
        "TTS_MODEL", "speaches-ai/Kokoro-82M-v1.0-ONNX", parse.text, MODELS,
        "Speaches text-to-speech model.",
    )
    tts_voice: str = setting("TTS_VOICE", "af_heart", parse.text, MODELS, "Voice of the TTS model.")
    tts_speed: float = setting(
        "TTS_SPEED", "1.0", parse.float_range(0.25, 4.0), MODELS,
        "Speaking rate: 0.5 to 2.0 for Kokoro voices, 0.25 to 4.0 for Piper voices.",
    )
    tts_first_clause_words: int = setting(
        "TTS_FIRST_CLAUSE_WORDS", "4", parse.int_range(0, 50), MODELS,
        "Words a reply's first clause needs (ending at a comma, semicolon, colon or dash) to "
        "be spoken before its sentence is finished; 0 waits for whole sentences.",
    )
    language: str = setting(
        "LANGUAGE", "en", parse.language, MODELS, "Language spoken to the assistant (ISO 639-1)."
    )
    system_prompt: str = setting(
        "SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT, parse.text, MODELS,
        "Instructions given to the LLM at the start of every conversation.",
        shown_default="a short spoken-style prompt",
    )
    backend_retry_max_secs: float = setting(
        "BACKEND_RETRY_MAX_SECS", "10", parse.float_range(0.1, 600), MODELS,
        "Longest wait between tries to reach Ollama or Speaches.",
    )
    backend_first_byte_timeout_secs: float = setting(
        "BACKEND_FIRST_BYTE_TIMEOUT_SECS", "30", parse.float_range(0.5, 600), MODELS,
        "Longest wait for a backend to start answering: a whole transcription, an LLM "
        "reply's first word, a sentence's first sound. Then the person is told it failed.",
    )
    backend_stall_timeout_secs: float = setting(
        "BACKEND_STALL_TIMEOUT_SECS", "10", parse.float_range(0.5, 600), MODELS,
        "Longest pause within a streamed answer (between two pieces of an LLM reply or of "
        "speech) before it counts as failed.",
    )

    ice_servers: tuple[str, ...] = setting(
        "ICE_SERVERS", "", parse.ice_servers, WEBRTC,
        "Comma-separated STUN/TURN URLs; empty keeps WebRTC on the local network.",
    )
    turn_username: str = setting(
        "TURN_USERNAME", "", parse.optional_text, WEBRTC,
        "User name for the TURN servers in ICE_SERVERS; required with a turn: or turns: URL.",
    )
    turn_password: str = setting(
        "TURN_PASSWORD", "", parse.optional_text, WEBRTC,
        "Password for those TURN servers. The page receives it too: browsers need it to "
        "relay through TURN.",
        secret=True,
    )
    webrtc_host_addresses: tuple[str, ...] = setting(
        "WEBRTC_HOST_ADDRESSES", "", parse.ip_addresses, WEBRTC,
        "IP addresses offered to browsers for audio; empty offers every interface's.",
    )
    webrtc_audio_reorder_packets: int = setting(
        "WEBRTC_AUDIO_REORDER_PACKETS", "2", parse.int_range(0, 15), WEBRTC,
        "How many later microphone packets (20 ms each) the agent waits for a missing one "
        "before going on without it: the reordering it repairs, and the most audio it holds "
        "back. 0 takes audio in as it arrives.",
    )
    connect_timeout_secs: float = setting(
        "WEBRTC_CONNECT_TIMEOUT_SECS", "30", parse.float_range(1, 600), WEBRTC,
        "A browser that has not connected this long after its offer is let go.",
    )
    reconnect_grace_secs: float = setting(
        "WEBRTC_RECONNECT_GRACE_SECS", "30", parse.float_range(1, 600), WEBRTC,
        "A conversation whose browser has sent nothing for this long (a closed tab, a lost "
        "network) is ended and its place freed. A phone that changes networks must restart "
        "its connection within it; the page tries for 20 s, so keep it above 25.",
    )

    vad_confidence: float = setting(
        "VAD_CONFIDENCE", "0.7", parse.float_range(0.0, 1.0), LISTENING,
        "How sure the voice detector must be that it hears speech.",
    )
    vad_start_secs: float = setting(
        "VAD_START_SECS", "0.2", parse.float_range(0.0, 2.0), LISTENING,
        "Speech needed before the user counts as speaking (and interrupts the bot).",
    )
    vad_stop_secs: float = setting(
        "VAD_STOP_SECS", "0.2", parse.float_range(0.0, 2.0), LISTENING,
        "Silence after which the voice detector says speech stopped.",
    )
    vad_min_volume: float = setting(
        "VAD_MIN_VOLUME", "0.6", parse.float_range(0.0, 1.0), LISTENING,
        "Quietest sound the voice detector considers.",
    )
    turn_detection: str = setting(
        "TURN_DETECTION", "transcript+smart-turn",
        parse.choice("transcript", "transcript+smart-turn", "silence", "smart-turn"), LISTENING,
        "How the end of the user's turn is found: transcript (a short pause after a "
        "sentence that reads as finished, a long one after one that trails off), "
        "transcript+smart-turn (also the long one when the Smart Turn model hears the "
        "voice trail off), silence (a pause of TURN_SILENCE_SECS whatever was said) or "
        "smart-turn (Pipecat's Smart Turn strategy alone).",
    )
    turn_silence_secs: float = setting(
        "TURN_SILENCE_SECS", "0.15", parse.float_range(0.0, 5.0), LISTENING,
        "Pause, after the voice detector's VAD_STOP_SECS, that ends a turn which reads as "
        "finished (with TURN_DETECTION=silence: every turn).",
    )
    turn_hesitation_secs: float = setting(
        "TURN_HESITATION_SECS", "1.5", parse.float_range(0.0, 10.0), LISTENING,
        "With TURN_DETECTION=transcript...: pause that ends a turn which trails off "
        '("a table for...", "um"), so a person who hesitates is not cut off.',
    )
    turn_speculation: str = setting(
        "TURN_SPECULATION", "on", parse.choice("on", "off"), LISTENING,
        "Start the reply while the pause is still being waited out, and drop it unheard "
        "if the person goes on.",
    )
    turn_resume_secs: float = setting(
        "TURN_RESUME_SECS", "2.0", parse.float_range(0.0, 10.0), LISTENING,
        "A person who speaks again this soon after their turn ended, before the reply is "
        "over, goes on with the same turn: the reply is withdrawn and both parts are "
        "answered as one. 0 turns this off.",
    )

    tls: str = setting(
        "TLS", "auto", parse.choice("auto", "on", "off"), HTTPS,
        "HTTPS for the page: auto (on unless AGENT_HOST is a loopback address), on or off.",
    )
    tls_dir: Path = setting(  # noqa: RUF009 - setting() returns a dataclasses.field
        "TLS_DIR", "./data/tls", parse.path, HTTPS,
        "Your cert.pem and key.pem, or where a self-signed pair is made on first start.",
    )
    http_port: int = setting(
        "AGENT_HTTP_PORT", "7861", parse.int_range(1, 65535), HTTPS,
        "With HTTPS on: plain HTTP on 127.0.0.1 at this port (development, health checks).",
    )

    log_level: str = setting(
        "LOG_LEVEL", "info", parse.choice("debug", "info", "warning", "error"), LOGS,
        "One of debug, info, warning, error.",
    )
    log_format: str = setting(
        "LOG_FORMAT", "auto", parse.choice("auto", "console", "json"), LOGS,
        "console (coloured), json (one object a line) or auto (console on a terminal).",
    )
    log_transcripts: str = setting(
        "LOG_TRANSCRIPTS", "off", parse.choice("off", "on"), LOGS,
        "on: the log keeps what people say and what the assistant answers (\"heard\" and "
        "\"said\" lines), and LOG_LEVEL=debug adds Pipecat's own messages, which hold them "
        "too. off: no words of a conversation reach the log at any level. Audio is never "
        "stored.",
    )
    # fmt: on

    @property
    def https(self) -> bool:
        """Whether the page is served over HTTPS (with plain HTTP kept on 127.0.0.1)."""
        if self.tls == "auto":
            return not parse.is_loopback(self.host)
        return self.tls == "on"

    @property
    def ice_servers_for_browser(self) -> list[dict[str, str]]:
        """``ICE_SERVERS`` as RTCIceServer dicts, with the TURN credentials on TURN URLs."""
        servers: list[dict[str, str]] = []
        for url in self.ice_servers:
            server = {"urls": url}
            if url.startswith(parse.TURN_SCHEMES):
                server |= {"username": self.turn_username, "credential": self.turn_password}
            servers.append(server)
        return servers


# Every setting in declaration order (the order of .env.example and the README table).
VARIABLES: tuple[Variable, ...] = tuple(
    dataclasses.replace(field.metadata["setting"], field=field.name)
    for field in dataclasses.fields(Settings)
)


def env_names() -> tuple[str, ...]:
    """Every setting's environment variable name, in declaration order."""
    return tuple(variable.env for variable in VARIABLES)


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
            shown = "(hidden)" if variable.secret else repr(raw)
            raise ConfigError(f"{variable.env}={shown} is not valid: expected {error}.") from None
    settings = Settings(**values)
    _check_together(settings)
    return settings


# What Speaches 0.8.3 accepts as `speed`, by model family (it answers 422 outside).
TTS_SPEED_RANGES = {"Kokoro": (0.5, 2.0), "Piper": (0.25, 4.0)}


def tts_speed_range(tts_model: str) -> tuple[str, tuple[float, float]]:
    """The model's family (by its name, as Speaches' model ids carry it) and speed range."""
    family = "Kokoro" if "kokoro" in tts_model.lower() else "Piper"
    return family, TTS_SPEED_RANGES[family]


def _check_together(settings: Settings) -> None:
    """Rules that involve more than one setting."""
    if settings.https and settings.http_port == settings.port:
        raise ConfigError(
            f"AGENT_HTTP_PORT={settings.http_port} is not valid: expected a port other than "
            f"AGENT_PORT ({settings.port}), since HTTPS is on."
        )
    family, (low, high) = tts_speed_range(settings.tts_model)
    if not low <= settings.tts_speed <= high:
        raise ConfigError(
            f"TTS_SPEED={settings.tts_speed:g} is not valid for TTS_MODEL={settings.tts_model}: "
            f"{family} voices speak at {low:g} to {high:g} times normal speed."
        )
    turn = [url for url in settings.ice_servers if url.startswith(parse.TURN_SCHEMES)]
    if turn and not (settings.turn_username and settings.turn_password):
        raise ConfigError(
            f"ICE_SERVERS names a TURN server ({turn[0]}), so TURN_USERNAME and TURN_PASSWORD "
            "must both be set to its credentials."
        )


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
