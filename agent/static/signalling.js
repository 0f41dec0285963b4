// Signalling with the agent's SmallWebRTC endpoint for one peer connection:
// the offer and its answer over HTTP (POST /api/offer), renegotiation, the
// restart offer that moves a conversation onto a new peer connection, and
// trickled ICE candidates (PATCH /api/offer). It works for as long as its peer
// connection is open, which can be a little longer than the call that made it
// (see Call's #release): the peer connection's own state is its only guard.

import { apiFetch } from "./access.js";

const OFFER_URL = "/api/offer";
// Candidates found within this window go out in one PATCH.
const CANDIDATE_BATCH_MS = 40;

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
    response = await apiFetch(OFFER_URL, {
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

export class Signalling {
  pcId = null; // the server's name for this connection, from its answer
  #pc;
  #offerInFlight = false;
  #renegotiation = null; // the renegotiation under way, if any
  #queued = []; // local candidates not sent yet (they wait for pc_id)
  #flushTimer = null;
  #gatheringDone = false;

  constructor(pc) {
    this.#pc = pc;
    pc.addEventListener("icecandidate", (event) => this.#onLocalCandidate(event.candidate));
  }

  get #closed() {
    return this.#pc.signalingState === "closed";
  }

  // Whether the server may be holding a seat for this connection that only a
  // finished handshake frees early: the offer is on its way, or answered and
  // the connection is not up yet.
  get seatHeld() {
    return this.#offerInFlight
      || (this.pcId !== null && ["new", "connecting"].includes(this.#pc.connectionState));
  }

  // The first offer/answer. Resolves once the answer is applied (or at once
  // if the connection was closed before anything was sent).
  offer() {
    return this.#negotiate({}, { holdsSeat: true });
  }

  // Offers this new peer connection as the continuation of the one the server
  // knows as `formerId`; the answer names the conversation anew. May be called
  // again after a failure: the same offer is sent again.
  restart(formerId) {
    return this.#negotiate({ pc_id: formerId, restart_pc: true }, { holdsSeat: true });
  }

  // Pipecat asks for a new offer with {type: "renegotiate"}.
  renegotiate() {
    if (this.#renegotiation || this.#closed || !this.pcId) return;
    this.#renegotiation = this.#negotiate({ pc_id: this.pcId, restart_pc: false }, {})
      .catch((err) => console.warn("voice-agent: renegotiation failed", err))
      .finally(() => { this.#renegotiation = null; });
  }

  // `holdsSeat`: until it is answered, this offer may hold a seat on the server
  // that only a finished handshake frees early (see seatHeld).
  async #negotiate(fields, { holdsSeat = false } = {}) {
    const pc = this.#pc;
    // An offer still waiting for its answer is sent again as it is.
    if (pc.signalingState !== "have-local-offer") await pc.setLocalDescription(await pc.createOffer());
    // Closed meanwhile: nothing was sent, so the server holds no seat.
    if (this.#closed) return;
    const body = { sdp: pc.localDescription.sdp, type: "offer", ...fields };
    let answer;
    this.#offerInFlight = holdsSeat;
    try {
      answer = await sendJSON("POST", body);
    } finally {
      this.#offerInFlight = false;
    }
    if (this.#closed) return;
    if (typeof answer.sdp !== "string" || !answer.sdp) {
      throw new SignallingError("The appliance sent an unusable answer to the connection request.", { code: "bad-answer" });
    }
    if (typeof answer.pc_id === "string") this.pcId = answer.pc_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    this.#scheduleFlush();
  }

  // --- trickle ICE -------------------------------------------------------------

  #onLocalCandidate(candidate) {
    if (this.#closed) return;
    if (!candidate || candidate.candidate === "") {
      // Gathering finished: an empty candidate string tells the server so.
      // Some browsers say it twice (empty candidate, then null).
      if (this.#gatheringDone) return;
      this.#gatheringDone = true;
      const first = this.#pc.getTransceivers()[0];
      this.#queued.push({ candidate: "", sdp_mid: first?.mid ?? "0", sdp_mline_index: 0 });
    } else {
      this.#queued.push({
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid,
        sdp_mline_index: candidate.sdpMLineIndex,
      });
    }
    this.#scheduleFlush();
  }

  #scheduleFlush() {
    // Candidates found before the answer wait for the pc_id it carries.
    if (!this.pcId || this.#flushTimer || this.#queued.length === 0) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      this.#flush();
    }, CANDIDATE_BATCH_MS);
  }

  async #flush() {
    if (this.#closed || this.#queued.length === 0) return;
    const candidates = this.#queued.splice(0);
    try {
      await sendJSON("PATCH", { pc_id: this.pcId, candidates });
    } catch (err) {
      // A lost candidate rarely matters (others usually work); if none
      // connects, the ICE failure path reports it.
      console.warn("voice-agent: sending ICE candidates failed", err);
    }
  }
}
