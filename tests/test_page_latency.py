"""The latency a person hears, measured in the page: from the end of their speech on the local
microphone to the first audible sound of the reply (agent/static/heard-latency.js).

Two ways, both in Debian's Chromium on the agent's own page:
- the detectors alone, on real speech with known edges: Piper sentences and silences laid out
  on two tracks (the microphone, the assistant's voice) and played through the page's own
  audio worklet in an OfflineAudioContext, so every edge and every figure is known to the
  sample;
- a real conversation: the fake microphone says a sentence to the agent and the stand-ins,
  twice, and each reply shows "heard in N ms" beside the agent's own figure, the same number
  as the read-only test hook ``window.voiceAgent.heard``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, Playwright, expect

from tests.audio import pad_with_silence, synthesize, trim_silence, write_wav
from tests.browser import CHROMIUM, chromium, explained, idle_page
from tests.helpers import AgentProcess

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

RATE = 48000
WAIT_MS = 60_000
# Where a detector may place an edge, against where the speech is audible (audible_span):
# 20 ms frames, and the quiet fringes of a word.
TOLERANCE_MS = 60
# Audible: a 10 ms stretch louder than this (int16 RMS 100 ≈ -50 dBFS).
AUDIBLE_RMS = 100.0
AUDIBLE_WINDOW_SECS = 0.01
# A generous bound on the latency heard through the stand-ins on this machine.
PLAUSIBLE_MS = 10_000


@dataclass
class Tracks:
    """The microphone and the assistant's voice, side by side, with every stretch of speech
    laid on them: (start, end) in ms."""

    length_secs: float
    local: np.ndarray = field(init=False)
    remote: np.ndarray = field(init=False)
    local_speech: list[tuple[float, float]] = field(default_factory=list)
    remote_speech: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A whole number of 128-sample render quanta and of 20 ms frames.
        samples = round(self.length_secs * RATE / 3840) * 3840
        self.local = np.zeros(samples, dtype=np.int16)
        self.remote = np.zeros(samples, dtype=np.int16)

    def say(self, side: str, at_secs: float, speech: np.ndarray) -> float:
        """Lay ``speech`` on ``side`` from ``at_secs``; returns where it ends, in seconds."""
        start = round(at_secs * RATE)
        getattr(self, side)[start : start + len(speech)] = speech
        first, last = audible_span(speech)
        getattr(self, f"{side}_speech").append(
            ((start + first) * 1000 / RATE, (start + last) * 1000 / RATE)
        )
        return (start + len(speech)) / RATE


def spoken(text: str) -> np.ndarray:
    return trim_silence(synthesize(text, RATE))


def audible_span(speech: np.ndarray) -> tuple[int, int]:
    """The first and last sample of ``speech`` inside an audible 10 ms window: a stricter
    edge than trim_silence's, which a lone click at the end of a Piper sentence can stretch."""
    window = round(AUDIBLE_WINDOW_SECS * RATE)
    power = np.convolve(speech.astype(np.float64) ** 2, np.ones(window) / window, mode="same")
    audible = np.flatnonzero(power > AUDIBLE_RMS**2)
    return int(audible[0]), int(audible[-1]) + 1


def as_base64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


# Plays both tracks through the page's level worklet and speech detectors, faster than real
# time; resolves once every frame of both has reached the detectors.
OFFLINE_RUN = """async ({ local, remote, rate }) => {
  const { FRAME_MS, loadLevels, watchLevels } = await import("/static/levels.js");
  const { HeardLatency } = await import("/static/heard-latency.js");
  const decode = (text) => {
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    return Float32Array.from(new Int16Array(bytes.buffer), (v) => v / 32768);
  };
  const tracks = { local: decode(local), remote: decode(remote) };
  const length = tracks.local.length;
  const context = new OfflineAudioContext(1, length, rate);
  await loadLevels(context);
  const latency = new HeardLatency();
  const frames = 2 * Math.floor(length / Math.round((FRAME_MS / 1000) * rate));
  let arrived = 0;
  let allArrived;
  const done = new Promise((resolve) => { allArrived = resolve; });
  for (const side of ["local", "remote"]) {
    const buffer = context.createBuffer(1, length, rate);
    buffer.copyToChannel(tracks[side], 0);
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.start(0);
    watchLevels(context, source, (frame) => {
      latency[side].push(frame);
      arrived += 1;
      if (arrived === frames) allArrived();
    });
  }
  await context.startRendering();
  await done;
  const segments = (side) => latency[side].segments;
  return { heard: latency.measurements, local: segments("local"), remote: segments("remote") };
}"""


@pytest.fixture
def page(agent: AgentProcess, playwright: Playwright, tmp_path: Path) -> Iterator[Page]:
    with idle_page(agent.base_url, playwright, tmp_path / "profile") as loaded:
        yield loaded


def run_offline(page: Page, tracks: Tracks) -> dict:
    return page.evaluate(
        OFFLINE_RUN,
        {"local": as_base64(tracks.local), "remote": as_base64(tracks.remote), "rate": RATE},
    )


def assert_edges_placed(found: list[dict], laid: list[tuple[float, float]]) -> None:
    assert len(found) == len(laid), f"found {found}, laid {laid}"
    for segment, (start, end) in zip(found, laid, strict=True):
        assert segment["end"] is not None
        assert abs(segment["start"] - start) <= TOLERANCE_MS, (segment, start)
        assert abs(segment["end"] - end) <= TOLERANCE_MS, (segment, end)


def test_speech_edges_and_replies_on_real_speech(page: Page) -> None:
    tracks = Tracks(length_secs=22.0)
    question = spoken("What is the weather like in Paris today")
    # No comma or colon: Piper pauses at one long enough to be a gap in the speech.
    answer = spoken("You said what is the weather like in Paris today")

    # An answered turn: the reply starts 700 ms after the speech ends.
    end = tracks.say("local", 0.5, question)
    end = tracks.say("remote", end + 0.7, answer)
    # No reply, to a sentence with a 700 ms pause in the middle: two stretches of speech.
    end = tracks.say("local", end + 1.0, spoken("Set a timer for"))
    end = tracks.say("local", end + 0.7, spoken("ten minutes."))
    # The assistant talks over the person and goes on after they stop: nothing it says
    # next, even after a gap, answers that moment.
    said = tracks.say("local", end + 1.5, question)
    over = tracks.say("remote", said - 1.2, answer)
    assert over > said + 0.2
    end = tracks.say("remote", over + 0.3, spoken("Anything else?"))
    # Barge-in: the assistant starts while the person speaks and stops (interrupted); the
    # real reply comes 150 ms after the speech ends, before the person's silence is long
    # enough to call the speech over.
    start = end + 1.5
    said = tracks.say("local", start, question)
    tracks.say("remote", start + 0.4, spoken("Sure")[: round(0.3 * RATE)])
    tracks.say("remote", said + 0.15, answer)
    assert said + 0.15 + len(answer) / RATE < tracks.length_secs

    found = run_offline(page, tracks)
    print(f"heard: {found['heard']}")
    print(f"microphone: laid {tracks.local_speech}, found {found['local']}")
    print(f"assistant: laid {tracks.remote_speech}, found {found['remote']}")
    assert_edges_placed(found["local"], tracks.local_speech)
    assert_edges_placed(found["remote"], tracks.remote_speech)

    local, remote = tracks.local_speech, tracks.remote_speech
    expected = [remote[0][0] - local[0][1], remote[4][0] - local[4][1]]  # ≈ 700 and 150 ms
    heard = [m["ms"] for m in found["heard"]]
    assert len(heard) == len(expected), heard
    for ms, want in zip(heard, expected, strict=True):
        assert abs(ms - want) <= TOLERANCE_MS, (heard, expected)
    assert found["heard"][0]["speechEnd"] == found["local"][0]["end"]
    assert found["heard"][1]["replyStart"] == found["remote"][4]["start"]


def test_silence_and_a_click_are_not_speech(page: Page) -> None:
    tracks = Tracks(length_secs=4.0)
    click = np.full(round(0.04 * RATE), 8000, dtype=np.int16)  # loud, but only 40 ms
    tracks.local[RATE : RATE + len(click)] = click
    hiss = np.random.default_rng(7).normal(0, 60, len(tracks.remote)).astype(np.int16)
    tracks.remote[:] = hiss  # -55 dBFS of noise: quieter than any voice
    # and a click in the assistant's voice, one 20 ms frame long
    tracks.remote[2 * RATE : 2 * RATE + len(click) // 2] = click[: len(click) // 2]
    found = run_offline(page, tracks)
    assert found == {"heard": [], "local": [], "remote": []}


# --- a real conversation --------------------------------------------------------------------

SENTENCE = "Please turn on the kitchen lights"
# The fake microphone loops: a pause for the greeting (≈ 3.6 s of speech after connecting),
# the sentence, and a pause that outlasts the reply; then the same again, a second turn.
SILENCE_BEFORE_SECS = 7.5
SILENCE_AFTER_SECS = 6.0


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples = pad_with_silence(
        synthesize(SENTENCE, RATE), RATE, SILENCE_BEFORE_SECS, SILENCE_AFTER_SECS
    )
    return write_wav(tmp_path_factory.mktemp("microphone") / "speech-48k.wav", samples, RATE)


def formatted(ms: int) -> str:
    """A whole number of ms as the page writes it."""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def test_each_reply_shows_the_latency_heard(
    agent: AgentProcess, microphone_wav: Path, playwright: Playwright, tmp_path: Path, artifacts
) -> None:
    turns_before = len(agent.log_events("turn"))
    with chromium(playwright, tmp_path / "profile", microphone_wav) as context:
        page = context.pages[0]
        page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))
        page.goto(agent.base_url)
        with explained(page, artifacts, "page-latency"):
            page.click("#start")
            page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
            greeting = page.locator("#transcript .entry.bot").first
            expect(greeting.locator(".text")).to_contain_text("Hello", timeout=WAIT_MS)

            replies = page.locator("#transcript .entry.user ~ .entry.bot")
            for turn in range(2):
                reply = replies.nth(turn)
                expect(reply.locator(".text")).to_contain_text("kitchen", timeout=WAIT_MS)
                expect(reply).to_have_attribute("data-latency-source", "server", timeout=WAIT_MS)
                expect(reply).to_have_attribute("data-heard-ms", re.compile(r"^\d+$"))
            agent.wait_for_log("turn", count=turns_before + 2)

            measured = page.evaluate("window.voiceAgent.heard")
            logged = agent.log_events("turn")[turns_before:]
            sent_by_turn = {
                event["data"]["turn"]: event["data"]
                for event in page.evaluate("window.voiceAgent.events")
                if event["type"] == "server-message" and event["data"].get("type") == "turn-latency"
            }
            page.screenshot(path=artifacts / "page-latency.png")
            for turn in range(2):
                reply = replies.nth(turn)
                agent_ms = int(reply.get_attribute("data-latency-ms") or "")
                heard_ms = int(reply.get_attribute("data-heard-ms") or "")
                print(
                    f"turn {turn + 1}: agent {agent_ms} ms {logged[turn]['parts_ms']}, "
                    f"heard {heard_ms} ms; {reply.locator('.heard').get_attribute('title')!r}"
                )
                assert agent_ms == logged[turn]["latency_ms"]
                assert heard_ms == round(measured[turn]["ms"])
                assert agent_ms < heard_ms < PLAUSIBLE_MS
                assert measured[turn]["speechEnd"] < measured[turn]["replyStart"]
                expect(reply.locator(".heard")).to_have_text(re.compile(r"^heard in \d"))
                expect(reply.locator(".heard")).to_have_attribute(
                    "title",
                    re.compile(rf"{formatted(heard_ms - agent_ms)} more than the appliance"),
                )
                # The agent's breakdown, in so far as the server sent one with its figure.
                parts = sent_by_turn[logged[turn]["turn"]].get("parts_ms", {})
                title = reply.locator(".latency").get_attribute("title") or ""
                assert len(title.splitlines()) == 1 + len(parts), title
                for ms in parts.values():
                    assert f": {formatted(ms)}" in title
            # The greeting answers nothing, so nothing was heard for it.
            assert greeting.get_attribute("data-heard-ms") is None
            assert len(measured) >= 2

            page.click("#start")
            expect(page.locator("#status")).to_have_text("Disconnected")


# What a turn-latency message with Pipecat's breakdown (the keys of LatencyBreakdown) shows,
# through the page's own Conversation and Transcript on a list of their own.
BREAKDOWN_RUN = """async ({ parts, agentMs, heardMs }) => {
  const { Conversation } = await import("/static/conversation.js");
  const { Transcript } = await import("/static/transcript.js");
  const list = document.createElement("ol");
  const empty = document.createElement("p");
  document.body.append(list, empty);
  const transcript = new Transcript(list, empty);
  const conversation = new Conversation(transcript, { problem() {}, spoke() {}, fatal() {} });
  for (const [type, data] of [
    ["user-started-speaking", {}],
    ["user-input", { text: "Turn on the lights.", final: true }],
    ["user-stopped-speaking", {}],
    ["bot-started-speaking", {}],
    ["server-message", { type: "turn-latency", turn: 1, ms: agentMs, parts_ms: parts }],
  ]) conversation.handle({ type, data });
  transcript.setHeardLatency(heardMs);
  conversation.end();
  const reply = list.querySelector(".entry.bot");
  const result = {
    latency: reply.querySelector(".latency").textContent,
    latencyTitle: reply.querySelector(".latency").title,
    heard: reply.querySelector(".heard").textContent,
    heardTitle: reply.querySelector(".heard").title,
    order: [...reply.children].map((child) => child.className),
  };
  list.remove();
  empty.remove();
  return result;
}"""


def test_the_agent_breakdown_and_the_heard_figure_side_by_side(page: Page) -> None:
    parts = {"endpointing_wait": 200, "transcription": 529, "speech_synthesis": 272}
    agent_ms = sum(parts.values())
    shown = page.evaluate(
        BREAKDOWN_RUN, {"parts": parts, "agentMs": agent_ms, "heardMs": agent_ms + 290}
    )
    print(shown)
    assert shown["latency"] == f"replied in {formatted(agent_ms)}"
    assert shown["heard"] == f"heard in {formatted(agent_ms + 290)}"
    assert shown["order"][:3] == ["who", "latency", "heard"]
    lines = shown["latencyTitle"].splitlines()
    assert "measured by the appliance" in lines[0]
    assert [line.strip() for line in lines[1:]] == [
        "waiting for your speech to stop: 200 ms",
        "transcription: 529 ms",
        "speech synthesis: 272 ms",
    ]
    assert "290 ms more than the appliance measured" in shown["heardTitle"]
