// The access token (AGENT_TOKEN), when the agent has one. The page asks for it
// once, keeps it on this device (localStorage) and sends it with every API
// call as "Authorization: Bearer …". A token the agent refuses (it was
// mistyped, or has been changed since) is forgotten and asked for again, with
// the agent's sentence saying what was wrong.

import { askForToken, tokenAccepted, ui } from "./view.js";

const STORAGE_KEY = "voice-agent.access-token";
// Any API call tells whether the agent wants a token; this one changes nothing.
const PROBE_URL = "/api/config";
const WRONG = "That access token is not the right one.";
const UNREACHABLE = "The appliance could not be reached. Check that it is running and that this device is on the same network.";
// What a header can carry; no other token can be the right one.
const SENDABLE = /^[\x21-\x7e]+$/;

let allowed = null; // resolves the wait for a token, while the form is shown

function rememberedToken() {
  try {
    return localStorage.getItem(STORAGE_KEY) ?? "";
  } catch {
    return ""; // storage blocked: the page asks on every visit
  }
}

function remember(token) {
  try {
    if (token) localStorage.setItem(STORAGE_KEY, token);
    else localStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage blocked: the token lasts as long as this page
  }
}

let current = rememberedToken();

// `headers` plus the token, if the page has one.
export function withToken(headers = {}) {
  return current ? { ...headers, Authorization: `Bearer ${current}` } : headers;
}

// fetch() for the API, with the token. A 401 means the token is missing or
// wrong: the form comes back (the caller still gets the response).
export async function apiFetch(url, options = {}) {
  const response = await fetch(url, { ...options, headers: withToken(options.headers) });
  if (response.status === 401) refused(await sentenceOf(response.clone()));
  return response;
}

// Resolves once the page may use the API: at once when the agent needs no
// token or the one remembered here is right, otherwise once the person has
// entered the right one.
export async function checkAccess() {
  let response;
  try {
    response = await fetch(PROBE_URL, { cache: "no-store", headers: withToken() });
  } catch {
    return; // not reachable now: the call says so when the person presses Start
  }
  if (response.status !== 401) return;
  // A remembered token that is refused gets the agent's sentence; a first visit only the form.
  const problem = current ? await sentenceOf(response) : "";
  await new Promise((resolve) => {
    allowed = resolve;
    refused(problem);
  });
}

function refused(problem) {
  current = "";
  remember("");
  askForToken(problem);
}

async function sentenceOf(response) {
  try {
    const body = await response.json();
    return typeof body?.error === "string" ? body.error.trim() : "";
  } catch {
    return "";
  }
}

async function tryToken(event) {
  event.preventDefault();
  const token = ui.accessToken.value.trim();
  if (!token) {
    askForToken("Enter the access token.");
    return;
  }
  if (!SENDABLE.test(token)) {
    askForToken(WRONG);
    return;
  }
  let response;
  try {
    response = await fetch(PROBE_URL, { cache: "no-store", headers: { Authorization: `Bearer ${token}` } });
  } catch {
    askForToken(UNREACHABLE);
    return;
  }
  if (response.status === 401) {
    askForToken((await sentenceOf(response)) || WRONG);
    return;
  }
  current = token;
  remember(token);
  tokenAccepted();
  allowed?.();
  allowed = null;
}

ui.access.addEventListener("submit", tryToken);
