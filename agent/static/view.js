// What the page shows: connection status, the listening/speaking indicator,
// the error line, the notices and the assistant's voice. Only DOM here; what
// to show is decided by the call (call.js) and the health watch (health.js).

const $ = (id) => document.getElementById(id);

export const ui = {
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
  access: $("access"),
  accessToken: $("access-token"),
  accessError: $("access-error"),
};

const STATUS_TEXT = {
  idle: "Not connected",
  "requesting-microphone": "Waiting for microphone permission…",
  connecting: "Connecting to the assistant…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
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

// States in which the button stops the call rather than starting one.
export function isBusy(state) {
  return state === "requesting-microphone" || state === "connecting"
    || state === "connected" || state === "reconnecting";
}

export function showState(state, statusText) {
  document.body.dataset.state = state;
  ui.status.textContent = statusText ?? STATUS_TEXT[state] ?? state;
  const busy = isBusy(state);
  ui.start.textContent = busy ? "Stop" : "Start";
  ui.start.classList.toggle("stop", busy);
}

// `activity` is one of ACTIVITY_TEXT's keys, or null to hide the indicator.
export function showActivity(activity) {
  ui.activity.hidden = !activity;
  ui.activity.dataset.activity = activity ?? "";
  if (activity) ui.activityText.textContent = ACTIVITY_TEXT[activity] ?? activity;
}

export function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

export function showHealth(message) {
  ui.health.textContent = message;
  ui.health.hidden = !message;
}

// Shown at load when this address cannot have a microphone: the intro's
// advice ("allow the microphone") cannot work here, so it gives way.
export function showSecureNotice(message) {
  ui.secureNotice.textContent = message;
  ui.secureNotice.hidden = !message;
  if (message) ui.intro.hidden = true;
}

// The access token form, while the page needs a token: `problem` is a sentence
// saying what was wrong with the last one, or "". Start waits for a token.
export function askForToken(problem) {
  ui.access.hidden = false;
  ui.accessError.textContent = problem;
  ui.accessError.hidden = !problem;
  ui.start.disabled = true;
  ui.accessToken.focus();
  ui.accessToken.select();
}

// What was wrong with the last token no longer applies once the person types.
ui.accessToken.addEventListener("input", () => { ui.accessError.hidden = true; });

export function tokenAccepted() {
  ui.access.hidden = true;
  ui.accessError.hidden = true;
  ui.accessToken.value = "";
  ui.start.disabled = false;
}

// --- the assistant's voice ------------------------------------------------------

// Safari only lets audio play if play() is first called inside the click.
export function primeAudio() {
  ui.audio.play().catch(() => {});
}

export function playRemote(stream) {
  if (ui.audio.srcObject !== stream) ui.audio.srcObject = stream;
  ui.audio.play()?.then(() => { ui.enableSound.hidden = true; }).catch((err) => {
    // Autoplay refused: a click on the page is needed before sound may play.
    if (err?.name === "NotAllowedError") ui.enableSound.hidden = false;
  });
}

export function stopRemote() {
  ui.audio.srcObject = null;
  ui.enableSound.hidden = true;
}

ui.enableSound.addEventListener("click", () => {
  ui.audio.play().then(() => { ui.enableSound.hidden = true; }).catch(() => {});
});
