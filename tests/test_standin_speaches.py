"""The Speaches stand-in, started as a real subprocess, speaks the protocol on real engines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import audio
from tests.helpers import standin_client
from tests.standins.engines import decode_wav, encode_wav
from tests.standins.speaches import STT_MODEL, TTS_MODEL

MODULE = "tests.standins.speaches"
FOX = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with standin_client(MODULE, "--installed-all", "--warm") as client:
        yield client


def speech(client: httpx.Client, text: str, **options: object) -> httpx.Response:
    body = {"model": TTS_MODEL, "input": text, "voice": "joe", "response_format": "pcm"}
    return client.post("/v1/audio/speech", json={**body, **options})


def transcription(client: httpx.Client, wav: bytes, **fields: str) -> httpx.Response:
    files = {"file": ("speech.wav", wav, "audio/wav")}
    return client.post("/v1/audio/transcriptions", files=files, data={"model": STT_MODEL, **fields})


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert (response.status_code, response.text) == (200, "OK")


def test_models_are_pulled_listed_removed_and_persisted(tmp_path: Path) -> None:
    args = ("--state-dir", str(tmp_path), "--pull-seconds", "0.3", "--installed", STT_MODEL)
    with standin_client(MODULE, *args) as client:
        missing = client.get(f"/v1/models/{TTS_MODEL}")
        assert missing.status_code == 404
        assert "not found" in missing.json()["detail"]
        refused = speech(client, "Hello.")
        assert refused.status_code == 404
        assert "not installed" in refused.json()["detail"]

        started = time.monotonic()
        assert client.post(f"/v1/models/{TTS_MODEL}").status_code == 200
        assert time.monotonic() - started >= 0.3
        assert client.post(f"/v1/models/{TTS_MODEL}").status_code == 201
        assert client.post("/v1/models/someone/not-a-model").status_code == 404

        model = client.get(f"/v1/models/{TTS_MODEL}").json()
        assert model["object"] == "model"
        assert model["task"] == "text-to-speech"
        assert [voice["id"] for voice in model["voices"]] == ["joe"]
        listing = client.get("/v1/models").json()
        assert listing["object"] == "list"
        assert {m["id"] for m in listing["data"]} == {STT_MODEL, TTS_MODEL}
        asr = client.get("/v1/models", params={"task": "automatic-speech-recognition"})
        assert [m["id"] for m in asr.json()["data"]] == [STT_MODEL]

    with standin_client(MODULE, "--state-dir", str(tmp_path)) as client:
        ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert ids == {STT_MODEL, TTS_MODEL}, "pulled models survive a restart"
        assert client.delete(f"/v1/models/{TTS_MODEL}").status_code == 200
        assert client.get(f"/v1/models/{TTS_MODEL}").status_code == 404


def test_pcm_comes_at_the_voice_rate_unless_a_sample_rate_is_asked(client: httpx.Client) -> None:
    text = "Speech at the right rate sounds right."
    native = speech(client, text)
    assert native.status_code == 200
    assert native.headers["content-type"] == "audio/pcm"
    assert native.content == speech(client, text).content, "synthesis is deterministic"
    duration = len(native.content) / 2 / 22050
    assert 1.0 < duration < 5.0
    for rate in (16000, 24000):
        resampled = speech(client, text, sample_rate=rate).content
        assert len(resampled) % 2 == 0
        assert len(resampled) / 2 / rate == pytest.approx(duration, rel=0.01)


def test_pcm_is_streamed_sentence_by_sentence(client: httpx.Client) -> None:
    text = "This is the first sentence. Here is a second one. And a third to finish."
    body = {"model": TTS_MODEL, "input": text, "voice": "joe", "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        chunks = list(response.iter_raw())
    assert len(chunks) >= 3


def test_round_trip_through_pcm_at_16k(client: httpx.Client) -> None:
    pcm = speech(client, FOX, sample_rate=16000).content
    samples = audio.pad_with_silence(np.frombuffer(pcm, dtype="<i2"), 16000, 0.3, 0.3)
    wav = encode_wav(samples, 16000)
    answer = transcription(client, wav, language="en")
    assert answer.status_code == 200
    assert audio.normalize_words(answer.json()["text"]) == FOX.split()


def test_round_trip_through_wav(client: httpx.Client) -> None:
    wav = speech(client, FOX, response_format="wav", sample_rate=16000)
    assert wav.headers["content-type"] == "audio/wav"
    samples, rate = decode_wav(wav.content)
    assert rate == 16000
    assert 2.0 < samples.size / rate < 4.0
    plain = transcription(client, wav.content, response_format="text")
    assert audio.normalize_words(plain.text) == FOX.split()
    verbose = transcription(client, wav.content, response_format="verbose_json").json()
    assert verbose["language"] == "en"
    assert verbose["duration"] == pytest.approx(samples.size / rate, abs=0.01)
    assert verbose["segments"] and audio.normalize_words(verbose["text"]) == FOX.split()


def test_bad_requests_get_speaches_like_errors(client: httpx.Client) -> None:
    assert speech(client, "Hi.", voice="alloy").status_code == 422
    assert speech(client, "Hi.", response_format="mp3").status_code == 422
    assert speech(client, "Hi.", response_format="opus").status_code == 422
    assert speech(client, "Hi.", speed=9).status_code == 422
    assert speech(client, "   ").status_code == 400
    assert client.post("/v1/audio/speech", json={"input": "Hi."}).status_code == 422
    wav = encode_wav(audio.synthesize("Hi.", 16000), 16000)
    wrong_task = transcription(client, wav, model=TTS_MODEL)
    assert wrong_task.status_code == 404
    assert transcription(client, b"not a wav file").status_code == 415


def test_request_log_shows_the_request_shape(client: httpx.Client) -> None:
    assert client.delete("/_standin/requests").status_code == 204
    speech(client, "Log me.", sample_rate=24000, speed=1.25)
    transcription(client, encode_wav(audio.synthesize("Hi.", 16000), 16000), language="en")
    said, heard = client.get("/_standin/requests").json()
    assert said["path"] == "/v1/audio/speech"
    assert said["content_type"] == "application/json"
    assert (said["model"], said["voice"], said["input"]) == (TTS_MODEL, "joe", "Log me.")
    assert (said["response_format"], said["sample_rate"], said["speed"]) == ("pcm", 24000, 1.25)
    assert heard["path"] == "/v1/audio/transcriptions"
    assert heard["content_type"] == "multipart/form-data"
    assert (heard["model"], heard["language"]) == (STT_MODEL, "en")
    assert sorted(heard["fields"]) == ["file", "language", "model"]


def test_delay_and_death_mid_stream() -> None:
    args = ("--installed-all", "--ttfb-ms", "400", "--fail-speech-after-bytes", "1000")
    body = {"model": TTS_MODEL, "input": FOX, "voice": "joe", "response_format": "pcm"}
    received = b""
    with standin_client(MODULE, *args) as client:
        started = time.monotonic()
        with client.stream("POST", "/v1/audio/speech", json=body) as response:
            assert response.status_code == 200
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                for chunk in response.iter_raw():
                    if not received:
                        first_byte = time.monotonic() - started
                    received += chunk
        assert first_byte >= 0.4
        assert len(received) == 1000


def test_audio_helpers_round_trip_in_process(tmp_path: Path) -> None:
    path = audio.synthesize_wav(FOX, tmp_path / "fox.wav", sample_rate=48000)
    samples, rate = audio.read_wav(path)
    assert rate == 48000
    padded = audio.pad_with_silence(samples, rate, before=0.5, after=0.25)
    assert padded.size == samples.size + 36000
    assert audio.normalize_words(audio.transcribe(path)) == FOX.split()
    assert audio.normalize_words(audio.transcribe(padded.tobytes(), rate)) == FOX.split()
