"""The peer connection details sessions need: making one, reading a trickled candidate,
and what an ICE restart leaves behind."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import MediaStreamTrack, RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp
from pipecat.transports.smallwebrtc.connection import IceServer, SmallWebRTCConnection

from agent import census
from agent.config import Settings
from agent.jitter import listen_through_reorder_buffer
from agent.opus_voice import OpusVoiceTrack, speak_through_opus_voice_track

# Pipecat's own connecting-state timeout cancels itself halfway through closing the peer
# connection, after which close() never returns; ours (WEBRTC_CONNECT_TIMEOUT_SECS) acts
# first, this long before it.
PIPECAT_TIMEOUT_MARGIN_SECS = 60


def new_connection(settings: Settings) -> SmallWebRTCConnection:
    listen_through_reorder_buffer(settings.webrtc_audio_reorder_packets)
    speak_through_opus_voice_track()
    connection = SmallWebRTCConnection(
        ice_servers=[IceServer(**server) for server in settings.ice_servers_for_browser],
        connection_timeout_secs=round(settings.connect_timeout_secs) + PIPECAT_TIMEOUT_MARGIN_SECS,
    )
    census.track(connection.pc)
    return connection


async def packets_received(pc: RTCPeerConnection) -> int:
    """Everything the browser has sent over ``pc`` so far (audio, its reports on what it
    hears, data channel messages), as counted by the transport it all arrives on."""
    stats = await pc.getStats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "transport")


@dataclass
class IceCandidate:
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None

    def parsed(self) -> RTCIceCandidate | None:
        """aiortc's candidate; None for the empty one that marks the end of candidates.
        A line aiortc cannot read raises ``ValueError``."""
        if not self.candidate:
            return None
        candidate = candidate_from_sdp(self.candidate)
        candidate.sdpMid = self.sdp_mid
        candidate.sdpMLineIndex = self.sdp_mline_index
        return candidate


def ice_ufrag(sdp: str) -> str | None:
    """The offer's ICE username: every new peer connection (or ICE restart) has a new one."""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.removeprefix("a=ice-ufrag:").strip()
    return None


def voice_track(connection: SmallWebRTCConnection) -> MediaStreamTrack | None:
    """The track the bot's voice goes out on (Pipecat sends it on the first transceiver)."""
    transceivers = connection.pc.getTransceivers()
    return transceivers[0].sender.track if transceivers else None


def drop_unplayed_audio(track: MediaStreamTrack | None) -> None:
    """Release a writer waiting on a track nobody plays any more.

    Pipecat's output waits until each chunk of speech it hands its output track has been
    sent. After an ICE restart the old peer connection no longer reads that track,
    so a reply being spoken then would wait forever (after 10 s Pipecat gives the output
    up for good, and the bot is mute for the rest of the session). That speech could not
    be heard anyway: drop it and let the writer go on, onto the new connection's track.
    (Private upstream, for Pipecat's own track: the pinned Pipecat is tested,
    tests/test_pipecat_client.py.)
    """
    if isinstance(track, OpusVoiceTrack):
        track.drop_unplayed()
        return
    queue = getattr(track, "_chunk_queue", None)
    if queue is None:
        return
    for _chunk, sent in queue:
        if sent is not None and not sent.done():
            sent.set_result(True)
    queue.clear()


def sdp_problem(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return f"the offer's SDP could not be used: {text}"
