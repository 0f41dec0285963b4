// What the page tells the person when a call cannot start or ends badly.
// (Microphone problems are in microphone.js.)

import { SignallingError } from "./signalling.js";

export const ENDED_BY_ASSISTANT = "The assistant ended the conversation";

const TROUBLESHOOTING = "(see the README's troubleshooting section). Press Start to try again.";

// The connect timeout passed; `answered`: the appliance answered our offer.
export function notConnectedInTime(answered) {
  return answered
    ? "The connection could not be set up in time. The appliance answered, but its audio "
      + "connection did not come through: a firewall or the container's network setup may be "
      + `blocking it ${TROUBLESHOOTING}`
    : "The appliance did not answer in time. Check that it is running, then press Start again.";
}

// The browser gave up on a connection that never came up.
export const NOT_ESTABLISHED = "The audio connection to the assistant could not be established. A firewall or the "
  + `appliance's network setup may be blocking it ${TROUBLESHOOTING}`;

// Setting up the connection threw `err`.
export function couldNotConnect(err) {
  // The server's own sentence ("The assistant is busy with 4 other conversations; …").
  if (err instanceof SignallingError) return err.message;
  return `The connection could not be set up${err?.message ? ` (${err.message})` : ""}. Press Start to try again.`;
}

// The connection dropped and could not be brought back in time.
export const RECONNECT_FAILED = "The connection was lost and could not be restored. Press Start to talk again.";

// Bringing a dropped connection back failed with `err`.
export function couldNotReconnect(err) {
  if (err instanceof SignallingError && err.code === "unknown_session") {
    return "The connection was lost, and the assistant has ended the conversation meanwhile. "
      + "Press Start to talk again.";
  }
  return RECONNECT_FAILED;
}
