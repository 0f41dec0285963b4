"""A cheap look at an offer's SDP and at trickled ICE candidates, before a session slot.

The supervisor has no WebRTC stack (it stays small); a worker's aiortc reads an offer for
real. But aiortc takes much nonsense without complaint (an ICE password with spaces in
it, a fingerprint that is no fingerprint) and answers it, and such a session then holds a
slot until the browser fails to connect. So the supervisor first checks that an offer
has the shape every browser's has: ``v=0`` first, ``x=value`` lines of sane length, an
audio section of a WebRTC profile with a codec the agent speaks, ICE credentials, a DTLS
fingerprint and setup role. Each problem is one sentence for the page; an offer that
passes may still be refused by the worker.

Lines are split the way aiortc splits them (``str.splitlines``), so both see the same lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_SDP_CHARS = 64 * 1024  # a browser's offer is 2 to 10 kB, with all its candidates
MAX_LINE_CHARS = 4096  # its longest lines (fmtp, candidates, extmap) are a few hundred
MAX_MEDIA_SECTIONS = 32  # the page offers two: audio and the data channel
MAX_CANDIDATE_CHARS = 1024

WEBRTC_MEDIA_PROFILES = ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP")
DTLS_SETUP_ROLES = ("actpass", "active", "passive")
# Hash function -> bytes of its digest (RFC 8122's fingerprint hash functions).
FINGERPRINT_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
CODECS_SPOKEN = ("opus/48000", "pcmu/8000", "pcma/8000")
STATIC_PAYLOAD_TYPES = {0: "pcmu/8000", 8: "pcma/8000"}
RESERVED_PAYLOAD_TYPES = range(72, 77)  # RTCP packet types; aiortc refuses them too

# Control characters (Unicode Cc but CR, LF and tab), line or paragraph separators and
# lone surrogates: no SDP has them, some would split lines where this check sees none,
# and a surrogate cannot even be encoded to forward the offer.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
LINE = re.compile(r"[a-z]=")
MEDIA_LINE = re.compile(r"m=([a-z]+) ([0-9]{1,5}) ([A-Z/]+) ([^ ].*)")
ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
FINGERPRINT = re.compile(r"([A-Za-z0-9-]+) ((?:[0-9A-Fa-f]{2}:)*[0-9A-Fa-f]{2})")
RTPMAP = re.compile(r"([0-9]{1,3}) ([^ /]+)/([0-9]{1,6})(?:/[0-9]{1,2})?")

# RFC 8839 candidate-attribute; aiortc reads the same fields by position.
CANDIDATE = re.compile(
    r"(?:candidate:)?[A-Za-z0-9+/]{1,32}"  # foundation
    r" [0-9]{1,3}"  # component
    r" (?i:udp|tcp)"  # transport
    r" [0-9]{1,10}"  # priority
    r" [0-9A-Za-z.:%_-]{1,255}"  # address: IPv4, IPv6 (with a zone) or an mDNS name
    r" [0-9]{1,5}"  # port
    r" typ (?:host|srflx|prflx|relay)"
    r"((?: [!-~]{1,255} [!-~]{1,255})*)"  # extensions, name and value: raddr, rport, ...
)
NUMERIC_EXTENSIONS = ("rport", "generation", "network-id", "network-cost")


def offer_problem(sdp: str) -> str | None:
    """Why ``sdp`` cannot be a browser's offer, in a sentence; None when it looks like one."""
    try:
        description = _Description.read(sdp)
    except _Unusable as problem:
        return f"The offer cannot be used: {problem}."
    audio = [section for section in description.media if section.kind == "audio"]
    if not audio:
        return (
            "The offer cannot be used: it has no audio track (no m=audio line); the page "
            "must send the microphone."
        )
    for section in description.media:
        problem = section.problem(description.session)
        if problem:
            return f"The offer cannot be used: its {section.kind} section {problem}."
    return None


def candidate_problem(candidate: str) -> str | None:
    """Why a trickled ICE candidate line cannot be read, in a sentence; None when it can.
    The empty line, which marks the end of candidates, is fine."""
    if not candidate:
        return None
    if len(candidate) > MAX_CANDIDATE_CHARS:
        return f"An ICE candidate is longer than {MAX_CANDIDATE_CHARS} characters."
    match = CANDIDATE.fullmatch(candidate)
    if match is None or not _numbers_in_range(candidate):
        return "An ICE candidate is not of the form 'candidate:… 1 udp … typ host'."
    extensions = match.group(1).split()
    for name, value in zip(extensions[::2], extensions[1::2], strict=True):
        if name in NUMERIC_EXTENSIONS and not (value.isascii() and value.isdigit()):
            return f"An ICE candidate's {name} is not a number."
    return None


def _numbers_in_range(candidate: str) -> bool:
    _, component, _, priority, _, port = candidate.split(" ", 6)[:6]
    return 1 <= int(component) <= 256 and int(priority) < 2**32 and int(port) <= 65535


class _Unusable(Exception):
    """The text is not a session description at all; the message says what is wrong."""


@dataclass
class _Section:
    """The session part, or one media section (``m=`` line and the lines after it)."""

    lines: list[str]
    kind: str = "session"
    port: int = 0
    profile: str = ""
    formats: list[str] = field(default_factory=list)

    def attributes(self, name: str) -> list[str]:
        prefix = f"a={name}"
        return [
            line[len(prefix) + 1 :] if line[len(prefix) :].startswith(":") else ""
            for line in self.lines
            if line == prefix or line.startswith(prefix + ":")
        ]

    def attribute(self, name: str, session: _Section) -> list[str]:
        """The section's values of ``a=name``, or else the session's (which apply to all)."""
        return self.attributes(name) or session.attributes(name)

    def problem(self, session: _Section) -> str | None:
        """What this media section lacks for a WebRTC connection; None when nothing."""
        for candidate in self.attributes("candidate"):
            if candidate_problem(candidate):
                return "has an ICE candidate that cannot be read"
        ufrag = self.attribute("ice-ufrag", session)
        if len(ufrag) != 1 or not ICE_UFRAG.fullmatch(ufrag[0]):
            return "has no valid ICE user name (a=ice-ufrag: 4 to 256 letters, digits, + or /)"
        password = self.attribute("ice-pwd", session)
        if len(password) != 1 or not ICE_PWD.fullmatch(password[0]):
            return "has no valid ICE password (a=ice-pwd: 22 to 256 letters, digits, + or /)"
        fingerprints = self.attribute("fingerprint", session)
        if not fingerprints or not all(map(_is_fingerprint, fingerprints)):
            return "has no valid DTLS certificate fingerprint (a=fingerprint:sha-256 AB:CD:…)"
        setup = self.attribute("setup", session)
        if len(setup) != 1 or setup[0] not in DTLS_SETUP_ROLES:
            return "has no valid DTLS role (a=setup:actpass, active or passive)"
        if self.kind in ("audio", "video"):
            return self._rtp_problem()
        return None

    def _rtp_problem(self) -> str | None:
        if self.profile not in WEBRTC_MEDIA_PROFILES:
            return f"uses {self.profile}, not WebRTC's UDP/TLS/RTP/SAVPF"
        types = [int(value) for value in self.formats if value.isascii() and value.isdigit()]
        if len(types) != len(self.formats) or not all(
            0 <= value <= 127 and value not in RESERVED_PAYLOAD_TYPES for value in types
        ):
            return "lists payload types that are not numbers from 0 to 127"
        if not self.attributes("rtcp-mux"):
            return "does not multiplex RTCP (a=rtcp-mux)"
        if self.kind == "audio" and not any(
            codec.startswith(CODECS_SPOKEN) for codec in self._codecs(types)
        ):
            return "offers no codec the assistant speaks (Opus, PCMU or PCMA)"
        return None

    def _codecs(self, types: list[int]) -> list[str]:
        """The codecs offered on the m= line: 'name/rate' in lower case."""
        codecs = [STATIC_PAYLOAD_TYPES[pt] for pt in types if pt in STATIC_PAYLOAD_TYPES]
        for value in self.attributes("rtpmap"):
            match = RTPMAP.fullmatch(value)
            if match and int(match.group(1)) in types:
                codecs.append(f"{match.group(2)}/{match.group(3)}".lower())
        return codecs


def _is_fingerprint(value: str) -> bool:
    match = FINGERPRINT.fullmatch(value)
    if match is None:
        return False
    size = FINGERPRINT_BYTES.get(match.group(1).lower())
    return size is not None and len(match.group(2)) == size * 3 - 1


@dataclass
class _Description:
    session: _Section
    media: list[_Section]

    @classmethod
    def read(cls, sdp: str) -> _Description:
        if len(sdp) > MAX_SDP_CHARS:
            raise _Unusable(f"it is longer than {MAX_SDP_CHARS // 1024} kB")
        if CONTROL.search(sdp):
            raise _Unusable("it contains control characters")
        lines = sdp.splitlines()
        if not lines or lines[0] != "v=0":
            raise _Unusable("it does not start with v=0, so it is no session description")
        for number, line in enumerate(lines, start=1):
            if len(line) > MAX_LINE_CHARS:
                raise _Unusable(f"line {number} is longer than {MAX_LINE_CHARS} characters")
            if not LINE.match(line):
                raise _Unusable(f"line {number} is not of the form x=value")
        starts = [index for index, line in enumerate(lines) if line.startswith("m=")]
        if len(starts) > MAX_MEDIA_SECTIONS:
            raise _Unusable(f"it has more than {MAX_MEDIA_SECTIONS} media sections")
        session = _Section(lines[: starts[0]] if starts else lines)
        if not all(any(line.startswith(kind) for line in session.lines) for kind in "ost"):
            raise _Unusable("it lacks one of the o=, s= and t= lines every offer has")
        ends = [*starts[1:], len(lines)] if starts else []
        media = [_media_section(lines[start:end]) for start, end in zip(starts, ends, strict=True)]
        return cls(session, media)


def _media_section(lines: list[str]) -> _Section:
    match = MEDIA_LINE.fullmatch(lines[0])
    if match is None or int(match.group(2)) > 65535:
        raise _Unusable(f"its media line {lines[0][:40]!r} is not of the form m=audio 9 …")
    kind, port, profile, formats = match.groups()
    return _Section(lines, kind, int(port), profile, formats.split(" "))
