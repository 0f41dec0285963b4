// One WebRTC conversation with the server's Pipecat SmallWebRTC transport:
// peer connection, offer/answer over HTTP, trickled ICE, and the data channel.
// It knows nothing about the page; app.js listens to its callbacks.

import { clientReady, parseMessage } from "./rtvi.js";

const OFFER_URL = "/api/offer";
// Candidates found within this window go out in one PATCH.
const CANDIDATE_BATCH_MS = 40;
// Stopped while the offer was in flight: how long to let the handshake finish
// so the server can be told we left (see close()).
const LINGER_MS = 5_000;

// An HTTP error from the signalling endpoints, carrying the server's sentence.
export class SignallingError extends Error {
  constructor(message, { status = 0, code = "" } = {}) {
    super(message);
    this.name = "SignallingError";
    this.status = status;
    this.code = code;
  }
}

async function sendJSON(method, body) {
  let response;
  try {
    response = await fetch(OFFER_URL, {
      method,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new SignallingError("The appliance could not be reached. Check that it is running and that this device is on the same network.", { code: "network" });
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const sentence = payload && typeof payload.error === "string" && payload.error.trim()
      ? payload.error.trim()
      : `The appliance answered with an error (HTTP ${response.status}).`;
    throw new SignallingError(sentence, {
      status: response.status,
      code: payload && typeof payload.code === "string" ? payload.code : "",
    });
  }
  return payload ?? {};
}

export class VoiceSession {
  /**
   * @param {object} callbacks
   *   onStatus(status)  "connecting" | "connected" | "interrupted" | "failed" | "ended"
   *   onMessage(msg)    a parsed RTVI message ({kind: "rtvi", type, data})
   *   onRemoteStream(stream)
   */
  constructor({ iceServers = [], onStatus, onMessage, onRemoteStream }) {
    this.iceServers = iceServers;
    this.onStatus = onStatus ?? (() => {});
    this.onMessage = onMessage ?? (() => {});
    this.onRemoteStream = onRemoteStream ?? (() => {});
    this.pc = null;
    this.dc = null;
    this.pcId = null;
    this.closed = false;
    this.connected = false;
    this._pending = []; // local candidates waiting for pc_id
    this._endSent = false;
    this._flushTimer = null;
    this._negotiating = null;
    this._offerInFlight = false;
    this._lingering = false; // closed by the page, finishing the handshake quietly
  }

  async open(micStream) {
    // max-bundle: one transport for audio and data, as the server (aiortc,
    // MAX_BUNDLE) expects; it also halves the candidates to send.
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;

    pc.addEventListener("icecandidate", (event) => this._onLocalCandidate(event.candidate));
    pc.addEventListener("track", (event) => {
      const stream = event.streams[0] ?? new MediaStream([event.track]);
      this.onRemoteStream(stream);
    });
    pc.addEventListener("connectionstatechange", () => this._onPcState());
    pc.addEventListener("iceconnectionstatechange", () => {
      if (pc.iceConnectionState === "failed") this._fail();
    });

    // Pipecat maps transceivers by creation order: 0 = microphone audio,
    // 1 = camera, 2 = screen. This assistant is voice only, so it offers just
    // transceiver 0 (sendrecv: our voice up, the assistant's voice down).
    const [track] = micStream.getAudioTracks();
    pc.addTransceiver(track, { direction: "sendrecv", streams: [micStream] });

    // The server accepts whatever channel we open; "chat" is the label
    // Pipecat's own clients use. Ordered, because RTVI events are a sequence.
    const dc = pc.createDataChannel("chat", { ordered: true });
    this.dc = dc;
    dc.addEventListener("open", () => {
      if (this.closed) return;
      this.send(clientReady());
      this._checkConnected();
    });
    dc.addEventListener("message", (event) => this._onData(event.data));
    dc.addEventListener("close", () => {
      // The server closed the conversation (it left, or timed out).
      if (!this.closed) this._end("ended");
    });

    this.onStatus("connecting");
    await this._negotiate(false);
  }

  send(message) {
    if (this.dc?.readyState === "open") this.dc.send(JSON.stringify(message));
  }

  // Idempotent and synchronous, so it can run from "pagehide". The microphone
  // stops at once. If the server already holds a seat for us (offer sent) but
  // the connection is not up yet, only a finished handshake followed by a close
  // frees that seat early (otherwise the server's connect timeout does, a
  // minute later); so the connection is left to finish for a few seconds,
  // silently, and then closed.
  close() {
    if (this.closed) return;
    this.closed = true;
    for (const sender of this.pc?.getSenders() ?? []) sender.track?.stop();
    const seatHeld = this._offerInFlight
      || (this.pcId && ["new", "connecting"].includes(this.pc?.connectionState));
    if (seatHeld) {
      this._lingering = true;
      this._lingerTimer = setTimeout(() => this._closePc(), LINGER_MS);
      return;
    }
    this._closePc();
  }

  _closePc() {
    clearTimeout(this._lingerTimer);
    clearTimeout(this._flushTimer);
    this._lingering = false;
    try {
      this.dc?.close();
    } catch { /* already closed */ }
    if (this.pc && this.pc.signalingState !== "closed") {
      for (const transceiver of this.pc.getTransceivers()) {
        try {
          transceiver.stop();
        } catch { /* closed */ }
      }
      this.pc.close();
    }
  }

  // --- negotiation ---------------------------------------------------------

  async _negotiate(isRenegotiation) {
    const pc = this.pc;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const body = { sdp: pc.localDescription.sdp, type: "offer" };
    if (isRenegotiation && this.pcId) {
      body.pc_id = this.pcId;
      body.restart_pc = false;
    }
    // Stopped meanwhile: nothing was sent, so the server holds no seat.
    if (this.closed) return;
    let answer;
    this._offerInFlight = !isRenegotiation;
    try {
      answer = await sendJSON("POST", body);
    } catch (err) {
      if (this._lingering) this._closePc();
      throw err;
    } finally {
      this._offerInFlight = false;
    }
    if (this.closed && !this._lingering) return;
    if (typeof answer.sdp !== "string" || !answer.sdp) {
      if (this._lingering) this._closePc();
      throw new SignallingError("The appliance sent an unusable answer to the connection request.", { code: "bad-answer" });
    }
    if (typeof answer.pc_id === "string") this.pcId = answer.pc_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    this._scheduleFlush();
  }

  // Pipecat asks for a new offer with {type: "renegotiate"}.
  async _renegotiate() {
    if (this._negotiating || this.closed || !this.pcId) return;
    this._negotiating = this._negotiate(true)
      .catch((err) => console.warn("voice-agent: renegotiation failed", err))
      .finally(() => { this._negotiating = null; });
  }

  // --- trickle ICE ---------------------------------------------------------

  _onLocalCandidate(candidate) {
    if (this.closed && !this._lingering) return;
    if (!candidate || candidate.candidate === "") {
      // Gathering finished: an empty candidate string tells the server so.
      if (this._endSent) return;
      this._endSent = true;
      const first = this.pc.getTransceivers()[0];
      this._pending.push({ candidate: "", sdp_mid: first?.mid ?? "0", sdp_mline_index: 0 });
    } else {
      this._pending.push({
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid,
        sdp_mline_index: candidate.sdpMLineIndex,
      });
    }
    this._scheduleFlush();
  }

  _scheduleFlush() {
    // Candidates found before the answer wait for the pc_id it carries.
    if (!this.pcId || this._flushTimer || this._pending.length === 0) return;
    this._flushTimer = setTimeout(() => {
      this._flushTimer = null;
      this._flush();
    }, CANDIDATE_BATCH_MS);
  }

  async _flush() {
    if ((this.closed && !this._lingering) || !this.pcId || this._pending.length === 0) return;
    const candidates = this._pending.splice(0);
    try {
      await sendJSON("PATCH", { pc_id: this.pcId, candidates });
    } catch (err) {
      // A lost candidate rarely matters (others usually work); if none
      // connects, the ICE failure path reports it.
      console.warn("voice-agent: sending ICE candidates failed", err);
    }
  }

  // --- state -------------------------------------------------------------

  _onPcState() {
    if (this._lingering) {
      // The handshake we kept going for the server's sake is done: close now.
      if (["connected", "failed", "closed"].includes(this.pc.connectionState)) this._closePc();
      return;
    }
    if (this.closed) return;
    switch (this.pc.connectionState) {
      case "connected":
        this._checkConnected();
        break;
      case "disconnected":
        // Often recovers by itself (Wi-Fi hiccup); the browser moves on to
        // "failed" if it doesn't.
        if (this.connected) this.onStatus("interrupted");
        break;
      case "failed":
        this._fail();
        break;
      case "closed":
        this._end("ended");
        break;
      default:
        break;
    }
  }

  _checkConnected() {
    if (this.closed) return;
    if (this.pc.connectionState === "connected" && this.dc?.readyState === "open") {
      this.connected = true;
      this.onStatus("connected");
    }
  }

  _fail() {
    this._end("failed");
  }

  _end(status) {
    if (this.closed) return;
    this.close();
    this.onStatus(status);
  }

  _onData(raw) {
    if (this.closed) return;
    const msg = parseMessage(raw);
    if (!msg) return;
    if (msg.kind === "signalling") {
      if (msg.type === "renegotiate") this._renegotiate();
      else if (msg.type === "peerLeft") this._end("ended");
      return;
    }
    this.onMessage(msg);
  }
}
