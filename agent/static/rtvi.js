// The small part of Pipecat's RTVI protocol this page speaks, over the
// WebRTC data channel. Checked against pipecat-ai 1.14.0
// (pipecat/processors/frameworks/rtvi/models.py).

// Pipecat 1.14 speaks protocol 2.2.0. Announcing the same version gets us the
// v2 "bot-output" messages (spoken_status / spoken_progress) and no
// compatibility warning in the server log.
export const RTVI_VERSION = "2.2.0";
export const RTVI_LABEL = "rtvi-ai";

// SmallWebRTC's own control messages share the channel: {type: "signalling", message: {...}}.
export const SIGNALLING_TYPE = "signalling";

const CLIENT_LIBRARY = "voice-agent-web";
const CLIENT_VERSION = "0.1.0";

export function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

// Sent once the data channel opens. Pipecat answers with "bot-ready" and only
// then starts listening to the microphone.
export function clientReady() {
  return {
    label: RTVI_LABEL,
    type: "client-ready",
    id: newId(),
    data: {
      version: RTVI_VERSION,
      about: { library: CLIENT_LIBRARY, library_version: CLIENT_VERSION, platform: "web" },
    },
  };
}

// Sorts one raw data-channel message into {kind: "rtvi" | "signalling", ...}
// or null. Pipecat's keep-alive and anything unknown are ignored.
export function parseMessage(raw) {
  if (typeof raw !== "string") return null;
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!msg || typeof msg !== "object") return null;
  if (msg.type === SIGNALLING_TYPE && msg.message && typeof msg.message === "object") {
    return { kind: "signalling", type: String(msg.message.type ?? ""), message: msg.message };
  }
  if (msg.label === RTVI_LABEL && typeof msg.type === "string") {
    const data = msg.data && typeof msg.data === "object" ? msg.data : {};
    return { kind: "rtvi", type: msg.type, id: msg.id, data };
  }
  return null;
}

// The major version the server announced in bot-ready, or null.
export function majorVersion(version) {
  const major = Number.parseInt(String(version ?? "").split(".")[0], 10);
  return Number.isFinite(major) ? major : null;
}
