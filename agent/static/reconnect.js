// Getting a conversation back after the network dropped it (a Wi-Fi hiccup,
// a phone that roams or gets a new address): the page makes a new peer
// connection and offers it as the continuation of the old one (restart_pc),
// as Pipecat's own clients do. The agent keeps the conversation meanwhile.

import { SignallingError } from "./signalling.js";

// How long the page tries before it gives up and says so. It must stay below
// the time the agent keeps a conversation whose browser has sent nothing:
// WEBRTC_RECONNECT_GRACE_SECS, 30 s by default.
export const RECONNECT_TIMEOUT_MS = 20_000;
// Pauses between restart offers that failed (the network may not be back
// yet); the last one repeats.
const RETRY_DELAYS_MS = [500, 1_000, 2_000];

// Sends `signalling`'s restart offer for the conversation the server knows as
// `formerId` until it is answered, the server refuses it (a SignallingError
// with its status, e.g. 404 when the conversation has already ended), or
// `signal` aborts (then it resolves without an answer).
//
// An offer on its way is never given up for a new one: a request stuck in a
// stalled network is still delivered when the network comes back, and if a
// copy had been answered meanwhile, the late one would make the server
// restart the connection again, under the page's feet.
export async function offerRestart(signalling, formerId, signal) {
  for (let attempt = 0; ; attempt += 1) {
    // Offline, a request can only hang, and may still reach the server long
    // after it was given up: wait for the network instead.
    await online(signal);
    if (signal.aborted) return;
    try {
      await signalling.restart(formerId);
      return;
    } catch (err) {
      if (!worthRetrying(err)) throw err;
      console.warn("voice-agent: restart offer failed, trying again", err);
    }
    await pause(RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)], signal);
  }
}

// Not reached, or a server error: the next try may work.
// Any other answer (404 unknown_session, 400) will not change.
function worthRetrying(err) {
  return err instanceof SignallingError && (err.code === "network" || err.status >= 500);
}

function online(signal) {
  if (navigator.onLine !== false || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    window.addEventListener("online", () => resolve(), { once: true, signal });
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
