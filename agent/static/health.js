// The notice that says which backend is not ready, and why, in plain words
// from the agent's /health body:
//   {status: "ok" | "degraded", reason?, backends: {ollama: B, speaches: B}}
//   B = {url, reachable: true | false | null, ready, error?,
//        models: {<id>: {installed: true | false | null, pulling, progress? (0..1), error?}}}

import { withToken } from "./access.js";
import { showHealth } from "./view.js";

const HEALTH_RETRY_MS = 15_000;

const NAMES = {
  ollama: { server: "The language model server (Ollama)", up: "The language model server", model: "The language model" },
  speaches: { server: "The speech engine (Speaches)", up: "The speech engine", model: "The speech model" },
};

const words = (value) => (typeof value === "string" ? value.trim() : "");

function names(backend) {
  return NAMES[backend] ?? { server: `The ${backend} backend`, up: `The ${backend} backend`, model: `The ${backend} model` };
}

function downloading(model) {
  const fraction = model.progress;
  if (typeof fraction !== "number" || !Number.isFinite(fraction)) return "is being downloaded";
  return `is being downloaded (${Math.round(Math.max(0, Math.min(1, fraction)) * 100)} %)`;
}

// The agent words a model's error for a person ("Speaches is up but could not
// download …"); one that does not name its backend gets the backend's name.
function modelProblem(name, error) {
  const sentence = error.replace(/[.\s]+$/, "");
  return /^(Speaches|Ollama)\b/.test(sentence) ? sentence : `${name.up} reports: ${sentence}`;
}

// Sentences (no full stop) for one backend that is not ready.
function describeBackend(backend, info) {
  const name = names(backend);
  const error = words(info.error);
  const because = error ? ` (${error})` : "";
  if (info.reachable === null) return [`${name.server} is still being checked`];
  if (info.reachable === false) {
    const where = words(info.url) ? ` at ${words(info.url)}` : "";
    return [`${name.server} cannot be reached${where}${because}`];
  }
  const models = info.models && typeof info.models === "object" ? Object.entries(info.models) : [];
  const sentences = [];
  for (const [id, model] of models) {
    if (!model || typeof model !== "object") continue;
    const modelError = words(model.error);
    // A download tried again after it failed says why it failed until bytes arrive.
    const retried = modelError && typeof model.progress !== "number";
    if (model.pulling && retried) sentences.push(`${modelProblem(name, modelError)}; trying again`);
    else if (model.pulling) sentences.push(`${name.model} ${id} ${downloading(model)}`);
    else if (modelError) sentences.push(modelProblem(name, modelError));
    else if (model.installed === false && error) sentences.push(`${name.up} is up but could not download ${id}${because}`);
    else if (model.installed === false) sentences.push(`${name.model} ${id} is not installed`);
  }
  if (sentences.length) return sentences;
  if (error) return [`${name.up} is up but reports a problem${because}`];
  const ids = models.map(([id]) => id).join(", ");
  return [ids ? `${name.model} ${ids} is loading` : `${name.server} is getting ready`];
}

// Words for the backends in a /health body that are not ready; "" if the body
// says nothing usable about them.
export function describeBackends(backends) {
  if (!backends || typeof backends !== "object") return "";
  const sentences = [];
  for (const [backend, info] of Object.entries(backends)) {
    if (!info || typeof info !== "object" || typeof info.ready !== "boolean" || info.ready) continue;
    sentences.push(...describeBackend(backend, info));
  }
  return sentences.join(". ");
}

// The whole notice for a /health body; "" when all is well.
export function healthNotice(body) {
  if (body.status === "ok") return "";
  const described = describeBackends(body.backends);
  if (described) return `${described}. The assistant may not answer until then.`;
  const reason = words(body.reason) || words(body.status) || "unknown reason";
  return `Backends not ready: ${reason}. The assistant may not answer until they are.`;
}

let retryTimer = null;

// Shows the notice, and looks again while something is not ready.
export async function watchHealth() {
  clearTimeout(retryTimer);
  let body;
  try {
    // Without the agent's access token (AGENT_TOKEN), /health says only "ok" or "degraded".
    const response = await fetch("/health", { cache: "no-store", headers: withToken({ Accept: "application/json" }) });
    body = await response.json();
  } catch {
    return; // no health endpoint, or not JSON: say nothing
  }
  if (!body || typeof body !== "object") return;
  const notice = healthNotice(body);
  showHealth(notice);
  if (notice) retryTimer = setTimeout(watchHealth, HEALTH_RETRY_MS);
}
