"""The stand-ins' benchmark modes: fixed answers and set delays instead of engine time."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np

from tests.helpers import standin_client
from tests.standins.engines import encode_wav
from tests.standins.speaches import STT_MODEL, TTS_MODEL

HEARD = "turn on the kitchen lights"


def noise_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """Audio Whisper could not turn into those words: the text must come from the flag."""
    samples = np.random.default_rng(7).integers(-3000, 3000, round(seconds * rate))
    return encode_wav(samples.astype(np.int16), rate)


def transcribe(client: httpx.Client, fmt: str) -> httpx.Response:
    files = {"file": ("speech.wav", noise_wav(), "audio/wav")}
    return client.post(
        "/v1/audio/transcriptions",
        files=files,
        data={"model": STT_MODEL, "response_format": fmt},
    )


def speak(client: httpx.Client, text: str) -> tuple[bytes, float]:
    """The PCM of ``text`` and the seconds until its first byte."""
    body = {"model": TTS_MODEL, "input": text, "voice": "joe", "response_format": "pcm"}
    received, first = b"", None
    started = time.monotonic()
    with client.stream("POST", "/v1/audio/speech", json={**body, "sample_rate": 24000}) as reply:
        assert reply.status_code == 200
        for chunk in reply.iter_raw():
            first = first if first is not None else time.monotonic() - started
            received += chunk
    assert first is not None
    return received, first


def test_fixed_text_answers_every_transcription_after_the_delay() -> None:
    args = ("--installed-all", "--stt-fixed-text", HEARD, "--stt-delay-ms", "300")
    with standin_client("tests.standins.speaches", *args) as client:
        started = time.monotonic()
        assert transcribe(client, "json").json() == {"text": HEARD}
        assert time.monotonic() - started >= 0.3
        assert transcribe(client, "text").text == HEARD
        verbose = transcribe(client, "verbose_json").json()
        assert (verbose["text"], verbose["language"]) == (HEARD, "en")
        assert verbose["duration"] == 1.0
        assert [segment["text"].strip() for segment in verbose["segments"]] == [HEARD]


def test_speech_cache_replays_the_same_pcm_after_the_set_delay() -> None:
    args = ("--installed-all", "--warm", "--stt-fixed-text", HEARD, "--tts-cache")
    args += ("--tts-delay-ms", "250")
    with standin_client("tests.standins.speaches", *args) as client:
        first, _ = speak(client, "The lights are on now.")
        again, first_byte = speak(client, "The lights are on now.")
        other, _ = speak(client, "The lights are off now.")
        assert again == first
        assert other != first
        assert first_byte >= 0.25
        said = [entry.get("tts_cache") for entry in client.get("/_standin/requests").json()]
        assert said == ["miss", "hit", "miss"]


def test_stt_and_tts_delays_are_set_apart() -> None:
    args = ("--installed-all", "--stt-fixed-text", HEARD, "--ttfb-ms", "1500")
    args += ("--tts-delay-ms", "0", "--tts-cache")
    with standin_client("tests.standins.speaches", *args) as client:
        started = time.monotonic()
        transcribe(client, "json")
        assert time.monotonic() - started >= 1.5, "--ttfb-ms stays the STT delay"
        speak(client, "Quick.")
        _, first_byte = speak(client, "Quick.")
        assert first_byte < 1.5, "--tts-delay-ms 0 overrides --ttfb-ms for speech"


def test_ollama_fixed_reply_streams_the_same_words_whatever_was_said() -> None:
    reply = "Okay, the kitchen lights are on now."
    args = ("--installed", "llama3.2:1b", "--reply", reply, "--tokens-per-sec", "50")
    with standin_client("tests.standins.ollama", *args) as client:
        for said in ("hello", "what time is it"):
            body = {
                "model": "llama3.2:1b",
                "stream": True,
                "messages": [{"role": "user", "content": said}],
            }
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            chunks = [json.loads(line) for line in lines if line != "[DONE]"]
            text = "".join(
                c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
            )
            assert text == reply
