// Pipecat's own web client against the agent, written as anyone building a client would
// (see README, "Build your own client"). esbuild bundles it into one IIFE for
// tests/test_pipecat_client.py, which drives it through window.pipecatTest.
import { PipecatClient, RTVI_PROTOCOL_VERSION } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";

// Everything the client reported, in order: {type, data}.
const events = [];
const note = (type) => (data) => events.push({ type, data: data ?? null });

// SmallWebRTC hands the bot's audio over as a track; the page plays it.
function playBotAudio(track) {
  const sink = document.getElementById("bot-audio");
  sink.srcObject = new MediaStream([track]);
  sink.play().catch((error) => events.push({ type: "playback-error", data: String(error) }));
}

const transport = new SmallWebRTCTransport({
  // The default media manager is Daily's, whose engine is a script loaded from a CDN.
  // This one takes the microphone with getUserMedia and needs nothing but the agent.
  mediaManager: new WavMediaManager(),
});

const client = new PipecatClient({
  transport,
  enableMic: true,
  enableCam: false,
  callbacks: {
    onTransportStateChanged: note("transport-state"),
    onBotReady: note("bot-ready"),
    onUserTranscript: note("user-transcript"),
    onBotOutput: note("bot-output"),
    onBotTranscript: note("bot-transcript"),
    onBotStartedSpeaking: note("bot-started-speaking"),
    onBotStoppedSpeaking: note("bot-stopped-speaking"),
    onServerMessage: note("server-message"),
    onError: (message) => events.push({ type: "error", data: message.data ?? null }),
    onDisconnected: note("disconnected"),
    onTrackStarted: (track, participant) => {
      const local = Boolean(participant?.local);
      events.push({ type: "track-started", data: { kind: track.kind, id: track.id, local } });
      if (track.kind === "audio" && !local) playBotAudio(track);
    },
  },
});

// The agent names its STUN/TURN servers at /api/config; the offer goes to /api/offer
// (POST, then PATCH for trickled ICE candidates) on the page's own origin.
async function connect() {
  const config = await (await fetch("/api/config")).json();
  return client.connect({
    webrtcRequestParams: { endpoint: "/api/offer" },
    iceConfig: { iceServers: config.iceServers },
  });
}

window.pipecatTest = {
  clientProtocolVersion: RTVI_PROTOCOL_VERSION,
  events,
  connect,
  disconnect: () => client.disconnect(),
  sendText: (text) => client.sendText(text),
  // What the transport does itself when ICE fails: a new peer connection, offered with
  // the old pc_id and restart_pc: true.
  restartIce: async () => {
    await transport.attemptReconnection(true);
    // The transport keeps one entry per kind of incoming track; closing the old connection
    // deletes it after the new connection's track was entered, so the new bot track is
    // never reported (no onTrackStarted). Play it from the connection itself.
    const receiver = transport.pc?.getReceivers().find((r) => r.track.kind === "audio");
    if (receiver) playBotAudio(receiver.track);
  },
  get pc() {
    return transport.pc;
  },
  get pcId() {
    return transport.pc_id;
  },
  get state() {
    return client.state;
  },
};
