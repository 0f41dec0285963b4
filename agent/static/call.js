// One press of Start, until Stop or a failure ends it: the microphone, the
// peer connection with its data channel and signalling, the timers, the
// latency heard (heard-meter.js), and what the page shows meanwhile. A Call
// is used once; the next Start makes a new one.
// When the network drops the connection mid-call, the call moves the
// conversation onto a new peer connection (see reconnect.js).
//
// Staleness: #over is the call's one token. Every listener the call adds is
// tied to it, every timer and every await checks it, so nothing from an ended
// call reaches the page. A peer connection's listeners hang on a token of its
// own, which the call's aborts, so one the call has replaced is silent too.
// Only a peer connection may outlive the call, briefly and silently (see peer.js).

import { fetchIceServers } from "./config.js";
import { Conversation } from "./conversation.js";
import { HeardMeter } from "./heard-meter.js";
import {
  ENDED_BY_ASSISTANT, NOT_ESTABLISHED, RECONNECT_FAILED, couldNotConnect, couldNotReconnect, notConnectedInTime,
} from "./messages.js";
import { INSECURE_MESSAGE, microphoneAvailable, microphoneProblem, openMicrophone, stopTracks } from "./microphone.js";
import { closeAfterHandshake, closePeer, createPeer } from "./peer.js";
import { RECONNECT_TIMEOUT_MS, offerRestart } from "./reconnect.js";
import { clientReady, parseMessage } from "./rtvi.js";
import { Signalling } from "./signalling.js";
import * as view from "./view.js";

// Give up on a connection that has not come up in this time.
const CONNECT_TIMEOUT_MS = 30_000;

export class Call {
  // Read by the page and its test hook; written only by the call itself.
  state = "idle";
  error = "";
  pc = null;

  #over = new AbortController();
  #transcript;
  #conversation;
  #heard;
  #mic = null;
  #iceServers = [];
  #link = null; // the current peer connection: {pc, dc, signalling, over}
  #handshake = null; // its offer (or restart offer) and answer
  #replaced = null; // the link a restart replaces, open until the restart is answered
  #formerId = null; // the conversation's id on the server before the current link's answer
  #reconnectTimer = null;
  #errorPassing = false; // the error shown is one the assistant got over

  constructor(transcript) {
    this.#transcript = transcript;
    this.#conversation = new Conversation(transcript, {
      problem: (text) => this.#showError(text, true),
      spoke: () => { if (this.#errorPassing) this.#showError(""); },
      fatal: (text) => this.#end("failed", text),
    });
    this.#heard = new HeardMeter(({ ms }) => {
      if (!this.#ended) transcript.setHeardLatency(ms);
    });
  }

  get busy() {
    return view.isBusy(this.state);
  }

  get pcId() {
    return this.#link?.signalling.pcId ?? this.#formerId;
  }

  get activity() {
    return this.#conversation.activity;
  }

  get botReady() {
    return this.#conversation.botReady;
  }

  get events() {
    return this.#conversation.events;
  }

  // One per reply heard: {ms, speechEnd, replyStart}, see heard-latency.js.
  get heard() {
    return this.#heard.latency.measurements;
  }

  get #ended() {
    return this.#over.signal.aborted;
  }

  async start() {
    this.#showError("");
    view.stopRemote();
    if (!microphoneAvailable()) {
      view.showSecureNotice(""); // same words, now as the error
      this.#end("failed", INSECURE_MESSAGE, "Microphone unavailable on this address");
      return;
    }
    view.primeAudio();
    this.#heard.start();
    this.#setState("requesting-microphone");
    let mic;
    try {
      mic = await openMicrophone();
    } catch (err) {
      const [status, explanation] = microphoneProblem(err);
      this.#end("failed", explanation, status);
      return;
    }
    if (this.#ended) {
      stopTracks(mic);
      return;
    }
    this.#mic = mic;
    this.#heard.hearMicrophone(mic);
    this.#transcript.reset();
    this.#setState("connecting");
    this.#after(CONNECT_TIMEOUT_MS, () => this.#connectTimedOut());
    // Off the network, the connection is gone, whatever it says; back on one
    // (or on another), it may be stale.
    for (const type of ["offline", "online"]) {
      window.addEventListener(type, () => {
        if (this.state === "connected") this.#reconnect(`the browser went ${type}`);
      }, { signal: this.#over.signal });
    }
    try {
      this.#iceServers = await fetchIceServers();
      if (this.#ended) return;
      this.#connect();
      await this.#handshake;
    } catch (err) {
      this.#end("failed", couldNotConnect(err));
    }
  }

  stop() {
    this.#end("disconnected");
  }

  // A new peer connection for this call. With `formerId` it carries on that
  // conversation (a restart offer); without, the server starts one.
  #connect(formerId = null) {
    const { pc, dc } = createPeer(this.#mic, this.#iceServers);
    const over = new AbortController();
    this.#over.signal.addEventListener("abort", () => over.abort(), { signal: over.signal });
    const link = { pc, dc, signalling: new Signalling(pc), over };
    this.#link = link;
    this.pc = pc;
    const on = (target, type, listener) => target.addEventListener(type, listener, { signal: over.signal });
    on(pc, "track", (event) => {
      const stream = event.streams[0] ?? new MediaStream([event.track]);
      view.playRemote(stream);
      this.#heard.hearAssistant(stream);
    });
    on(pc, "connectionstatechange", () => this.#onConnectionState());
    on(pc, "iceconnectionstatechange", () => {
      if (["disconnected", "failed"].includes(pc.iceConnectionState)) this.#lost(`ICE ${pc.iceConnectionState}`);
    });
    on(dc, "open", () => {
      dc.send(JSON.stringify(clientReady()));
      this.#checkConnected();
    });
    on(dc, "message", (event) => this.#onData(event.data));
    on(dc, "close", () => {
      // The server closed the conversation (it left, or timed out), unless
      // the channel went down with the network.
      if (pc.connectionState === "connected") this.#end("disconnected", "", ENDED_BY_ASSISTANT);
      else this.#lost("the data channel closed");
    });
    this.#handshake = formerId === null
      ? link.signalling.offer()
      : offerRestart(link.signalling, formerId, over.signal);
  }

  #onConnectionState() {
    switch (this.pc.connectionState) {
      case "connected":
        this.#checkConnected();
        break;
      case "disconnected":
      case "failed":
        this.#lost(`connection ${this.pc.connectionState}`);
        break;
      case "closed":
        this.#end("disconnected", "", ENDED_BY_ASSISTANT);
        break;
      default:
        break;
    }
  }

  // The current peer connection went down, or is going; `why` is for the console.
  #lost(why) {
    const failed = this.pc.connectionState === "failed" || this.pc.iceConnectionState === "failed";
    if (this.state === "connected" || this.state === "reconnecting") this.#reconnect(why);
    else if (this.state === "connecting" && failed) this.#end("failed", NOT_ESTABLISHED); // it never came up
  }

  // Moves the conversation onto a new peer connection (again, if the last
  // try's connection failed too), within RECONNECT_TIMEOUT_MS of the loss.
  #reconnect(why) {
    console.info(`voice-agent: reconnecting: ${why}`);
    if (this.state !== "reconnecting") {
      this.#setState("reconnecting");
      this.#conversation.suspend();
      this.#reconnectTimer = this.#after(RECONNECT_TIMEOUT_MS, () => this.#end("failed", RECONNECT_FAILED));
    }
    if (this.#replaced) this.#closeReplaced(this.#replaced);
    const former = this.#link;
    former.over.abort();
    this.#formerId = this.pcId;
    this.#connect(this.#formerId);
    const link = this.#link;
    // The old connection is closed once the server has taken the new one:
    // closed before, it could look to the server like a hang-up.
    this.#replaced = former;
    this.#handshake.then(() => this.#closeReplaced(former), (err) => {
      this.#closeReplaced(former);
      if (this.#link === link) this.#end("failed", couldNotReconnect(err));
    });
  }

  #closeReplaced(link) {
    if (this.#replaced !== link) return;
    this.#replaced = null;
    closePeer(link.pc, link.dc);
  }

  // Connected once both the audio and the data channel are up.
  #checkConnected() {
    if (this.pc.connectionState !== "connected" || this.#link.dc.readyState !== "open") return;
    clearTimeout(this.#reconnectTimer);
    this.#setState("connected");
    this.#conversation.connected();
  }

  #onData(raw) {
    const msg = parseMessage(raw);
    if (msg?.kind === "signalling") {
      if (msg.type === "renegotiate") this.#link.signalling.renegotiate();
      else if (msg.type === "peerLeft") this.#end("disconnected", "", ENDED_BY_ASSISTANT);
    } else if (msg) {
      this.#conversation.handle(msg);
    }
  }

  #connectTimedOut() {
    if (this.state === "connecting") this.#end("failed", notConnectedInTime(this.pcId !== null));
  }

  // Ends the call once (later calls do nothing); `state` is what the page shows afterwards.
  #end(state, errorMessage = "", statusText) {
    if (this.#ended) return;
    this.#over.abort();
    stopTracks(this.#mic);
    this.#heard.close();
    this.#release();
    view.stopRemote();
    this.#conversation.end();
    this.#setState(state, statusText);
    if (errorMessage) this.#showError(errorMessage);
  }

  // The microphone is stopped and the call's listeners are gone, so whatever
  // the connection still does is silent.
  #release() {
    if (this.#replaced) this.#closeReplaced(this.#replaced);
    if (!this.#link) return;
    const { pc, dc, signalling } = this.#link;
    if (signalling.seatHeld) closeAfterHandshake(pc, dc, this.#handshake);
    else closePeer(pc, dc);
  }

  #setState(state, statusText) {
    this.state = state;
    view.showState(state, statusText);
  }

  #showError(message, passing = false) {
    this.#errorPassing = passing && Boolean(message);
    this.error = message;
    view.showError(message);
  }

  // A timer that does nothing once the call has ended.
  #after(ms, callback) {
    return setTimeout(() => {
      if (!this.#ended) callback();
    }, ms);
  }
}
