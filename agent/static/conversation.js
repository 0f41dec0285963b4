// RTVI events of one call, as Pipecat 1.14 sends them (protocol 2.2.0, see
// rtvi.js), turned into the transcript, the activity indicator and the
// latency of each turn.

import { RTVI_VERSION, majorVersion } from "./rtvi.js";
import { showActivity } from "./view.js";

const MAX_EVENTS = 200;
// A turn with no reply (nothing heard, or a failed backend) should not leave
// the indicator on "thinking" forever.
const THINKING_TIMEOUT_MS = 45_000;

export class Conversation {
  botReady = false;
  activity = null; // what the indicator shows: "waiting", "listening", …, or null
  events = []; // the last RTVI message types received, with page time in ms
  #transcript;
  #call;
  #userStoppedAt = null; // performance.now() at user-stopped-speaking
  // performance.now() when voice activity last stopped ("vad-user-stopped-speaking",
  // sent only if the server enables it). In Pipecat 1.14 "user-stopped-speaking"
  // comes once the turn is judged over and transcribed, later than the speech
  // really ended, so this is the better start for the page's own latency estimate.
  #vadStoppedAt = null;
  #thinkingTimer = null;

  /**
   * @param {Transcript} transcript
   * @param {object} call  what the events may change in their call:
   *   problem(text)         a problem the assistant got over, shown until it speaks again
   *   spoke()               the assistant speaks again
   *   fatal(text)           the assistant gave up: the call ends
   */
  constructor(transcript, call) {
    this.#transcript = transcript;
    this.#call = call;
  }

  // The audio and the data channel are up.
  connected() {
    if (!this.botReady) this.#setActivity("waiting");
  }

  // The connection dropped; the call is getting it back. The assistant's
  // words in flight are lost, and it is not listening until it says so again.
  suspend() {
    this.botReady = false;
    this.#transcript.botStopped();
    this.#setActivity(null);
  }

  // The call is over: no indicator, and no timer left behind.
  end() {
    this.botReady = false;
    this.#setActivity(null);
  }

  handle({ type, data }) {
    const transcript = this.#transcript;
    const call = this.#call;
    const kept = type === "bot-output" || type === "server-message";
    this.events.push({ t: Math.round(performance.now()), type, ...(kept ? { data } : {}) });
    if (this.events.length > MAX_EVENTS) this.events.shift();
    switch (type) {
      case "bot-ready": {
        this.botReady = true;
        const version = typeof data.version === "string" ? data.version : null;
        if (majorVersion(version) !== majorVersion(RTVI_VERSION)) {
          console.warn(`voice-agent: server speaks RTVI ${version}, this page ${RTVI_VERSION}`);
        }
        if (this.activity === "waiting" || !this.activity) this.#setActivity("listening");
        break;
      }

      case "user-started-speaking":
        transcript.userTurnStarted();
        this.#userStoppedAt = null;
        this.#setActivity("user-speaking");
        break;
      case "vad-user-started-speaking":
        this.#vadStoppedAt = null;
        break;
      case "vad-user-stopped-speaking":
        this.#vadStoppedAt = performance.now();
        break;
      case "user-stopped-speaking":
        this.#userStoppedAt = performance.now();
        transcript.userTurnEnded();
        this.#setActivity("thinking");
        break;
      case "bot-llm-started":
        if (this.activity === "listening") this.#setActivity("thinking");
        break;
      case "bot-started-speaking":
        call.spoke();
        transcript.botStarted();
        if (this.#userStoppedAt !== null) {
          // Fallback measure; a "turn-latency" server message replaces it.
          const vad = this.#vadStoppedAt;
          const from = vad !== null && vad <= this.#userStoppedAt ? vad : this.#userStoppedAt;
          transcript.setTurnLatency(performance.now() - from, "client");
        }
        this.#userStoppedAt = null;
        this.#vadStoppedAt = null;
        this.#setActivity("bot-speaking");
        break;
      case "bot-stopped-speaking":
        transcript.botStopped();
        if (this.activity === "bot-speaking") this.#setActivity("listening");
        break;
      case "bot-interrupted":
        transcript.botInterrupted();
        break;

      case "user-input":
        // What the user said ("transcription") or typed ("chat"). Backchannels
        // ("mhm") don't make a turn; leave them out.
        if (data.input_type !== "backchannel") transcript.userText(data.text, data.final !== false);
        break;
      case "bot-output":
        transcript.botOutput(data);
        break;

      case "server-message":
        if (data.type === "turn-latency" && typeof data.ms === "number") {
          transcript.setTurnLatency(data.ms, "server", breakdown(data.parts_ms));
        } else if (data.type === "turn-continued") {
          transcript.turnContinued();
        } else if (data.type === "backend-fault" && typeof data.text === "string") {
          // A backend failed: the server's sentence says so (and is spoken when the
          // voice still works). No reply is coming for this turn.
          call.problem(data.text);
          if (this.activity === "thinking") this.#setActivity("listening");
        }
        break;

      case "error": {
        // The server words its errors for a person (agent/fault_notice.py).
        const text = typeof data.error === "string" && data.error ? data.error : "Something went wrong.";
        if (data.fatal) call.fatal(text);
        else call.problem(text);
        break;
      }
      case "error-response":
        // An answer to one of our messages (e.g. a version warning): for the console.
        console.warn("voice-agent: server error-response", data.error ?? data);
        break;
      default:
        break; // user-transcription, bot-tts-text, metrics, … are not needed here
    }
  }

  #setActivity(activity) {
    clearTimeout(this.#thinkingTimer);
    this.activity = activity;
    showActivity(activity);
    if (activity === "thinking") {
      this.#thinkingTimer = setTimeout(() => {
        if (this.activity === "thinking") this.#setActivity("listening");
      }, THINKING_TIMEOUT_MS);
    }
  }
}

// The parts of a turn's latency the server may send with it ({key: ms}), or null.
function breakdown(parts) {
  if (!parts || typeof parts !== "object") return null;
  const known = Object.entries(parts).filter(([, ms]) => typeof ms === "number" && Number.isFinite(ms));
  return known.length ? Object.fromEntries(known) : null;
}
