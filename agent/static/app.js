// The page: Start/Stop, microphone permission, connection status, the
// listening/speaking indicator, the transcript and per-turn latency.
// WebRTC details live in session.js, the RTVI envelope in rtvi.js.

import { VoiceSession, SignallingError } from "./session.js";
import { Transcript } from "./transcript.js";
import { RTVI_VERSION, majorVersion } from "./rtvi.js";

// Give up on a connection that has not come up in this time.
const CONNECT_TIMEOUT_MS = 30_000;
// A turn with no reply (nothing heard, or a failed backend) should not leave
// the indicator on "thinking" forever.
const THINKING_TIMEOUT_MS = 45_000;
const HEALTH_RETRY_MS = 15_000;

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  status: $("status"),
  activity: $("activity"),
  activityText: $("activity-text"),
  error: $("error"),
  intro: $("intro"),
  health: $("health"),
  secureNotice: $("secure-notice"),
  enableSound: $("enable-sound"),
  audio: $("remote-audio"),
  transcript: $("transcript"),
  transcriptEmpty: $("transcript-empty"),
};

const STATUS_TEXT = {
  idle: "Not connected",
  "requesting-microphone": "Waiting for microphone permission…",
  connecting: "Connecting to the assistant…",
  connected: "Connected",
  interrupted: "Connection interrupted, trying to recover…",
  disconnected: "Disconnected",
  failed: "Connection failed",
};

const ACTIVITY_TEXT = {
  waiting: "Getting ready…",
  listening: "Listening",
  "user-speaking": "You are speaking",
  thinking: "Thinking…",
  "bot-speaking": "Speaking",
};

// Test hook, kept current: a Playwright test waits on
// window.voiceAgent.state === "connected" and reads pc.getStats().
// `pc` stays the last peer connection (closed after Stop) until the next Start.
const agent = {
  state: "idle",
  activity: null,
  pc: null,
  pcId: null,
  botReady: false,
  protocolVersion: RTVI_VERSION,
  serverVersion: null,
  lastMetrics: null,
  error: "",
  events: [], // the last RTVI message types received, with page time in ms
};
const MAX_EVENTS = 200;
window.voiceAgent = agent;

const transcript = new Transcript(ui.transcript, ui.transcriptEmpty);

let session = null; // the VoiceSession of the current attempt
let micStream = null;
let attempt = 0; // bumps on every Start/Stop, so stale async steps bail out
let connectTimer = null;
let thinkingTimer = null;
let userStoppedAt = null; // performance.now() at user-stopped-speaking
// performance.now() when voice activity last stopped ("vad-user-stopped-speaking",
// sent only if the server enables it). In Pipecat 1.14 "user-stopped-speaking"
// comes once the turn is judged over and transcribed, later than the speech
// really ended, so this is the better start for the page's own latency estimate.
let vadStoppedAt = null;
let seenUserInput = false; // the server sends "user-input"; skip the deprecated twin
let seenBotOutput = false; // the server sends "bot-output"; skip "bot-tts-text"

// --- small UI helpers -------------------------------------------------------

function setState(state, statusText) {
  agent.state = state;
  document.body.dataset.state = state;
  ui.status.textContent = statusText ?? STATUS_TEXT[state] ?? state;
  const busy = state === "requesting-microphone" || state === "connecting"
    || state === "connected" || state === "interrupted";
  ui.start.textContent = busy ? "Stop" : "Start";
  ui.start.classList.toggle("stop", busy);
  if (!busy) setActivity(null);
}

function setActivity(activity) {
  clearTimeout(thinkingTimer);
  agent.activity = activity;
  if (!activity) {
    ui.activity.hidden = true;
    ui.activity.dataset.activity = "";
    return;
  }
  ui.activity.hidden = false;
  ui.activity.dataset.activity = activity;
  ui.activityText.textContent = ACTIVITY_TEXT[activity] ?? activity;
  if (activity === "thinking") {
    thinkingTimer = setTimeout(() => {
      if (agent.activity === "thinking") setActivity("listening");
    }, THINKING_TIMEOUT_MS);
  }
}

// A problem the assistant got over (one reply not spoken, say) is shown until it speaks
// again; anything that ends the session stays.
let errorIsPassing = false;

function showError(message, passing = false) {
  errorIsPassing = passing && Boolean(message);
  agent.error = message || "";
  ui.error.textContent = agent.error;
  ui.error.hidden = !agent.error;
}

// --- microphone ---------------------------------------------------------------

const INSECURE_MESSAGE = "The microphone is blocked on this address. Browsers only allow it on "
  + "https:// pages (or on localhost), and this page was opened over plain http://. Open the "
  + "appliance's https:// address instead; the first time, your browser asks you to accept its "
  + "certificate (the README explains this step).";

function microphoneAvailable() {
  return window.isSecureContext !== false && !!navigator.mediaDevices?.getUserMedia;
}

// [status line, explanation] for a getUserMedia failure.
function microphoneProblem(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return ["Microphone blocked", "Microphone access was refused, so the assistant cannot hear you. "
        + "Allow the microphone for this site (usually from the icon next to the address bar), then press Start again."];
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return ["No microphone", "No microphone was found. Connect or switch on a microphone, then press Start again."];
    case "NotReadableError":
    case "TrackStartError":
      return ["Microphone unavailable", "The microphone could not be started. Another application may be "
        + "using it; close it and press Start again."];
    default:
      return ["Microphone unavailable", `The microphone could not be opened${err?.message ? ` (${err.message})` : ""}. Press Start to try again.`];
  }
}

// --- start / stop -------------------------------------------------------------

async function start() {
  const my = ++attempt;
  showError("");
  ui.enableSound.hidden = true;
  if (!microphoneAvailable()) {
    setState("failed", "Microphone unavailable on this address");
    ui.secureNotice.hidden = true; // same words, now as the error
    showError(INSECURE_MESSAGE);
    return;
  }

  // Safari only lets audio play if play() is first called inside the click.
  ui.audio.play().catch(() => {});

  setState("requesting-microphone");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (err) {
    if (my !== attempt) return;
    const [status, explanation] = microphoneProblem(err);
    setState("failed", status);
    showError(explanation);
    return;
  }
  if (my !== attempt) {
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  micStream = stream;

  resetConversation();
  setState("connecting");
  const iceServers = Array.isArray(window.AGENT_CONFIG?.iceServers) ? window.AGENT_CONFIG.iceServers : [];
  const s = new VoiceSession({
    iceServers,
    onStatus: (status) => { if (s === session) onSessionStatus(status); },
    onMessage: (msg) => { if (s === session) onRtvi(msg); },
    onRemoteStream: (remote) => { if (s === session) playRemote(remote); },
  });
  session = s;
  connectTimer = setTimeout(() => {
    if (s !== session || agent.state !== "connecting") return;
    endSession("failed", s.pcId
      ? "The connection could not be set up in time. The appliance answered, but its audio "
        + "connection did not come through: a firewall or the container's network setup may be "
        + "blocking it (see the README's troubleshooting section). Press Start to try again."
      : "The appliance did not answer in time. Check that it is running, then press Start again.");
  }, CONNECT_TIMEOUT_MS);

  try {
    const opening = s.open(stream);
    agent.pc = s.pc; // created synchronously by open()
    await opening;
    agent.pcId = s.pcId;
  } catch (err) {
    if (s !== session) return;
    endSession("failed", connectMessage(err));
  }
}

function connectMessage(err) {
  if (err instanceof SignallingError) {
    // The server's own sentence ("The assistant is busy with 4 other conversations; …").
    return err.message;
  }
  return `The connection could not be set up${err?.message ? ` (${err.message})` : ""}. Press Start to try again.`;
}

function stop() {
  attempt++;
  endSession("disconnected");
}

// Tears everything down; `state` is what the page shows afterwards.
function endSession(state, errorMessage = "", statusText) {
  clearTimeout(connectTimer);
  const s = session;
  session = null;
  s?.close();
  if (s) agent.pc = s.pc;
  micStream?.getTracks().forEach((t) => t.stop());
  micStream = null;
  ui.audio.srcObject = null;
  ui.enableSound.hidden = true;
  agent.botReady = false;
  userStoppedAt = null;
  vadStoppedAt = null;
  setState(state, statusText);
  if (errorMessage) showError(errorMessage);
}

function resetConversation() {
  transcript.reset();
  agent.botReady = false;
  agent.serverVersion = null;
  agent.lastMetrics = null;
  agent.events = [];
  agent.pc = null;
  agent.pcId = null;
  userStoppedAt = null;
  vadStoppedAt = null;
  seenUserInput = false;
  seenBotOutput = false;
}

function onSessionStatus(status) {
  switch (status) {
    case "connected":
      clearTimeout(connectTimer);
      agent.pc = session.pc;
      agent.pcId = session.pcId;
      setState("connected");
      if (!agent.botReady) setActivity("waiting");
      break;
    case "interrupted":
      setState("interrupted");
      break;
    case "failed":
      endSession("failed", agent.state === "connecting"
        ? "The audio connection to the assistant could not be established. A firewall or the "
          + "appliance's network setup may be blocking it (see the README's troubleshooting section). Press Start to try again."
        : "The connection to the assistant was lost. Press Start to talk again.");
      break;
    case "ended":
      endSession("disconnected", "", "The assistant ended the conversation");
      break;
    default:
      break;
  }
}

// --- remote audio ----------------------------------------------------------------

function playRemote(stream) {
  if (ui.audio.srcObject !== stream) ui.audio.srcObject = stream;
  const playing = ui.audio.play();
  playing?.then(() => { ui.enableSound.hidden = true; }).catch((err) => {
    // Autoplay refused: a click on the page is needed before sound may play.
    if (err?.name === "NotAllowedError") ui.enableSound.hidden = false;
  });
}

ui.enableSound.addEventListener("click", () => {
  ui.audio.play().then(() => { ui.enableSound.hidden = true; }).catch(() => {});
});

// --- RTVI events -----------------------------------------------------------------

function onRtvi({ type, data }) {
  agent.events.push({ t: Math.round(performance.now()), type, ...(type === "bot-output" ? { data } : {}) });
  if (agent.events.length > MAX_EVENTS) agent.events.shift();
  switch (type) {
    case "bot-ready":
      agent.botReady = true;
      agent.serverVersion = typeof data.version === "string" ? data.version : null;
      if (majorVersion(agent.serverVersion) !== majorVersion(RTVI_VERSION)) {
        console.warn(`voice-agent: server speaks RTVI ${agent.serverVersion}, this page ${RTVI_VERSION}`);
      }
      if (agent.activity === "waiting" || !agent.activity) setActivity("listening");
      break;

    case "user-started-speaking":
      transcript.userTurnStarted();
      userStoppedAt = null;
      setActivity("user-speaking");
      break;
    case "vad-user-started-speaking":
      vadStoppedAt = null;
      break;
    case "vad-user-stopped-speaking":
      vadStoppedAt = performance.now();
      break;
    case "user-stopped-speaking":
      userStoppedAt = performance.now();
      transcript.userTurnEnded();
      setActivity("thinking");
      break;
    case "bot-llm-started":
      if (agent.activity === "listening") setActivity("thinking");
      break;
    case "bot-started-speaking":
      if (errorIsPassing) showError("");
      transcript.botStarted();
      if (userStoppedAt !== null) {
        // Fallback measure; a "turn-latency" server message replaces it.
        const from = vadStoppedAt !== null && vadStoppedAt <= userStoppedAt ? vadStoppedAt : userStoppedAt;
        transcript.setTurnLatency(performance.now() - from, "client");
      }
      userStoppedAt = null;
      vadStoppedAt = null;
      setActivity("bot-speaking");
      break;
    case "bot-stopped-speaking":
      transcript.botStopped();
      if (agent.activity === "bot-speaking") setActivity("listening");
      break;
    case "bot-interrupted":
      transcript.botInterrupted();
      break;

    case "user-input":
      // Protocol 2.x: what the user said ("transcription") or typed ("chat").
      // Backchannels ("mhm") don't make a turn; leave them out.
      seenUserInput = true;
      if (data.input_type !== "backchannel") transcript.userText(data.text, data.final !== false);
      break;
    case "user-transcription":
      // Deprecated twin of user-input, sent right after it by Pipecat 1.14.
      if (!seenUserInput) transcript.userText(data.text, data.final !== false);
      break;

    case "bot-output":
      seenBotOutput = true;
      transcript.botOutput(data);
      break;
    case "bot-tts-text":
      if (!seenBotOutput) transcript.botText(data.text);
      break;

    case "server-message":
      if (data.type === "turn-latency" && typeof data.ms === "number") {
        transcript.setTurnLatency(data.ms, "server");
      }
      break;
    case "metrics":
      agent.lastMetrics = data;
      break;

    case "error": {
      const text = typeof data.error === "string" && data.error ? data.error : "Something went wrong.";
      if (data.fatal) {
        endSession("failed", `The assistant stopped because of an error: ${text}`);
      } else {
        showError(`The assistant had a problem but is still listening: ${text}`, true);
      }
      break;
    }
    case "error-response":
      // An answer to one of our messages (e.g. a version warning): for the console.
      console.warn("voice-agent: server error-response", data.error ?? data);
      break;
    default:
      break; // bot-llm-text, bot-tts-started, … are not needed here
  }
}

// --- health notice ---------------------------------------------------------------

const BACKEND_NAMES = { ollama: "language model", speaches: "speech engine" };

// Words for a degraded /health body without a "reason"; unknown shapes give "".
function describeBackends(backends) {
  if (!backends || typeof backends !== "object") return "";
  const parts = [];
  for (const [name, info] of Object.entries(backends)) {
    if (!info || typeof info !== "object") continue;
    const what = `the ${BACKEND_NAMES[name] ?? name}`;
    const model = typeof info.model === "string" && info.model ? ` (${info.model})` : "";
    if (info.reachable === false) {
      parts.push(`${what} is not reachable`);
    } else if (info.pulling) {
      let pct = Number(info.progress);
      if (Number.isFinite(pct) && info.progress !== null && info.progress !== "") {
        if (pct <= 1) pct *= 100; // a fraction or a percentage
        parts.push(`${what}${model} is being downloaded (${Math.max(0, Math.min(100, Math.round(pct)))} %)`);
      } else {
        parts.push(`${what}${model} is being downloaded`);
      }
    } else if (info.installed === false) {
      parts.push(`${what}${model} is not installed`);
    }
  }
  return parts.join("; ");
}

let healthTimer = null;
async function checkHealth() {
  clearTimeout(healthTimer);
  let body;
  try {
    const response = await fetch("/health", { cache: "no-store", headers: { Accept: "application/json" } });
    body = await response.json();
  } catch {
    return; // no health endpoint, or not JSON: say nothing
  }
  if (!body || typeof body !== "object") return;
  if (body.status === "ok") {
    ui.health.hidden = true;
    ui.health.textContent = "";
    return;
  }
  const reason = (typeof body.reason === "string" && body.reason.trim()) || describeBackends(body.backends)
    || (typeof body.status === "string" ? body.status : "unknown reason");
  ui.health.textContent = `Backends not ready: ${reason}. The assistant may not answer until they are.`;
  ui.health.hidden = false;
  healthTimer = setTimeout(checkHealth, HEALTH_RETRY_MS);
}

// --- wiring ---------------------------------------------------------------------

ui.start.addEventListener("click", () => {
  if (session || agent.state === "requesting-microphone") stop();
  else start();
});

// Leaving the page ends the conversation so the server frees its seat.
window.addEventListener("pagehide", () => {
  if (session || micStream) {
    attempt++;
    endSession("disconnected");
  }
});
// Back from the back/forward cache: show a fresh, idle page.
window.addEventListener("pageshow", (event) => {
  if (event.persisted && !session) setState("idle");
});

if (!microphoneAvailable()) {
  ui.secureNotice.textContent = INSECURE_MESSAGE;
  ui.secureNotice.hidden = false;
  ui.intro.hidden = true; // its advice cannot work here
}
setState("idle");
checkHealth();
