"""Privacy: what people say is kept nowhere, unless LOG_TRANSCRIPTS is on; then only in the log.

A real agent process holds a spoken conversation (Whisper and Piper in the Speaches
stand-in, the Ollama stand-in repeating what it heard). At default settings its log holds
neither the words said nor the reply, no file appeared in its data and home directories,
and no file in its working or temporary directory holds the words or any audio. With
LOG_TRANSCRIPTS=on the same conversation is in the log, as "heard" and "said" lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.audio import pad_with_silence, synthesize
from tests.helpers import REPO_ROOT, AgentProcess, agent_env, run_agent
from tests.standins.ollama import GREETING
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

pytestmark = pytest.mark.voice

SENTENCE = "Please remind me to water the tomatoes"
# Words of the conversation that nothing else in a log or file would contain: the person's
# (and so the reply's, which repeats them) and the greeting's.
PRIVATE_WORDS = ("tomatoes", "remind me", "home voice assistant")
# Never the agent's: caches of the tools running the tests.
NOT_THE_AGENTS = {".git", ".venv", ".pytest_cache", ".hypothesis", ".ruff_cache", "__pycache__"}
AUDIO_SUFFIXES = {".wav", ".pcm", ".raw", ".ogg", ".opus", ".webm", ".mp3", ".flac"}


def files_under(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file below ``root`` (skipping the test tools' caches), with size and mtime."""
    found: dict[Path, tuple[int, int]] = {}
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in NOT_THE_AGENTS]
        for name in names:
            path = Path(directory, name)
            try:
                stat = path.stat()
            except FileNotFoundError:  # gone while walking: someone's temporary file
                continue
            found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


def written(before: dict[Path, tuple[int, int]], root: Path) -> list[Path]:
    """Files below ``root`` that are new or changed since ``before``."""
    return [path for path, stat in files_under(root).items() if before.get(path) != stat]


def holds_words(path: Path) -> list[str]:
    try:
        content = path.read_bytes().lower()
    except OSError:  # a socket, or gone
        return []
    return [word for word in PRIVATE_WORDS if word.encode() in content]


def in_log(agent: AgentProcess) -> str:
    return "".join(agent.log_lines).lower()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return pad_with_silence(synthesize(SENTENCE, SAMPLE_RATE), SAMPLE_RATE, 0.3, 0.0)


async def talk(agent: AgentProcess, speech) -> str:
    """Greeting, one spoken turn and its reply; returns what the agent heard (RTVI)."""
    loopback_only()
    client = VoiceClient(agent.base_url)
    await client.connect()
    try:
        await client.wait_for_spoken_reply(since=0)
        since = len(client.messages)
        await client.microphone.say(speech)
        await client.wait_for_spoken_reply(since)
    finally:
        await client.close()
    heard = " ".join(
        m["data"]["text"] for m in client.messages if m.get("type") == "user-transcription"
    )
    replies = "".join(m["data"]["text"] for m in client.messages if m.get("type") == "bot-llm-text")
    # The words went through the whole pipeline: heard, answered, and greeted before.
    assert "tomatoes" in heard.lower(), heard
    assert "tomatoes" in replies.lower() and GREETING in replies, replies
    return heard


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """The agent's home, data (its TLS_DIR's parent) and temporary directories."""
    dirs = {name: tmp_path / name for name in ("home", "data", "tmp")}
    for directory in dirs.values():
        directory.mkdir()
    return dirs


def agent_in(places: dict[str, Path], speaches_url: str, ollama_url: str, **settings: str):
    env = agent_env(
        speaches_url,
        ollama_url,
        TLS_DIR=str(places["data"] / "tls"),
        HOME=str(places["home"]),
        TMPDIR=str(places["tmp"]),
        **settings,
    )
    return run_agent(env)


async def test_at_default_settings_a_conversation_leaves_no_words_and_no_files(
    speaches_url: str, ollama_url: str, places: dict[str, Path], speech
) -> None:
    started = time.monotonic()
    with agent_in(places, speaches_url, ollama_url) as agent:
        watched = [REPO_ROOT, places["home"], places["data"], places["tmp"]]
        before = {root: files_under(root) for root in watched}
        await talk(agent, speech)
        agent.wait_for_log("session ended")
        log = in_log(agent)
        changes = {root: written(before[root], root) for root in watched}
    assert '"event": "turn"' in log  # the turn was logged, without its words
    for word in PRIVATE_WORDS:
        assert word not in log, f"the log holds {word!r}"

    # Its home and data directories (one and the same, /data, in the container): nothing.
    stored = [
        path
        for root in (places["home"], places["data"])
        for path in changes[root]
        if not path.is_relative_to(places["data"] / "tls")
    ]
    assert stored == [], "the agent wrote files in its home or data directory"
    # Its run-time files (metrics, sockets) and its working directory, which here is the
    # checkout others may be editing meanwhile: no audio, and not the words.
    for path in changes[places["tmp"]] + changes[REPO_ROOT]:
        assert path.suffix not in AUDIO_SUFFIXES, path
        assert holds_words(path) == [], path
    print(f"default settings: no words logged or stored ({time.monotonic() - started:.1f} s)")


async def test_with_log_transcripts_on_the_conversation_is_in_the_log(
    speaches_url: str, ollama_url: str, places: dict[str, Path], speech
) -> None:
    started = time.monotonic()
    with agent_in(places, speaches_url, ollama_url, LOG_TRANSCRIPTS="on") as agent:
        heard = await talk(agent, speech)
        agent.wait_for_log("session ended")
        heard_lines = agent.log_events("heard")
        said_lines = agent.log_events("said")
    assert [line["text"] for line in heard_lines] == [heard.strip()]
    said = " ".join(line["text"] for line in said_lines)
    assert GREETING in said
    assert "you said: please remind me to water the tomatoes" in said.lower()
    assert {line["level"] for line in heard_lines + said_lines} == {"info"}
    print(f"LOG_TRANSCRIPTS=on: {len(said_lines)} said lines ({time.monotonic() - started:.1f} s)")


TRACEBACK = """
import structlog
from agent.logs import configure_logging

configure_logging("info", "{log_format}")

def answer(body):
    sdp = "v=0 o=- secret-offer-4711"
    raise ValueError("no answer for this offer")

try:
    answer({{"sdp": "secret-offer-4711"}})
except ValueError:
    structlog.get_logger("test").exception("request failed")
"""


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_logged_traceback_shows_no_local_values(log_format: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", TRACEBACK.format(log_format=log_format)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    output = result.stderr
    assert "no answer for this offer" in output  # the traceback is there
    assert "answer" in output and "ValueError" in output
    assert "secret-offer-4711" not in output, output
    if log_format == "json":
        [line] = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        frames = line["exception"][0]["frames"]
        assert [frame["name"] for frame in frames][-1] == "answer"
        assert all("locals" not in frame for frame in frames)


PIPECAT_LINES = """
from loguru import logger
from agent.logs import configure_logging

configure_logging("debug", "json", transcripts={transcripts})
words = "[Water the tomatoes.]"
logger.debug(f"SpeachesTTSService#0: Generating TTS {{words}}")
logger.warning(f"SpeachesTTSService#0: service is no longer usable, not speaking {{words}}")
"""


@pytest.mark.parametrize("transcripts", [False, True])
def test_pipecat_lines_keep_their_words_out_unless_transcripts_are_on(transcripts: bool) -> None:
    """Pipecat quotes words in its debug lines and some warnings: even at LOG_LEVEL=debug
    they reach the log only with LOG_TRANSCRIPTS=on."""
    result = subprocess.run(
        [sys.executable, "-c", PIPECAT_LINES.format(transcripts=transcripts)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines if line.get("source")]
    if transcripts:
        assert events == [
            "SpeachesTTSService#0: Generating TTS [Water the tomatoes.]",
            "SpeachesTTSService#0: service is no longer usable, not speaking [Water the tomatoes.]",
        ]
    else:  # the warning is still told, without its words; the debug chatter is not
        assert events == [
            "SpeachesTTSService#0: service is no longer usable, not speaking [\u2026]"
        ]
        assert "tomatoes" not in result.stderr
