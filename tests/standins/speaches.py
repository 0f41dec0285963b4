"""A stand-in for Speaches v0.8.3 that speaks its HTTP protocol on real, bundled engines.

Run from the repository root::

    python -m tests.standins.speaches --port 0 --installed-all

It prints one line ``LISTENING http://127.0.0.1:PORT`` once it accepts connections.

Real engines are the default. For benchmarks that imitate a backend's speed without paying
for the engines, ``--stt-fixed-text TEXT`` answers every transcription with TEXT (no
Whisper) after ``--stt-delay-ms``, and ``--tts-cache`` synthesises each distinct request
once and replays its PCM afterwards, first bytes after ``--tts-delay-ms``. For tests about
what happens around speech, ``--tts-tone`` speaks a tone as long as Piper would take.

Status codes and error bodies follow Speaches v0.8.3's routers (``{"detail": ...}``);
places where the stand-in differs on purpose are marked "stand-in:".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from tests.standins import engines
from tests.standins.process import serve as serve_app

STT_MODEL = "Systran/faster-whisper-tiny.en"
TTS_MODEL = "speaches-ai/piper-en_US-joe-medium"
CATALOGUE: dict[str, dict[str, Any]] = {
    STT_MODEL: {"language": ["en"], "task": "automatic-speech-recognition"},
    TTS_MODEL: {
        "language": ["en"],
        "task": "text-to-speech",
        "sample_rate": 22050,
        "voices": [{"name": "joe", "language": "en", "id": "joe"}],
    },
}
TASKS = ("automatic-speech-recognition", "text-to-speech")
SPEECH_FORMATS = ("mp3", "flac", "wav", "pcm")  # accepted by Speaches' request model
STT_FORMATS = ("text", "json", "verbose_json", "srt", "vtt")
MIN_RATE, MAX_RATE = 8000, 48000

_entry: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("standin_entry")


def error(status: int, detail: Any) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


def invalid(field: str, message: str) -> web.Response:
    """A 422 shaped like FastAPI's request-validation errors."""
    return error(422, [{"type": "value_error", "loc": ["body", field], "msg": message}])


def not_installed(model_id: str) -> web.Response:
    return error(
        404,
        f"Model '{model_id}' is not installed locally. "
        "You can download the model using `POST /v1/models`",
    )


def not_supported(model_id: str) -> web.Response:
    return error(
        404,
        f"Model '{model_id}' is not supported. "
        "If you think this is a mistake, please open an issue.",
    )


class ModelStore:
    """Installed models (id → install time), optionally persisted to ``state_dir``."""

    def __init__(self, installed: Iterable[str], state_dir: Path | None = None) -> None:
        self._file = state_dir / "speaches-standin.json" if state_dir else None
        self._installed: dict[str, int] = {}
        if self._file and self._file.exists():
            saved = json.loads(self._file.read_text())
            self._installed = {k: int(v) for k, v in saved.items() if k in CATALOGUE}
        for model_id in installed:
            if model_id not in CATALOGUE:
                raise ValueError(f"the stand-in cannot provide {model_id!r}")
            self._installed.setdefault(model_id, int(time.time()))
        self._save()

    def _save(self) -> None:
        if self._file:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            self._file.write_text(json.dumps(self._installed, indent=1))

    def has(self, model_id: str) -> bool:
        return model_id in self._installed

    def describe(self, model_id: str) -> dict[str, Any]:
        """The model object, with fields in Speaches' order."""
        info = CATALOGUE[model_id]
        return {
            "id": model_id,
            "created": self._installed.get(model_id, 0),
            "object": "model",
            "owned_by": model_id.split("/")[0],
            **info,
        }

    def listing(self, task: str | None = None) -> list[dict[str, Any]]:
        return [
            self.describe(m)
            for m in self._installed
            if task is None or CATALOGUE[m]["task"] == task
        ]

    def install(self, model_id: str) -> None:
        self._installed[model_id] = int(time.time())
        self._save()

    def remove(self, model_id: str) -> bool:
        found = self._installed.pop(model_id, None) is not None
        self._save()
        return found


@dataclass(frozen=True)
class Options:
    """How the stand-in behaves beyond the protocol: its speed and its faults."""

    pull_seconds: float = 0.0
    ttfb_ms: float = 0.0  # the default of both delays below
    stt_delay_ms: float | None = None
    tts_delay_ms: float | None = None
    stt_fixed_text: str | None = None
    tts_cache: bool = False
    # Speech as a tone as long as Piper would take to say the text: for tests about what
    # happens around speech, where synthesising every reply would only cost time.
    tts_tone: bool = False
    fail_speech_after_bytes: int | None = None
    # As the real one on a CPU: a transcription starts only when the one before has ended.
    stt_serial: bool = False
    # No route to the model hub: every download fails as Speaches 0.8.3's does then.
    offline: bool = False


class SpeachesStandin:
    def __init__(self, store: ModelStore, options: Options) -> None:
        self.store = store
        self.pull_seconds = options.pull_seconds
        stt_delay_ms, tts_delay_ms = options.stt_delay_ms, options.tts_delay_ms
        self.stt_delay = (options.ttfb_ms if stt_delay_ms is None else stt_delay_ms) / 1000.0
        self.tts_delay = (options.ttfb_ms if tts_delay_ms is None else tts_delay_ms) / 1000.0
        self.stt_fixed_text = options.stt_fixed_text
        # (text, speed, rate) → the PCM pieces a finished synthesis produced; None = no cache
        self.speech_cache: dict[tuple[str, float, int | None], list[bytes]] | None = (
            {} if options.tts_cache else None
        )
        self.tts_tone = options.tts_tone
        self.fail_after = options.fail_speech_after_bytes
        self.offline = options.offline
        self.requests: list[dict[str, Any]] = []
        self._pull_lock = asyncio.Lock()
        self._stt_turn = asyncio.Lock() if options.stt_serial else contextlib.nullcontext()

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_standin/"):
            entry = {"method": request.method, "path": request.path}
            entry["content_type"] = request.content_type if request.body_exists else None
            self.requests.append(entry)
            _entry.set(entry)
        return await handler(request)

    @staticmethod
    def note(**fields: Any) -> None:
        entry = _entry.get(None)
        if entry is not None:
            entry.update(fields)

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def list_models(self, request: web.Request) -> web.Response:
        task = request.query.get("task")
        if task is not None and task not in TASKS:
            return error(422, [{"type": "literal_error", "loc": ["query", "task"]}])
        return web.json_response({"data": self.store.listing(task), "object": "list"})

    async def get_model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if not self.store.has(model_id):
            return error(404, f"Model '{model_id}' not found")
        return web.json_response(self.store.describe(model_id))

    async def pull_model(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["model_id"]
        if self.offline:
            return await hub_unreachable(request)
        if model_id not in CATALOGUE:
            return error(404, f"Model '{model_id}' not found")
        async with self._pull_lock:  # a second pull of the same model waits, then finds it
            if self.store.has(model_id):
                return web.Response(status=201, text=f"Model '{model_id}' already exists")
            await asyncio.sleep(self.pull_seconds)
            self.store.install(model_id)
        return web.Response(status=200, text=f"Model '{model_id}' downloaded")

    async def delete_model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if not self.store.remove(model_id):
            return error(404, f"Model '{model_id}' not found")
        return web.json_response({"detail": f"Model '{model_id}' deleted"})

    async def transcriptions(self, request: web.Request) -> web.Response:
        if request.content_type != "multipart/form-data":
            return invalid("file", "Field required")
        form = await request.post()
        fmt = str(form.get("response_format", "json"))
        model_id = str(form.get("model", ""))
        self.note(
            fields=list(form.keys()),
            model=form.get("model"),
            language=form.get("language"),
            response_format=form.get("response_format"),
        )
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return invalid("file", "Field required")
        if not model_id:
            return invalid("model", "Field required")
        if fmt not in STT_FORMATS:
            return invalid("response_format", f"Input should be one of {STT_FORMATS}")
        if fmt in ("srt", "vtt") or str(form.get("stream", "false")).lower() == "true":
            return invalid("response_format", "stand-in: srt, vtt and stream are not implemented")
        try:
            samples, rate = engines.decode_wav(upload.file.read())
        except ValueError:  # stand-in: only PCM WAV; Speaches decodes anything ffmpeg can
            return error(415, "Failed to decode audio. The provided file type is not supported.")
        if samples.size == 0:
            return error(400, "Failed to decode audio. The provided file is likely empty.")
        if not self.store.has(model_id):
            return not_installed(model_id)
        if CATALOGUE[model_id]["task"] != "automatic-speech-recognition":
            return not_supported(model_id)
        async with self._stt_turn:
            if self.stt_fixed_text is not None:  # stand-in: a speed class without the engine
                await asyncio.sleep(self.stt_delay)
                text = self.stt_fixed_text
                duration = samples.size / rate
                segments = [fixed_segment(text, duration)]
                language = "en"
            else:
                loop = asyncio.get_running_loop()
                found, info = await loop.run_in_executor(None, transcribe, samples, rate)
                await asyncio.sleep(self.stt_delay)
                text = "".join(s.text for s in found).strip()
                segments = [segment_fields(s) for s in found]
                language, duration = info.language, info.duration
        if fmt == "text":
            return web.Response(text=text)
        if fmt == "json":
            return web.json_response({"text": text})
        return web.json_response(verbose_json(text, segments, language, duration))

    async def speech(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return invalid("body", "JSON decode error")
        self.note(**{k: body.get(k) for k in ("model", "voice", "response_format", "speed")})
        self.note(sample_rate=body.get("sample_rate"), input=body.get("input"))
        for field in ("model", "input", "voice"):
            if not isinstance(body.get(field), str):
                return invalid(field, "Field required")
        fmt, speed, rate = body.get("response_format", "mp3"), body.get("speed", 1.0), None
        if fmt not in SPEECH_FORMATS:
            return invalid("response_format", f"Input should be one of {SPEECH_FORMATS}")
        if not isinstance(speed, int | float):
            return invalid("speed", "Input should be a valid number")
        if body.get("sample_rate") is not None:
            rate = body["sample_rate"]
            if not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
                return invalid("sample_rate", f"Input should be from {MIN_RATE} to {MAX_RATE}")
        model_id = body["model"]
        if not self.store.has(model_id):
            return not_installed(model_id)
        if CATALOGUE[model_id]["task"] != "text-to-speech":
            return not_supported(model_id)
        if not 0.25 <= speed <= 4.0:
            return error(422, f"Speed must be between 0.25 and 4.0, got {speed}")
        if fmt not in ("pcm", "wav"):
            # stand-in: no mp3/flac encoder here; real Speaches answers 200 with encoded audio.
            return error(422, f"stand-in: response_format '{fmt}' is not implemented")
        voices = [v["id"] for v in CATALOGUE[model_id]["voices"]]
        if body["voice"] not in voices:
            # stand-in: v0.8.3 ignores the voice for Piper models (Kokoro answers 422 like this).
            return error(422, f"Voice '{body['voice']}' is not supported. Supported: {voices}")
        if not body["input"].strip():
            return error(400, "stand-in: input is empty")  # v0.8.3 would answer 200, no audio
        return await self._stream(request, body["input"], float(speed), rate, fmt)

    async def _stream(
        self, request: web.Request, text: str, speed: float, rate: int | None, fmt: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": f"audio/{fmt}"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await asyncio.sleep(self.tts_delay)
        chunks = self._speech_pcm(text, speed, rate)
        if fmt == "wav":  # like Speaches: a file format with a header is sent whole
            pcm = b"".join([c async for c in chunks])
            voice_rate = await asyncio.get_running_loop().run_in_executor(None, engines.piper_rate)
            wav = engines.encode_wav(np.frombuffer(pcm, dtype="<i2"), rate or voice_rate)
            chunks = single(wav)
        sent = 0
        try:
            async for chunk in chunks:
                if self.fail_after is not None and sent + len(chunk) > self.fail_after:
                    await response.write(chunk[: self.fail_after - sent])
                    # A backend dying mid-stream: no terminating chunk, the socket just closes.
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
        except ConnectionError:  # the client went away: stop synthesising
            pass
        return response

    async def _speech_pcm(self, text: str, speed: float, rate: int | None) -> AsyncIterator[bytes]:
        """Piper's PCM as it is made, or, with the cache, a finished synthesis replayed."""
        if self.tts_tone:
            yield tone_pcm(text, speed, rate or TONE_RATE)
            return
        if self.speech_cache is None:
            async for chunk in sentences_pcm(text, speed, rate):
                yield chunk
            return
        key = (text, speed, rate)
        cached = self.speech_cache.get(key)
        self.note(tts_cache="miss" if cached is None else "hit")
        if cached is not None:
            for chunk in cached:
                yield chunk
            return
        made: list[bytes] = []
        async for chunk in sentences_pcm(text, speed, rate):
            made.append(chunk)
            yield chunk
        self.speech_cache[key] = made  # only a synthesis that ran to its end is kept

    async def requests_log(self, _: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def clear_requests_log(self, _: web.Request) -> web.Response:
        self.requests.clear()
        return web.Response(status=204)


async def hub_unreachable(request: web.Request) -> web.StreamResponse:
    """Speaches 0.8.3 asks the model hub first: offline, the exception becomes uvicorn's
    plain-text 500, and the server closes the connection without saying so beforehand."""
    response = web.Response(status=500, text="Internal Server Error")
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response


async def single(data: bytes) -> AsyncIterator[bytes]:
    yield data


TONE_RATE = 22_050  # the Piper voice's own rate
TONE_SECS_PER_CHAR = 0.055  # the Piper voice at speed 1: the greeting's 65 in 3.6 s


def tone_pcm(text: str, speed: float, rate: int) -> bytes:
    """s16le PCM of a 220 Hz tone, at a voice's level, for as long as Piper says ``text``."""
    samples = np.arange(round(len(text) * TONE_SECS_PER_CHAR / speed * rate))
    return (np.sin(2 * np.pi * 220 * samples / rate) * 8000).astype("<i2").tobytes()


async def sentences_pcm(text: str, speed: float, rate: int | None) -> AsyncIterator[bytes]:
    """s16le PCM, one piece per sentence, synthesised in a worker thread as it is asked for."""
    loop = asyncio.get_running_loop()
    voice_rate = await loop.run_in_executor(None, engines.piper_rate)
    chunks: Iterator[np.ndarray] = engines.synthesize_chunks(text, speed)

    def next_pcm() -> bytes | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        resampled = engines.resample(chunk, voice_rate, rate or voice_rate)
        return engines.float_to_int16(resampled).tobytes()

    while (pcm := await loop.run_in_executor(None, next_pcm)) is not None:
        yield pcm


def transcribe(samples: np.ndarray, rate: int) -> tuple[list[Any], Any]:
    return engines.transcribe_16k(engines.resample(samples, rate, engines.WHISPER_RATE))


SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "tokens", "avg_logprob")
SEGMENT_KEYS += ("compression_ratio", "no_speech_prob")


def segment_fields(segment: Any) -> dict[str, Any]:
    """A faster-whisper segment as Speaches' verbose_json writes it."""
    fields = {k: getattr(segment, k) for k in SEGMENT_KEYS}
    return {**fields, "temperature": segment.temperature or 0, "words": None}


def fixed_segment(text: str, duration: float) -> dict[str, Any]:
    """One segment covering the whole clip, for ``--stt-fixed-text``."""
    fields = {"id": 1, "seek": 0, "start": 0.0, "end": round(duration, 3), "text": f" {text}"}
    fields |= {"tokens": [], "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.0}
    return {**fields, "temperature": 0, "words": None}


def verbose_json(
    text: str, segments: list[dict[str, Any]], language: str, duration: float
) -> dict[str, Any]:
    return {
        "task": "transcribe",
        "language": language,
        "duration": duration,
        "text": text,
        "words": None,
        "segments": segments,
    }


def build_app(
    installed: Iterable[str] = (), *, state_dir: Path | None = None, **options: Any
) -> web.Application:
    """The stand-in as an aiohttp app; keyword ``options`` are the fields of `Options`."""
    standin = SpeachesStandin(ModelStore(installed, state_dir), Options(**options))
    app = web.Application(middlewares=[standin.record], client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", standin.health)
    app.router.add_get("/v1/models", standin.list_models)
    app.router.add_get("/v1/models/{model_id:.+}", standin.get_model)
    app.router.add_post("/v1/models/{model_id:.+}", standin.pull_model)
    app.router.add_delete("/v1/models/{model_id:.+}", standin.delete_model)
    app.router.add_post("/v1/audio/transcriptions", standin.transcriptions)
    app.router.add_post("/v1/audio/speech", standin.speech)
    app.router.add_get("/_standin/requests", standin.requests_log)
    app.router.add_delete("/_standin/requests", standin.clear_requests_log)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--installed", action="append", default=[], metavar="MODEL_ID")
    parser.add_argument("--installed-all", action="store_true")
    parser.add_argument("--state-dir", type=Path, help="keep 'downloaded' models across restarts")
    parser.add_argument("--pull-seconds", type=float, default=0.0)
    parser.add_argument(
        "--ttfb-ms", type=float, default=0.0, help="default of --stt-delay-ms and --tts-delay-ms"
    )
    parser.add_argument(
        "--stt-delay-ms", type=float, help="wait after transcribing, before answering"
    )
    parser.add_argument("--tts-delay-ms", type=float, help="wait before the first speech bytes")
    parser.add_argument(
        "--stt-fixed-text",
        metavar="TEXT",
        help="answer every transcription with TEXT, without running Whisper",
    )
    parser.add_argument(
        "--tts-cache",
        action="store_true",
        help="synthesise each distinct (input, speed, sample_rate) once, then replay its PCM",
    )
    parser.add_argument(
        "--tts-tone", action="store_true", help="speak a tone as long as the text, not Piper"
    )
    parser.add_argument("--fail-speech-after-bytes", type=int)
    parser.add_argument(
        "--stt-serial", action="store_true", help="transcribe one request at a time"
    )
    parser.add_argument(
        "--offline", action="store_true", help="every model download fails: no model hub"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="load the engines before listening (Piper only with --stt-fixed-text)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    app = build_app(
        list(CATALOGUE) if args.installed_all else args.installed,
        state_dir=args.state_dir,
        **{option.name: getattr(args, option.name) for option in fields(Options)},
    )
    loop = asyncio.get_running_loop()
    if args.warm:
        loaders = [engines.piper]
        if args.stt_fixed_text is None:
            loaders.append(engines.whisper)
        await asyncio.gather(*(loop.run_in_executor(None, load) for load in loaders))
    access_log = logging.getLogger("aiohttp.access")  # shown with --verbose
    await serve_app(app, args.host, args.port, shutdown_secs=2.0, access_log=access_log)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="speaches-standin %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
