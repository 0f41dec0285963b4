// The microphone: whether this address may have one, opening it, and what to
// tell the person when that fails.

export const INSECURE_MESSAGE = "The microphone is blocked on this address. Browsers only allow it on "
  + "https:// pages (or on localhost), and this page was opened over plain http://. Open the "
  + "appliance's https:// address instead; the first time, your browser asks you to accept its "
  + "certificate (the README explains this step).";

export function microphoneAvailable() {
  return window.isSecureContext !== false && !!navigator.mediaDevices?.getUserMedia;
}

export function openMicrophone() {
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    video: false,
  });
}

export function stopTracks(stream) {
  stream?.getTracks().forEach((track) => track.stop());
}

// [status line, explanation] for a getUserMedia failure.
export function microphoneProblem(err) {
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
