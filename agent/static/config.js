// The STUN/TURN servers the agent was configured with (ICE_SERVERS), for the
// browser's side of the connection: a TURN server only helps a phone off the
// LAN if both ends use it. No answer means none: WebRTC stays on the local
// network, as with an empty ICE_SERVERS.

import { apiFetch } from "./access.js";

export async function fetchIceServers() {
  let body;
  try {
    const response = await apiFetch("/api/config", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) return [];
    body = await response.json();
  } catch {
    return [];
  }
  return Array.isArray(body?.iceServers) ? body.iceServers.filter(usable) : [];
}

// RTCPeerConnection refuses the whole list for one bad entry (a TURN server
// without credentials, say): leave such an entry out, and say so.
function usable(server) {
  const urls = [].concat(server?.urls ?? []);
  const wellFormed = urls.length > 0 && urls.every((url) => typeof url === "string");
  const needsCredentials = urls.some((url) => /^turns?:/.test(url));
  if (wellFormed && (!needsCredentials || (server.username && server.credential))) return true;
  console.warn("voice-agent: ignoring an ICE server the browser cannot use", server);
  return false;
}
