// The browser's end of the WebRTC connection: how it is set up for the
// agent's Pipecat transport, and how it is closed.

// Stopped while the server may hold a seat for us: how long to let the
// handshake finish so the server can be told we left (see closeAfterHandshake).
const LINGER_MS = 5_000;

export function createPeer(mic, iceServers) {
  // max-bundle: one transport for audio and data, as the server (aiortc,
  // MAX_BUNDLE) expects; it also halves the candidates to send.
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
  // Pipecat maps transceivers by creation order: 0 = microphone audio,
  // 1 = camera, 2 = screen. This assistant is voice only, so it offers just
  // transceiver 0 (sendrecv: our voice up, the assistant's voice down).
  const [track] = mic.getAudioTracks();
  pc.addTransceiver(track, { direction: "sendrecv", streams: [mic] });
  // The server accepts whatever channel we open; "chat" is the label
  // Pipecat's own clients use. Ordered, because RTVI events are a sequence.
  const dc = pc.createDataChannel("chat", { ordered: true });
  return { pc, dc };
}

// Synchronous, so it can run from "pagehide".
export function closePeer(pc, dc) {
  if (pc.signalingState === "closed") return;
  try {
    dc.close();
  } catch { /* already closed */ }
  for (const transceiver of pc.getTransceivers()) {
    try {
      transceiver.stop();
    } catch { /* closed */ }
  }
  pc.close();
}

// For a connection the server holds a seat for but has not seen used (the
// offer is on its way, or answered and not connected yet). Only a finished
// handshake followed by a close frees that seat early; otherwise the server's
// connect timeout does (WEBRTC_CONNECT_TIMEOUT_SECS, 30 s by default). So the
// connection is left to finish for a few seconds, then closed. `handshake` is
// the offer/answer under way: if it fails, there is nothing to wait for.
export function closeAfterHandshake(pc, dc, handshake) {
  const timer = setTimeout(() => closePeer(pc, dc), LINGER_MS);
  const closeNow = () => {
    clearTimeout(timer);
    closePeer(pc, dc);
  };
  pc.addEventListener("connectionstatechange", () => {
    if (["connected", "failed", "closed"].includes(pc.connectionState)) closeNow();
  });
  handshake.catch(closeNow);
}
