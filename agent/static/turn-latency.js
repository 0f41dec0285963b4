// How a reply's latency is shown beside "Assistant": the appliance's own
// figure (its breakdown in the tooltip) and the latency heard on this device.
//
// DOM hooks (tests rely on them), on the bot entry:
//   <span class="latency">replied in 640 ms</span>   data-latency-ms, data-latency-source ("server" | "client")
//   <span class="heard">heard in 910 ms</span>       data-heard-ms

// Pipecat's names for the parts of a turn (LatencyBreakdown keys); others are shown as they come.
const PART_NAMES = {
  endpointing_wait: "waiting for your speech to stop",
  transcription: "transcription",
  turn_detection: "deciding your turn was over",
  turn_completion: "deciding your turn was over",
  first_request: "first request",
  llm_inference: "language model",
  sentence_aggregation: "first sentence",
  awaiting_speakable_text: "first sentence",
  speech_synthesis: "speech synthesis",
  output_transport: "sending the audio",
  pipeline: "the agent's own work",
};

export function formatLatency(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

// `agent`: {ms, source, parts} or null (parts: {key: ms} or null);
// `heardMs`: the latency heard, or null.
export function showTurnLatency(entry, { agent, heardMs }) {
  const who = entry.querySelector(".who");
  if (agent) {
    const el = ensureSpan(entry, "latency", who);
    entry.dataset.latencyMs = String(Math.round(agent.ms));
    entry.dataset.latencySource = agent.source;
    el.textContent = `replied in ${formatLatency(agent.ms)}`;
    el.title = agentTitle(agent);
  }
  if (heardMs !== null) {
    const el = ensureSpan(entry, "heard", entry.querySelector(".latency") ?? who);
    entry.dataset.heardMs = String(Math.round(heardMs));
    el.textContent = `heard in ${formatLatency(heardMs)}`;
    el.title = heardTitle(heardMs, agent);
  }
}

// Takes off what showTurnLatency put on an entry (a withdrawn reply answers nothing).
export function clearTurnLatency(entry) {
  entry.querySelectorAll(".latency, .heard").forEach((el) => el.remove());
  for (const key of ["latencyMs", "latencySource", "heardMs"]) delete entry.dataset[key];
}

function agentTitle({ source, parts }) {
  if (source !== "server") return "From the end of your speech to the first sound of the reply, estimated by this page";
  const lines = Object.entries(parts ?? {})
    .filter(([, ms]) => Number.isFinite(ms))
    .map(([key, ms]) => `  ${PART_NAMES[key] ?? key.replaceAll("_", " ")}: ${formatLatency(ms)}`);
  return ["From the end of your speech to the first sound of the reply, measured by the appliance", ...lines]
    .join("\n");
}

function heardTitle(heardMs, agent) {
  const what = "From the end of your speech to the first sound of the reply, as heard on this device";
  if (agent?.source !== "server") return what;
  const outside = heardMs - agent.ms;
  const more = outside >= 0 ? "more" : "less";
  return `${what}: ${formatLatency(Math.abs(outside))} ${more} than the appliance measured `
    + "(the network, buffering and playback on both sides)";
}

function ensureSpan(entry, className, after) {
  let el = entry.querySelector(`.${className}`);
  if (!el) {
    el = document.createElement("span");
    el.className = className;
    after.after(el);
  }
  return el;
}
