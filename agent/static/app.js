// The page: Start makes a Call (call.js) and Stop ends it, leaving the page
// ends it too, and the health notice says whether the backends are ready.
// The pieces: view.js shows things, call.js runs one conversation (with
// signalling.js, peer.js, reconnect.js, conversation.js and heard-meter.js,
// which measures the latency heard), transcript.js keeps the words, and
// access.js asks for the access token when the agent has one (AGENT_TOKEN).

import { checkAccess } from "./access.js";
import { Call } from "./call.js";
import { watchHealth } from "./health.js";
import { INSECURE_MESSAGE, microphoneAvailable } from "./microphone.js";
import { Transcript } from "./transcript.js";
import { showActivity, showSecureNotice, showState, ui } from "./view.js";

const transcript = new Transcript(ui.transcript, ui.transcriptEmpty);
let call = null; // the latest Call, kept after it ended until the next Start

ui.start.addEventListener("click", () => {
  if (call?.busy) {
    call.stop();
    return;
  }
  call = new Call(transcript);
  call.start();
});

// Leaving the page ends the conversation so the server frees its seat.
window.addEventListener("pagehide", () => {
  if (call?.busy) call.stop();
});
// Back from the back/forward cache: show a fresh, idle page.
window.addEventListener("pageshow", (event) => {
  if (!event.persisted || call?.busy) return;
  call = null;
  showState("idle");
  showActivity(null);
});

// The one test and debug hook (tests/test_browser.py reads it): the latest
// call, read-only. `pc` stays the last peer connection (closed after Stop)
// until the next Start; `events` are the last RTVI messages with page time in ms;
// `heard` the latency heard for each reply, {ms, speechEnd, replyStart} (see heard-latency.js).
window.voiceAgent = Object.freeze({
  get state() { return call?.state ?? "idle"; },
  get activity() { return call?.activity ?? null; },
  get pc() { return call?.pc ?? null; },
  get pcId() { return call?.pcId ?? null; },
  get botReady() { return call?.botReady ?? false; },
  get events() { return [...(call?.events ?? [])]; },
  get heard() { return (call?.heard ?? []).map((measurement) => ({ ...measurement })); },
  get error() { return call?.error ?? ""; },
});

if (!microphoneAvailable()) showSecureNotice(INSECURE_MESSAGE);
showState("idle");
// With an access token set, the backends' state is told only to a page that has it.
checkAccess().then(watchHealth);
