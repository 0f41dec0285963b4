"""Hostile input: whatever arrives over HTTP, the agent answers a 4xx in words (503 only when
it is full or not ready, 429 when one device starts too many conversations), never a 5xx,
never crashes, and holds a spoken conversation afterwards.

One agent takes over ten thousand generated requests, sent fast and many at once: invalid
JSON, wrong types, deep nesting, huge bodies, broken and absurd SDP, candidates for live,
closed and unknown conversations, odd methods and paths, and bytes that are not HTTP at
all (on raw sockets), while a conversation stays open through it all. The status codes
are counted, printed (run with -s) and written to test-artifacts/hostile-input-statuses.json.
The offer and candidate checks and the rate limit are also tested on their own, without
an agent.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio
from aiortc.sdp import SessionDescription, candidate_from_sdp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.rate_limit import WINDOW_SECS, NewSessionLimit, client_address
from agent.sdp_check import candidate_problem, offer_problem
from tests.helpers import REPO_ROOT, AgentProcess, agent_env, run_agent, wait_until
from tests.helpers import active_sessions as sync_active_sessions
from tests.test_voice_roundtrip import contains_in_order, speak_and_hear
from tests.test_workers import answered
from tests.webrtc_client import VoiceClient, browser_like_offer, loopback_only

HOSTILE_ENV = {
    "WORKERS": "1",
    "MAX_SESSIONS": "3",
    # An offer that passes every check but never connects frees its slot soon.
    "WEBRTC_CONNECT_TIMEOUT_SECS": "2",
    # The fuzz starts far more conversations than any person; the limit has its own test.
    "NEW_SESSIONS_PER_MINUTE": "100000",
}
MAX_BODY = 256 * 1024
SERVICE_REFUSALS = {"full", "busy", "unavailable"}
OFFER = "/api/offer"
PAGES = ["/", "/api/config", "/health", "/metrics"]
STATIC_FILES = sorted(path.name for path in (REPO_ROOT / "agent" / "static").iterdir())
HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


# --- what the agent must answer -------------------------------------------------------------


@dataclass
class Tally:
    """Every generated request's answer, by status code, and how many each test sent."""

    statuses: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    by_test: dict[str, Counter[str]] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)  # raw requests, as sent

    def record(self, test: str, status: int | str) -> None:
        self.statuses[str(status)] += 1
        self.sent[test] += 1
        self.by_test.setdefault(test, Counter())[str(status)] += 1


@pytest.fixture(scope="module")
def tally(artifacts) -> Iterator[Tally]:
    counted = Tally()
    yield counted
    figures = {
        "requests": sum(counted.statuses.values()),
        "statuses": dict(sorted(counted.statuses.items())),
        "by_test": {test: dict(sorted(seen.items())) for test, seen in counted.by_test.items()},
        "raw_requests_left_unanswered": counted.unanswered,
    }
    (artifacts / "hostile-input-statuses.json").write_text(json.dumps(figures, indent=2))
    print(f"\nhostile input: {figures['requests']} requests; status codes {figures['statuses']}")


def judge(method: str, response: httpx.Response) -> dict | None:
    """The rule for every answer; returns the JSON error, if it is one."""
    status = response.status_code
    body = None
    if status >= 400 and method != "HEAD":
        assert response.headers.get("content-type", "").startswith("application/json"), (
            status,
            response.text[:200],
        )
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"].strip(), body
        assert isinstance(body.get("code"), str) and body["code"], body
        assert "Traceback" not in response.text and "Exception" not in response.text
        if status == 503:
            assert body["code"] in SERVICE_REFUSALS, body
        if status == 429:
            assert body["code"] == "rate", body
    assert status < 500 or status == 503, (status, response.text[:300])
    return body


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    chunked: bool = False


async def send(http: httpx.AsyncClient, call: Call) -> httpx.Response:
    content = call.body
    if call.chunked and content is not None:
        content = _chunks(content)
    return await http.request(call.method, call.path, content=content, headers=call.headers)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


async def send_all(
    http: httpx.AsyncClient, calls: list[Call], tally: Tally, test: str
) -> list[httpx.Response]:
    """Send every call at once; each answer must follow the rule."""
    responses = await asyncio.gather(*(send(http, call) for call in calls))
    for call, response in zip(calls, responses, strict=True):
        judge(call.method, response)
        tally.record(test, response.status_code)
    return responses


# --- the agent, its open conversation, offers to break --------------------------------------


@pytest.fixture(scope="module")
def hostile(speaches_url: str, ollama_url: str) -> Iterator[AgentProcess]:
    with run_agent(agent_env(speaches_url, ollama_url, **HOSTILE_ENV)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(hostile: AgentProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hostile.base_url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(hostile: AgentProcess) -> AsyncIterator[VoiceClient]:
    """A conversation that stays open while everything else is thrown at the agent."""
    loopback_only()
    client = VoiceClient(hostile.base_url)
    await client.connect()
    await client.wait_connected()
    await client.wait_for_message(lambda m: m.get("type") == "bot-stopped-speaking", timeout=30)
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def closed_pc_id(hostile: AgentProcess, http: httpx.AsyncClient) -> str:
    """The id of a conversation that has ended."""
    loopback_only()
    client = VoiceClient(hostile.base_url)
    await client.connect()
    await client.wait_connected()
    await client.close()

    async def ended() -> bool:
        patch = {"pc_id": client.pc_id, "candidates": []}
        return (await http.patch(OFFER, json=patch)).status_code == 404

    deadline = time.monotonic() + 20
    while not await ended():
        assert time.monotonic() < deadline, "the closed conversation did not end"
        await asyncio.sleep(0.1)  # polling the agent, a separate process
    return client.pc_id


async def real_offers() -> list[str]:
    """Offers as aiortc makes them: audio alone, with the data channel, and with video."""
    return [
        await browser_like_offer(data_channel=channel, video=video)
        for channel, video in ((True, None), (False, None), (True, "recvonly"))
    ]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def offers() -> list[str]:
    return [*await real_offers(), CHROME_OFFER, FIREFOX_OFFER]


# Offers shaped like those of Chromium and Firefox (written for these tests; values made up).
FINGERPRINT = ":".join(f"{byte:02X}" for byte in range(32))
CHROME_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS ",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Hx7q",
        "a=ice-pwd:u2XqvW9pRyT0aBcDeFgHiJkL",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=sendrecv",
        "a=msid:- 6f1c2a7e-9b3d-4c55-8e21-0a9d3f4b5c6d",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
        "a=ssrc:2718281828 cname:Q2xpZW50TmFtZQ==",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:Hx7q",
        "a=ice-pwd:u2XqvW9pRyT0aBcDeFgHiJkL",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:1",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
        "",
    ]
)
FIREFOX_OFFER = "\r\n".join(
    [
        "v=0",
        "o=mozilla...THIS_IS_SDPARTA-128.0 1715221830938271837 0 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=group:BUNDLE 0 1",
        "a=ice-options:trickle",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101",
        "c=IN IP4 0.0.0.0",
        "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1",
        "a=fmtp:101 0-15",
        "a=ice-pwd:0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "a=ice-ufrag:9a8b7c6d",
        "a=mid:0",
        "a=msid:{5c0e6f1a-3b2d-4e8f-9a7b-6c5d4e3f2a1b} {0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d}",
        "a=rtcp-mux",
        "a=rtpmap:109 opus/48000/2",
        "a=rtpmap:9 G722/8000/1",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=setup:actpass",
        "a=ssrc:3141592653 cname:{7e6d5c4b-3a29-1807-f6e5-d4c3b2a19080}",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=sendrecv",
        "a=ice-pwd:0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "a=ice-ufrag:9a8b7c6d",
        "a=mid:1",
        "a=setup:actpass",
        "a=sctp-port:5000",
        "a=max-message-size:1073741823",
        "",
    ]
)


# --- generated requests ---------------------------------------------------------------------

lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.characters(codec=None) | lone_surrogates, max_size=40)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | any_text
offer_keys = st.sampled_from(["sdp", "type", "pc_id", "restart_pc", "candidates"])
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(offer_keys | any_text, inner, max_size=4)
    ),
    max_leaves=10,
)
NESTINGS = {"[": "]", '{"a":': "}", '{"sdp": [': "]}", '{"candidates": [{"candidate": ': "}]}"}


def nested(depth: int, opener: str, closed: bool) -> bytes:
    depth = min(depth, 400_000 // len(opener))  # up to about 400 kB
    inner = "" if opener == "[" else "0"
    return (opener * depth + (inner + NESTINGS[opener] * depth if closed else "")).encode()


def json_bytes(value: object) -> bytes:
    """``value`` as JSON, lone surrogates and all (so the bytes may not even be UTF-8)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def ascii_json(value: object) -> bytes:
    """``value`` as JSON in ASCII: a lone surrogate arrives escaped, and is read as one."""
    return json.dumps(value).encode()


JSON = (("Content-Type", "application/json"),)


json_bodies = st.one_of(
    json_values.map(json_bytes),
    st.dictionaries(offer_keys, json_values, max_size=5).map(json_bytes),
    st.builds(nested, st.integers(1, 120_000), st.sampled_from(sorted(NESTINGS)), st.booleans()),
    st.integers(1, 100_000).map(lambda digits: b'{"sdp": ' + b"7" * digits + b"}"),
    st.sampled_from([b"1e999999", b'{"sdp": -0.0e-99999}', b"NaN", b'{"pc_id": Infinity}']),
    st.binary(max_size=300),
    st.builds(
        lambda cut: json.dumps({"sdp": "v=0\r\n", "type": "offer"}).encode()[:cut],
        st.integers(0, 30),
    ),
    st.binary(max_size=40).map(lambda tail: b"\xef\xbb\xbf{}" + tail),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "application/JSON",
        "application/json; charset=utf-16",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "application/json; charset",
        ";;;",
    ]
)


@st.composite
def json_calls(draw: st.DrawFn) -> Call:
    headers = [("Content-Type", draw(content_types))]
    return Call(draw(st.sampled_from(["POST", "PATCH"])), OFFER, draw(json_bodies), tuple(headers))


@FUZZ
@given(calls=st.lists(json_calls(), min_size=15, max_size=25))
@pytest.mark.asyncio(loop_scope="module")
async def test_any_body_to_the_offer_endpoints_gets_a_4xx_in_words(
    http: httpx.AsyncClient, live: VoiceClient, tally: Tally, calls: list[Call]
) -> None:
    for call, response in zip(calls, await send_all(http, calls, tally, "json"), strict=True):
        assert response.status_code in (400, 404, 413), (call, response.text)


# Broken offers: what is done to a real offer, and whether it must be refused at once.
REQUIRED = [
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=fingerprint:",
    "a=setup:",
    "a=rtcp-mux",
    "v=0",
    "o=",
    "s=",
    "t=",
]
GARBLED = {
    "a=ice-ufrag:": ["ab", "has space", "ünïcode", "x" * 300, ""],
    "a=ice-pwd:": ["short", "p" * 21, "with spaces in it for sure", "ü" * 24],
    "a=fingerprint:": [
        "sha-256 XY:ZZ",
        "md5 AB:CD:EF",
        "sha-256 " + ":".join(["AB"] * 31),
        "sha-256",
        "sha-256 AB:CD extra",
    ],
    "a=setup:": ["holdconn", "sideways", ""],
}


def without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.splitlines() if not line.startswith(prefix)) + "\r\n"


def garbled(sdp: str, prefix: str, value: str) -> str:
    lines = [prefix + value if line.startswith(prefix) else line for line in sdp.splitlines()]
    return "\r\n".join(lines) + "\r\n"


def without_audio(sdp: str) -> str:
    kept, in_audio = [], False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
        if not in_audio:
            kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def without_codecs_we_speak(sdp: str) -> str:
    lines = []
    for line in sdp.splitlines():
        if line.startswith("m=audio"):
            line = " ".join([*line.split(" ")[:3], "9"])  # G.722 only
        if not re.match(r"a=rtpmap:(?!9 )", line):
            lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def at(sdp: str, fraction: float) -> int:
    return min(len(sdp), int(fraction * len(sdp)))


@dataclass(frozen=True)
class Breakage:
    """Something done to an offer; ``refused``: an offer so broken it must be a 400."""

    name: str
    refused: bool
    apply: object  # a function of the offer's text


fractions = st.floats(0, 1)
must_refuse = st.one_of(
    st.sampled_from(REQUIRED).map(
        lambda prefix: Breakage(f"no {prefix}", True, lambda sdp: without(sdp, prefix))
    ),
    st.sampled_from(sorted(GARBLED)).flatmap(
        lambda prefix: st.sampled_from(GARBLED[prefix]).map(
            lambda value: Breakage(
                f"{prefix}{value[:20]}", True, lambda sdp: garbled(sdp, prefix, value)
            )
        )
    ),
    st.just(Breakage("no audio", True, without_audio)),
    st.just(Breakage("no codec we speak", True, without_codecs_we_speak)),
    st.sampled_from(["RTP/AVP", "UDP/TLS/RTP/SAVPF/X", "TCP/DTLS/RTP/SAVPF"]).map(
        lambda profile: Breakage(
            f"profile {profile}", True, lambda sdp: sdp.replace("UDP/TLS/RTP/SAVPF", profile)
        )
    ),
    st.sampled_from(["abc", "200", "74", "-1", "1.5"]).map(
        lambda pt: Breakage(
            f"payload type {pt}",
            True,
            lambda sdp: re.sub(r"(m=audio \S+ \S+) ", rf"\1 {pt} ", sdp, count=1),
        )
    ),
    st.tuples(fractions, st.sampled_from(["\x00", "\x0b", "\x1c", "\u2028", "\x85", "\ud800"])).map(
        lambda pair: Breakage(
            f"control {pair[1]!r}",
            True,
            lambda sdp: sdp[: at(sdp, pair[0])] + pair[1] + sdp[at(sdp, pair[0]) :],
        )
    ),
    st.sampled_from(["v=1", " v=0", "\ufeffv=0", "V=0", "v=00"]).map(
        lambda first: Breakage(f"first {first!r}", True, lambda sdp: first + sdp[3:])
    ),
    st.tuples(fractions, st.sampled_from(["hello", "a: b", "=x", "A=b", "ab=c"])).map(
        lambda pair: Breakage(
            f"line {pair[1]!r}",
            True,
            lambda sdp: _insert_line(sdp, pair[0], pair[1]),
        )
    ),
    st.integers(4097, 20_000).map(
        lambda n: Breakage(
            f"line of {n}", True, lambda sdp: _insert_line(sdp, 0.5, "a=x" + "y" * n)
        )
    ),
    st.integers(33, 60).map(
        lambda n: Breakage(f"{n} sections", True, lambda sdp: sdp + "m=audio 9 X 0\r\n" * n)
    ),
    st.integers(66_000, 200_000).map(
        lambda n: Breakage(f"{n} chars", True, lambda sdp: sdp + "a=x\r\n" * (n // 5))
    ),
    st.sampled_from(["hello", '{"sdp": "v=0"}', "v=0", "v=0\r\n", "   v=0"]).map(
        lambda text: Breakage(f"text {text!r}", True, lambda sdp: text)
    ),
)


def _insert_line(sdp: str, fraction: float, line: str) -> str:
    lines = sdp.splitlines()
    index = max(1, int(fraction * len(lines)))
    return "\r\n".join([*lines[:index], line, *lines[index:]]) + "\r\n"


def _swap(sdp: str, first: float, second: float) -> str:
    lines = sdp.splitlines()
    i, j = int(first * (len(lines) - 1)), int(second * (len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return "\r\n".join(lines) + "\r\n"


def _drop(sdp: str, where: list[float]) -> str:
    lines = sdp.splitlines()
    gone = {int(fraction * (len(lines) - 1)) for fraction in where}
    return "\r\n".join(line for i, line in enumerate(lines) if i not in gone) + "\r\n"


def _replace(sdp: str, where: list[tuple[float, str]]) -> str:
    chars = list(sdp)
    for fraction, char in where:
        chars[min(len(chars) - 1, int(fraction * len(chars)))] = char
    return "".join(chars)


may_pass = st.one_of(
    st.just(Breakage("none", False, lambda sdp: sdp)),
    st.just(Breakage("LF only", False, lambda sdp: sdp.replace("\r\n", "\n"))),
    fractions.map(lambda f: Breakage("cut", False, lambda sdp: sdp[: at(sdp, f)])),
    st.lists(fractions, min_size=1, max_size=3).map(
        lambda where: Breakage("drop lines", False, lambda sdp: _drop(sdp, where))
    ),
    st.tuples(fractions, fractions).map(
        lambda pair: Breakage("swap lines", False, lambda sdp: _swap(sdp, *pair))
    ),
    st.lists(st.tuples(fractions, st.characters(codec="ascii")), min_size=1, max_size=4).map(
        lambda where: Breakage("replace chars", False, lambda sdp: _replace(sdp, where))
    ),
    st.tuples(fractions, any_text).map(
        lambda pair: Breakage("insert text", False, lambda sdp: _insert_line(sdp, *pair))
    ),
)


@dataclass(frozen=True)
class OfferCase:
    breakage: Breakage
    offer_index: int
    target: str  # "new", "closed" or "unknown" conversation


offer_cases = st.builds(
    OfferCase,
    must_refuse | may_pass,
    st.integers(0, 4),
    st.sampled_from(["new", "new", "closed", "unknown"]),
)


@FUZZ
@given(cases=st.lists(offer_cases, min_size=6, max_size=10))
@pytest.mark.asyncio(loop_scope="module")
async def test_a_broken_offer_is_refused_in_words_before_it_takes_a_slot(
    http: httpx.AsyncClient,
    live: VoiceClient,
    offers: list[str],
    closed_pc_id: str,
    tally: Tally,
    cases: list[OfferCase],
) -> None:
    calls = []
    for case in cases:
        body: dict = {"sdp": case.breakage.apply(offers[case.offer_index]), "type": "offer"}
        if case.target != "new":
            body["pc_id"] = closed_pc_id if case.target == "closed" else "no-such-conversation"
        calls.append(Call("POST", OFFER, ascii_json(body), JSON))
    responses = await send_all(http, calls, tally, "sdp")
    for case, call, response in zip(cases, calls, responses, strict=True):
        status = response.status_code
        what = (case.breakage.name, status, response.text[:200])
        if case.breakage.refused or (len(call.body or b"") > MAX_BODY):
            assert status in (400, 413), what
            if status == 400:  # in the supervisor's words: no worker saw it, no slot taken
                assert response.json()["error"].startswith("The offer cannot be used"), what
            if case.breakage.name == "no audio":
                assert "no audio" in response.json()["error"], what
        elif case.target == "new":
            assert status in (200, 400, 503), what
            if status == 400 and not response.json()["error"].startswith("The offer cannot"):
                tally.by_test["sdp"]["400 from the worker"] += 1
            if status == 200:
                answer = response.json()
                assert answer["type"] == "answer" and "m=audio" in answer["sdp"], what
        else:
            assert status in (400, 404), what


# Candidates: well-formed ones (the worker must be able to read them) and broken ones.
foundations = st.text(string.ascii_letters + string.digits + "+/", min_size=1, max_size=32)
addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.uuids().map(lambda u: f"{u}.local"),
)


@st.composite
def good_candidates(draw: st.DrawFn, for_live: bool = False) -> str:
    # For the open conversation: few distinct addresses on loopback, and no mDNS names
    # (aioice would ask the network for them).
    address = "127.0.0.1" if for_live else draw(addresses)
    port = draw(st.sampled_from([9, 40000])) if for_live else draw(st.integers(0, 65535))
    kind = draw(st.sampled_from(["host", "srflx", "prflx", "relay"]))
    extras = draw(
        st.lists(
            st.sampled_from(
                [
                    "raddr 0.0.0.0 rport 0",
                    "generation 0",
                    "ufrag Hx7q",
                    "network-id 1 network-cost 10",
                    "tcptype passive",
                ]
            ),
            max_size=3,
        )
    )
    prefix = draw(st.sampled_from(["candidate:", ""]))
    fields = [
        prefix + draw(foundations),
        str(draw(st.integers(1, 256))),
        draw(st.sampled_from(["udp", "UDP", "tcp"])),
        str(draw(st.integers(0, 2**32 - 1))),
        address,
        str(port),
        "typ",
        kind,
        *extras,
    ]
    return " ".join(fields)


def _broken(line: str, how: str) -> str:
    fields = line.split(" ")
    if how == "component":
        fields[1] = "x"
    elif how == "component range":
        fields[1] = "0"
    elif how == "priority":
        fields[3] = str(2**32)
    elif how == "port":
        fields[5] = "65536"
    elif how == "typ":
        fields[6] = "type"
    elif how == "kind":
        fields[7] = "peer"
    elif how == "odd extension":
        fields.append("lonely")
    elif how == "short":
        fields = fields[:5]
    elif how == "unicode digits":
        fields[5] = "٣٣"
    elif how == "rport":
        fields += ["rport", "x"]
    elif how == "tab":
        fields[2] = "udp\tx"
    elif how == "long":
        fields.append("x " + "y" * 1100)
    return " ".join(fields)


BREAKS = [
    "component",
    "component range",
    "priority",
    "port",
    "typ",
    "kind",
    "odd extension",
    "short",
    "unicode digits",
    "rport",
    "tab",
    "long",
]
bad_candidates = st.one_of(
    st.builds(_broken, good_candidates(), st.sampled_from(BREAKS)),
    any_text.map(lambda text: "not-a-candidate " + text),
)


@dataclass(frozen=True)
class CandidateItem:
    item: object
    valid: bool


def _item(line: str, mid: object = "0", index: object = 0) -> dict:
    return {"candidate": line, "sdp_mid": mid, "sdp_mline_index": index}


def candidate_items(for_live: bool) -> st.SearchStrategy[CandidateItem]:
    valid = st.one_of(
        good_candidates(for_live).map(lambda line: _item(line)),
        good_candidates(for_live).map(lambda line: _item(line, mid=None)),
        good_candidates(for_live).map(lambda line: _item(line, index=None)),
    )
    if not for_live:  # the end of candidates: the open conversation would take no more
        valid = valid | st.just(_item("", index=None))
    invalid = st.one_of(
        bad_candidates.map(_item),
        good_candidates(for_live).map(lambda line: _item(line, mid=None, index=None)),
        st.tuples(good_candidates(for_live), st.sampled_from([-1, 32, 10**9, True, 1.5, "0"])).map(
            lambda pair: _item(pair[0], index=pair[1])
        ),
        st.tuples(good_candidates(for_live), st.sampled_from(["m" * 65, "\ud800", "a b"])).map(
            lambda pair: _item(pair[0], mid=pair[1])
        ),
        json_values.filter(lambda value: not isinstance(value, dict)),
        st.dictionaries(st.sampled_from(["sdp_mid", "sdp_mline_index"]), json_values),
        json_values.filter(lambda v: not isinstance(v, str) and v is not None).map(
            lambda value: {"candidate": value, "sdp_mid": "0"}
        ),
    )
    return valid.map(lambda item: CandidateItem(item, True)) | invalid.map(
        lambda item: CandidateItem(item, False)
    )


@dataclass(frozen=True)
class Patch:
    target: str  # "live", "closed", "unknown" or "not a string"
    items: tuple[CandidateItem, ...]


to_live = st.builds(
    Patch, st.just("live"), st.lists(candidate_items(for_live=True), max_size=4).map(tuple)
)
to_others = st.builds(
    Patch,
    st.sampled_from(["closed", "unknown", "not a string"]),
    st.lists(candidate_items(for_live=False), max_size=4).map(tuple),
)
patches = st.one_of(to_live, to_others, to_others)  # a third reach the worker


@FUZZ
@given(batch=st.lists(patches, min_size=15, max_size=25))
@pytest.mark.asyncio(loop_scope="module")
async def test_candidates_for_live_closed_and_unknown_conversations(
    http: httpx.AsyncClient,
    live: VoiceClient,
    closed_pc_id: str,
    tally: Tally,
    batch: list[Patch],
) -> None:
    ids = {"live": live.pc_id, "closed": closed_pc_id, "unknown": "no-such-conversation"}
    calls = []
    for patch in batch:
        pc_id = ids.get(patch.target, 42)
        body = {"pc_id": pc_id, "candidates": [c.item for c in patch.items]}
        calls.append(Call("PATCH", OFFER, ascii_json(body), JSON))
    for patch, response in zip(
        batch, await send_all(http, calls, tally, "candidates"), strict=True
    ):
        if patch.target == "not a string" or not all(c.valid for c in patch.items):
            expected = 400
        else:
            expected = 200 if patch.target == "live" else 404
        assert response.status_code == expected, (patch, response.text[:300])


# Any method, any path, any headers, with or without a body.
path_segments = st.text(
    st.characters(codec="utf-8", exclude_characters="/?#%\\", exclude_categories=["Cs", "Cc"]),
    min_size=1,
    max_size=12,
).filter(lambda segment: segment not in (".", ".."))
paths = st.one_of(
    st.sampled_from([*PAGES, OFFER, "/static/", "/api/", "/api/offer/", "/static/nothing.js"]),
    st.sampled_from(STATIC_FILES).map(lambda name: f"/static/{name}"),
    path_segments.map(lambda name: f"/static/{name}"),
    st.integers(200, 4000).map(lambda n: "/static/" + "a" * n),
    st.lists(path_segments, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.integers(100, 4000).map(lambda n: "/" + "a" * n),
    st.builds(
        lambda path, query: f"{path}?{query}",
        st.sampled_from([*PAGES, OFFER]),
        st.text(string.ascii_letters + string.digits + "=&%[]", max_size=60),
    ),
)
# Methods aiohttp's parser knows (any other token is refused before the app sees it: the
# raw-socket test sends those).
methods = st.sampled_from(
    [*HTTP_METHODS, "PROPFIND", "MKCOL", "LOCK", "PURGE", "SEARCH", "REPORT", "QUERY", "LINK"]
)
# Visible ASCII inside, no space at either end: what HTTP allows in a header (the raw-socket
# test sends the rest).
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200).map(
    str.strip
)


@st.composite
def any_calls(draw: st.DrawFn, base_url: str) -> Call:
    method = draw(methods)
    path = draw(paths)
    body = draw(
        st.one_of(
            st.none(),
            st.none(),
            st.none(),
            st.binary(max_size=200),
            json_bodies,
            st.just(b"x" * (MAX_BODY + 1)),
        )
    )
    headers = [
        (name, draw(header_values))
        for name in draw(
            st.lists(
                st.sampled_from(
                    [
                        "X-Forwarded-For",
                        "Accept",
                        "User-Agent",
                        "Cookie",
                        "X-Junk",
                        "Range",
                        "If-None-Match",
                        "If-Modified-Since",
                        "Accept-Encoding",
                    ]
                ),
                max_size=3,
                unique=True,
            )
        )
    ]
    headers.append(("Content-Type", draw(content_types)))
    origin = draw(
        st.sampled_from([None, None, base_url, "http://evil.example", "null", "http://[", ""])
    )
    if origin:
        headers.append(("Origin", origin))
    return Call(method, path, body, tuple(headers))


def expected_for(call: Call, base_url: str) -> set[int] | None:
    """The statuses a well-formed page request must get; None when any 4xx will do."""
    path = call.path.split("?", 1)[0]
    readable = path in PAGES or (
        path.startswith("/static/") and path.removeprefix("/static/") in STATIC_FILES
    )
    if len(call.body or b"") > MAX_BODY:
        return {413}
    if not readable or call.method not in ("GET", "HEAD"):
        return None
    origin = dict(call.headers).get("Origin")
    if path.startswith("/api/") and origin and origin != base_url:
        return {403}
    return {200}


@FUZZ
@given(data=st.data())
@pytest.mark.asyncio(loop_scope="module")
async def test_any_method_path_and_headers_get_an_answer_in_words(
    hostile: AgentProcess, http: httpx.AsyncClient, live: VoiceClient, tally: Tally, data
) -> None:
    base_url = hostile.base_url
    calls = data.draw(st.lists(any_calls(base_url), min_size=30, max_size=40))
    for call, response in zip(calls, await send_all(http, calls, tally, "any"), strict=True):
        expected = expected_for(call, base_url)
        status = response.status_code
        if expected is not None:
            assert status in expected, (call.method, call.path[:80], status, response.text[:200])
        else:
            assert 400 <= status < 500, (call.method, call.path[:80], status, response.text[:200])


targets = st.sampled_from(
    [
        ("POST", OFFER, 400),
        ("PATCH", OFFER, 400),
        ("GET", "/health", 200),
        ("GET", "/api/config", 200),
        ("GET", "/", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/metrics", 200),
        ("POST", "/nothing", 404),
    ]
)
sizes = st.one_of(
    st.integers(0, 1_200_000),
    st.sampled_from([MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, 4 * 1024 * 1024]),
)


@settings(FUZZ, max_examples=100)
@given(batch=st.lists(st.tuples(targets, sizes, st.booleans()), min_size=3, max_size=5))
@pytest.mark.asyncio(loop_scope="module")
async def test_every_endpoint_takes_at_most_256_kB(
    http: httpx.AsyncClient, live: VoiceClient, tally: Tally, batch: list
) -> None:
    calls = [
        Call(method, path, b'{"sdp": "' + b"a" * max(0, size - 11) + b'"}', (), chunked)
        for (method, path, _), size, chunked in batch
    ]
    responses = await send_all(http, calls, tally, "sizes")
    for ((method, path, normal), _, chunked), call, response in zip(
        batch, calls, responses, strict=True
    ):
        what = (method, path, len(call.body or b""), chunked, response.status_code)
        if len(call.body or b"") > MAX_BODY:
            assert response.status_code == 413, what
            assert response.json()["code"] == "too_large", what
        else:
            assert response.status_code == normal, what


# Bytes that are not (quite) HTTP, on raw sockets.
RAW_TARGETS = [
    "/",
    "/health",
    OFFER,
    "*",
    "http://127.0.0.1/health",
    "127.0.0.1:80",
    "/static/../agent/config.py",
    "/static/..%2f..%2fpyproject.toml",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/....//....//pyproject.toml",
    "/%00",
    "/\x7f",
    "/é",
    "",
    "/" + "a" * 9000,
]
TRAVERSALS = {target for target in RAW_TARGETS if ".." in target or "%2e" in target}
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "http/1.1", "", "HTTP/11"]
ODD_HEADERS = [
    "NoColon",
    "Bad Name: x",
    " Leading: x",
    "X-Nul: a\x00b",
    "X-Long: " + "a" * 9000,
    "X-Fold: a\r\n b",
    "Content-Length: -1",
    "Content-Length: abc",
    "Content-Length: 5\r\nContent-Length: 6",
    "Transfer-Encoding: chunked\r\nContent-Length: 3",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: identity",
    "Content-Type: application/json",
    "Expect: nothing-you-know",
    "Host: a\r\nHost: b",
    "X-Forwarded-For: 10.0.0.1",
]
SPECIAL = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS ClientHello's start
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 300 + b"\r\n",
    b"POST /api/offer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /api/offer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n\r\n\r\n",
]


@dataclass(frozen=True)
class Raw:
    data: bytes
    answer_expected: bool  # False: the request is cut short; the agent waits for the rest
    target: str = ""


@st.composite
def raw_requests(draw: st.DrawFn) -> Raw:
    kind = draw(st.sampled_from(["garbage", "request", "request", "special", "cut"]))
    if kind == "garbage":
        return Raw(draw(st.binary(max_size=400)) + b"\r\n\r\n", True)
    if kind == "special":
        return Raw(draw(st.sampled_from(SPECIAL)), True)
    method = draw(
        st.sampled_from([*HTTP_METHODS, "CONNECT", "get", "G\x00T", "GET GET", "A", "BREW"])
        | st.text(string.ascii_uppercase + "-_!", min_size=1, max_size=10)
    )
    target = draw(st.sampled_from(RAW_TARGETS))
    version = draw(st.sampled_from(VERSIONS))
    headers = ["Host: 127.0.0.1", "Connection: close"]
    headers += draw(st.lists(st.sampled_from(ODD_HEADERS), max_size=3))
    body = draw(st.binary(max_size=100))
    if kind == "cut":  # promises more body than it sends, then hangs up
        headers.append(f"Content-Length: {len(body) + draw(st.integers(1, 10_000))}")
    elif any("chunked" in header for header in headers):
        body += b"\r\n0\r\n\r\n"  # whatever came before, the chunks end here
    elif not any(header.startswith(("Content-Length", "Transfer")) for header in headers):
        headers.append(f"Content-Length: {len(body)}")
    head = f"{method} {target} {version}".rstrip() + "\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    return Raw(head.encode("utf-8", "surrogateescape") + body, kind != "cut", target)


async def exchange(port: int, raw: Raw) -> tuple[bytes, str]:
    """Send ``raw``; return what the agent answers until it closes (or until 1.5 s pass),
    and how the exchange ended when nothing came: "hung up" or "silent"."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received, ending = b"", "hung up"
    try:
        writer.write(raw.data)
        await writer.drain()
        if not raw.answer_expected:
            return b"", "cut short"
        deadline = time.monotonic() + 1.5
        while not _complete(received):
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                ending = "silent"
                break
            if not chunk:
                break
            received += chunk
    except ConnectionError:
        pass  # the agent hung up on bytes it could not read
    finally:
        writer.close()
    return received, ending


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    return length is not None and len(body) >= int(length.group(1))


STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3}) ")  # aiohttp answers in the request's version


@FUZZ
@given(raw=raw_requests())
@pytest.mark.asyncio(loop_scope="module")
async def test_bytes_that_are_not_quite_http_never_get_a_5xx(
    hostile: AgentProcess, live: VoiceClient, tally: Tally, raw: Raw
) -> None:
    port = int(hostile.base_url.rsplit(":", 1)[1])
    received, ending = await exchange(port, raw)
    statuses = [int(status) for status in STATUS_LINE.findall(received)]
    tally.record("raw", statuses[0] if statuses else ending)
    if not statuses:
        tally.unanswered.append(f"{ending}: {raw.data[:100]!r}")
    if ending == "silent" and not statuses:  # nothing but empty lines: it waits for a request
        assert not raw.data.strip(b"\r\n"), raw
    assert all(status < 500 for status in statuses), received[:300]
    if raw.target in TRAVERSALS:
        assert all(status != 200 for status in statuses), received[:300]
    head, _, rest = received.partition(b"\r\n\r\n")
    if statuses and statuses[0] >= 400 and b"application/json" in head and rest:
        error = json.loads(rest.split(b"HTTP/1.1 ", 1)[0])
        assert error["error"] and error["code"], error


# --- afterwards ------------------------------------------------------------------------------

FUZZ_QUOTAS = {"json": 2250, "sdp": 900, "candidates": 2250, "any": 4500, "sizes": 300}


@pytest.mark.asyncio(loop_scope="module")
async def test_afterwards_the_agent_holds_a_spoken_conversation(
    hostile: AgentProcess, http: httpx.AsyncClient, live: VoiceClient, tally: Tally
) -> None:
    """Run after the fuzz above (file order): the open conversation still answers, and a
    new one is greeted and understood."""
    for test, quota in FUZZ_QUOTAS.items():
        assert tally.sent[test] >= quota, f"{test} sent only {tally.sent[test]} requests"
    assert sum(tally.sent.values()) >= 10_000
    assert hostile.process.poll() is None, "the agent died"
    assert hostile.log_events("request failed") == [], "a request ended in a 500"
    # Whatever aiohttp said of the malformed requests came out as JSON, like every line.
    assert [line for line in hostile.log_lines if not is_json_object(line)] == []
    health = (await http.get("/health")).json()
    assert [worker["restarts"] for worker in health["workers"]] == [0], health["workers"]

    await answered(live, "are you still there")
    await asyncio.to_thread(
        wait_until, lambda: sync_active_sessions(hostile.base_url) == 1, 20, "one conversation"
    )
    client = VoiceClient(hostile.base_url)
    await client.connect()
    try:
        await client.wait_for_spoken_reply(since=0)  # the greeting
        words, _ = await speak_and_hear(client, "Please turn on the kitchen lights")
        assert contains_in_order(words, ["you", "said", "kitchen", "lights"]), words
    finally:
        await client.close()


def is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# --- the rate limit, in an agent of its own ---------------------------------------------------


async def test_too_many_new_conversations_from_one_device_are_refused_in_words(
    speaches_url: str, ollama_url: str
) -> None:
    env = agent_env(
        speaches_url,
        ollama_url,
        WORKERS="1",
        MAX_SESSIONS="2",
        NEW_SESSIONS_PER_MINUTE="3",
        WEBRTC_CONNECT_TIMEOUT_SECS="1",
        # Only the rate limit may refuse here: on a slow machine the worker's event loop
        # may run late enough for backpressure to say "too busy" (tested in test_workers).
        BUSY_LOOP_LAG_MS="0",
    )
    offer = {"sdp": (await real_offers())[0], "type": "offer"}
    with run_agent(env) as agent:
        here = httpx.AsyncClient(base_url=agent.base_url, timeout=30)
        other_device = httpx.AsyncClient(
            base_url=agent.base_url,
            timeout=30,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
        )
        async with here, other_device:
            # Two conversations fill the house; the refusals that follow are not counted.
            statuses = [(await here.post(OFFER, json=offer)).status_code for _ in range(4)]
            assert statuses == [200, 200, 503, 503]
            pc_id = (await here.post(OFFER, json=offer)).json().get("pc_id")
            assert pc_id is None
            await asyncio.to_thread(
                wait_until, lambda: sync_active_sessions(agent.base_url) == 0, 20, "empty house"
            )
            # The third of the minute is allowed, the fourth is not.
            third = await here.post(OFFER, json=offer)
            assert third.status_code == 200, third.text
            refused = await here.post(OFFER, json=offer)
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "rate"
            sentence = refused.json()["error"]
            assert "3 conversations in the last minute" in sentence, sentence
            wait_secs = int(refused.headers["Retry-After"])
            assert 1 <= wait_secs <= WINDOW_SECS
            assert f"try again in {wait_secs} seconds" in sentence, sentence
            # A header naming another address changes nothing: anyone can write it.
            spoofed = await here.post(OFFER, json=offer, headers={"X-Forwarded-For": "10.9.8.7"})
            assert spoofed.status_code == 429
            # Continuing the conversation it has is no new conversation.
            renegotiation = await here.post(OFFER, json={**offer, "pc_id": third.json()["pc_id"]})
            assert renegotiation.status_code != 429, renegotiation.text
            # Another device has its own allowance.
            elsewhere = await other_device.post(OFFER, json=offer)
            assert elsewhere.status_code == 200, elsewhere.text
            metrics = (await here.get("/metrics")).text
        refusals = re.search(r'voice_agent_sessions_refused_total\{reason="rate"\} (\S+)', metrics)
        assert refusals and float(refusals.group(1)) == 2.0, metrics


# --- the checks on their own ------------------------------------------------------------------


async def test_offers_from_aiortc_and_browsers_pass_the_check() -> None:
    for offer in [*await real_offers(), CHROME_OFFER, FIREFOX_OFFER]:
        assert offer_problem(offer) is None, offer
        assert offer_problem(offer.replace("\r\n", "\n")) is None


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(codec=None) | lone_surrogates, max_size=300), pick=st.integers())
def test_the_offer_check_reads_any_text_and_says_why_in_a_sentence(text: str, pick: int) -> None:
    base = [CHROME_OFFER, FIREFOX_OFFER][pick % 2]
    for candidate in (text, "v=0\r\n" + text, base[: pick % len(base)] + text):
        problem = offer_problem(candidate)
        assert problem is None or (
            problem.startswith("The offer cannot be used") and problem[-1] == "."
        )


@settings(max_examples=200, deadline=None)
@given(breakage=must_refuse, pick=st.integers(0, 1))
def test_every_breakage_of_a_required_part_is_named(breakage: Breakage, pick: int) -> None:
    problem = offer_problem(breakage.apply([CHROME_OFFER, FIREFOX_OFFER][pick]))
    assert problem is not None, breakage.name


@settings(max_examples=300, deadline=None)
@given(line=good_candidates())
def test_a_well_formed_candidate_passes_and_aiortc_reads_it(line: str) -> None:
    assert candidate_problem(line) is None, line
    parsed = candidate_from_sdp(line)
    assert parsed.type in ("host", "srflx", "prflx", "relay")


@settings(max_examples=300, deadline=None)
@given(
    line=bad_candidates
    | any_text
    | st.lists(
        st.sampled_from(["1", "udp", "typ", "host", "a", "raddr", "rport"]), max_size=14
    ).map(" ".join)
)
def test_a_candidate_that_passes_the_check_is_one_aiortc_can_read(line: str) -> None:
    if line and candidate_problem(line) is None:  # "": the end of candidates, not parsed
        candidate_from_sdp(line)  # raises on a line it cannot read


@settings(max_examples=200, deadline=None)
@given(breakage=may_pass, pick=st.integers(0, 4))
def test_an_offer_that_passes_the_check_has_what_aiortc_needs(
    breakage: Breakage, pick: int
) -> None:
    offers = [CHROME_OFFER, FIREFOX_OFFER]
    sdp = breakage.apply(offers[pick % 2])
    if offer_problem(sdp) is not None:
        return
    try:
        description = SessionDescription.parse(sdp)
    except Exception:  # a line the check does not read (rtpmap of another codec, say)
        return  # the worker refuses it, in words
    assert any(media.kind == "audio" for media in description.media)
    for media in description.media:
        assert media.ice.usernameFragment and media.ice.password
        assert media.dtls is not None and media.dtls.fingerprints


@settings(max_examples=200, deadline=None)
@given(
    per_minute=st.integers(1, 5),
    events=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.floats(0, 40), st.booleans()), max_size=60
    ),
)
def test_no_client_starts_more_than_its_limit_in_any_minute(
    per_minute: int, events: list[tuple[str, float, bool]]
) -> None:
    limit = NewSessionLimit(per_minute)
    now = 1000.0
    kept: dict[str, list[float]] = {"a": [], "b": []}
    for client, step, handed_back in events:
        now += step
        recent = [t for t in kept[client] if t > now - WINDOW_SECS]
        wait = limit.take(client, now)
        if len(recent) < per_minute:
            assert wait is None, (client, now, kept)
            kept[client].append(now)
            if handed_back:
                limit.give_back(client)
                kept[client].pop()
        else:
            assert wait is not None and 0 < wait <= WINDOW_SECS + 1e-9
            assert wait == pytest.approx(min(recent) + WINDOW_SECS - now)
    assert limit.clients <= 2


def test_a_client_is_its_address_however_it_is_written() -> None:
    assert client_address("::ffff:192.168.1.20") == "192.168.1.20"
    assert client_address("192.168.1.20") == "192.168.1.20"
    assert client_address("fe80::1%eth0") == "fe80::1"
    assert client_address("2001:DB8::1") == "2001:db8::1"
    assert client_address(None) == "unknown"
    assert NewSessionLimit(0).take("a", 0.0) is None  # 0: no limit
