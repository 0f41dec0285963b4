// The live transcript: one entry per user turn and one per bot turn.
//
// DOM hooks (tests rely on them), inside <ol id="transcript">:
//   <li class="entry user">  <span class="who">You</span> <p class="text">final words</p>
//                            <span class="interim">tentative words (dimmed, replaced)</span>
//   <li class="entry bot">   <span class="who">Assistant</span> <span class="latency">replied in 640 ms</span>
//                            <p class="text">spoken words <span class="pending">being spoken</span></p>
//                            <span class="cut">(interrupted)</span>   (shown, and .interrupted on the li, if cut short)
//                            <span class="withdrawn-note">withdrawn: you went on</span>
//                            (and .withdrawn on the li: a reply the agent took back, see turnContinued)
//   A bot entry that answers a user turn gets its latency figures once known
//   (.latency and .heard, see turn-latency.js).

import { clearTurnLatency, showTurnLatency } from "./turn-latency.js";

const NEAR_BOTTOM_PX = 48;

export class Transcript {
  constructor(list, emptyNote) {
    this.list = list;
    this.emptyNote = emptyNote;
    this.follow = true;
    list.addEventListener("scroll", () => this._onScroll(), { passive: true });
    this.reset();
  }

  reset() {
    this.list.replaceChildren();
    this.emptyNote.hidden = false;
    this.follow = true;
    this.openUser = null; // the user entry still being added to
    this.openBot = null; // the bot entry of the current bot turn
    this.awaitingReply = false; // the user finished a turn; the next bot entry answers it
    this.pendingLatency = null; // the agent's latency figure that came before its bot entry
    this.pendingHeard = null; // the latency heard in the page that came before its bot entry
    this.turnUser = null; // the user entry with the words of the current (or last) user turn
    this.previousTurnUser = null; // the user entry with the words of the user turn before it
    this.segmentOwner = new Map(); // bot-output segment_id -> entry
    // bot entry -> {segments: Map(id -> {spoken, pending}), isReply, agent: {ms, source, parts}, heardMs}
    this._bot = new WeakMap();
    this.botSpeaking = false;
  }

  // --- user side -----------------------------------------------------------

  userText(text, final) {
    text = String(text ?? "").trim();
    if (!final) {
      if (!text) return;
      const entry = this.openUser ?? this._newUser();
      entry.querySelector(".interim").textContent = text;
      this._changed();
      return;
    }
    if (!text) {
      if (this.openUser) this.openUser.querySelector(".interim").textContent = "";
      return;
    }
    const entry = this.openUser ?? this._newUser();
    const el = entry.querySelector(".text");
    el.textContent = el.textContent ? `${el.textContent} ${text}` : text;
    entry.querySelector(".interim").textContent = "";
    this.turnUser = entry;
    // Whatever the bot says after this is its answer: a new bot entry.
    this.openBot = null;
    this.awaitingReply = true;
    this._changed();
  }

  // The user's turn ended (user-stopped-speaking), even if no words arrived.
  userTurnEnded() {
    this.awaitingReply = true;
  }

  // The user started talking again: latency held for an answer is stale.
  userTurnStarted() {
    this.pendingLatency = null;
    this.pendingHeard = null;
    if (this.turnUser) [this.previousTurnUser, this.turnUser] = [this.turnUser, null];
  }

  // The agent's "turn-continued": the person went on after the bot began
  // answering, so the conversation now holds their last turn and the one
  // before it as one user message, without the reply begun in between. The
  // transcript shows the same: one user entry, and that reply withdrawn (kept,
  // struck through: the person heard it begin, and the note says why it stopped).
  turnContinued() {
    const first = this.previousTurnUser;
    const rest = this.turnUser;
    // No reply entry in between: both parts went into one entry already.
    if (!first || !rest || first === rest) return;
    for (let el = first.nextElementSibling; el && el !== rest; el = el.nextElementSibling) {
      if (this._bot.has(el)) this._withdraw(el);
    }
    const text = first.querySelector(".text");
    text.textContent = `${text.textContent} ${rest.querySelector(".text").textContent}`;
    if (this.openUser === rest) {
      first.querySelector(".interim").textContent = rest.querySelector(".interim").textContent;
      this.openUser = first;
    }
    rest.remove();
    this.turnUser = first;
    this.previousTurnUser = null;
    this._changed();
  }

  // --- bot side ------------------------------------------------------------

  // The bot started speaking: make sure its turn has an entry (it shows "…"
  // until words arrive).
  botStarted() {
    this.botSpeaking = true;
    this._ensureBot();
  }

  botStopped() {
    this.botSpeaking = false;
  }

  // RTVI "bot-output", one message per change of a segment
  // (a sentence, usually). Words already spoken are shown plainly; words
  // being spoken or about to be are shown dimmed (.pending):
  //   "new"          the segment starts: all of it pending (for a TTS without
  //                  word timing, this arrives as the sentence starts playing)
  //   "in-progress"  spoken_progress.accumulated_text spoken, remaining_text pending
  //   "completed"    all of it spoken
  botOutput(data) {
    const text = typeof data.text === "string" ? data.text : "";
    const progress = data.spoken_progress && typeof data.spoken_progress === "object" ? data.spoken_progress : {};
    let spoken;
    let pending;
    switch (data.spoken_status) {
      case "completed":
        [spoken, pending] = [text || progress.accumulated_text || "", ""];
        break;
      case "in-progress":
        [spoken, pending] = [progress.accumulated_text ?? "", progress.remaining_text ?? ""];
        break;
      case "new":
        [spoken, pending] = data.will_be_spoken === false ? [text, ""] : ["", text];
        break;
      default: // not a protocol 2.x message
        return;
    }
    const id = data.segment_id ?? null;
    // A segment stays in the entry it started in, even if a new turn began since.
    const entry = (id !== null && this.segmentOwner.get(id)) || this._ensureBot();
    if (id !== null) this.segmentOwner.set(id, entry);
    const segments = this._bot.get(entry).segments;
    segments.set(id ?? `anon-${segments.size}`, { spoken, pending });
    this._renderBot(entry);
  }

  // Pipecat sends "bot-interrupted" whenever the user starts a turn. It only
  // cuts the bot's turn short if the bot was speaking or had words to come.
  botInterrupted() {
    const entry = this.openBot;
    if (entry) {
      const segments = this._bot.get(entry).segments;
      const hadPending = [...segments.values()].some((s) => s.pending.trim());
      if (this.botSpeaking || hadPending) {
        for (const s of segments.values()) s.pending = ""; // never said
        entry.classList.add("interrupted");
        entry.querySelector(".cut").hidden = false;
        this._renderBot(entry);
      }
    }
    this.openBot = null;
  }

  // Latency of the current turn: end of the user's speech to first reply audio.
  // The server's figure wins over the page's own estimate. `parts`: the
  // server's breakdown ({key: ms}), if it sent one.
  setTurnLatency(ms, source, parts = null) {
    if (!Number.isFinite(ms) || ms < 0) return;
    const figure = { ms, source, parts };
    if (this.awaitingReply) {
      if (!this.pendingLatency || source === "server") this.pendingLatency = figure;
      return;
    }
    const entry = this.openBot;
    if (entry && this._bot.get(entry).isReply) this._applyLatency(entry, figure);
  }

  // The latency heard in the page for the current reply (heard-latency.js):
  // one figure per reply, the first.
  setHeardLatency(ms) {
    if (!Number.isFinite(ms) || ms < 0) return;
    if (this.awaitingReply) {
      this.pendingHeard ??= ms;
      return;
    }
    const state = this.openBot && this._bot.get(this.openBot);
    if (!state?.isReply || state.heardMs !== null) return;
    state.heardMs = ms;
    this._showLatency(this.openBot);
  }

  // --- internals -------------------------------------------------------------

  // A reply that is no longer in the conversation: what was said of it stays,
  // struck through; it answers nothing, so it keeps no latency figures.
  _withdraw(entry) {
    const state = this._bot.get(entry);
    if (entry.classList.contains("withdrawn")) return;
    for (const s of state.segments.values()) s.pending = ""; // never to be said
    this._renderBot(entry);
    Object.assign(state, { isReply: false, agent: null, heardMs: null });
    clearTurnLatency(entry);
    entry.classList.add("withdrawn");
    entry.querySelector(".cut").hidden = true; // the note below says more
    const note = document.createElement("span");
    note.className = "withdrawn-note";
    note.textContent = "withdrawn: you went on";
    entry.append(note);
    if (this.openBot === entry) this.openBot = null;
    this._changed();
  }

  _newUser() {
    const entry = this._entry("user", "You");
    const interim = document.createElement("span");
    interim.className = "interim";
    interim.setAttribute("aria-hidden", "true"); // tentative words: not announced
    entry.append(interim);
    this.openUser = entry;
    return entry;
  }

  _ensureBot() {
    if (this.openBot) return this.openBot;
    const entry = this._entry("bot", "Assistant");
    const cut = document.createElement("span");
    cut.className = "cut";
    cut.textContent = "(interrupted)";
    cut.hidden = true;
    entry.append(cut);
    const isReply = this.awaitingReply;
    this._bot.set(entry, { segments: new Map(), isReply, agent: null, heardMs: null });
    this.awaitingReply = false;
    this.openBot = entry;
    this.openUser = null;
    if (isReply && this.pendingLatency) this._applyLatency(entry, this.pendingLatency);
    if (isReply && this.pendingHeard !== null) this.setHeardLatency(this.pendingHeard);
    this.pendingLatency = null;
    this.pendingHeard = null;
    return entry;
  }

  _renderBot(entry) {
    const parts = [];
    for (const { spoken, pending } of this._bot.get(entry).segments.values()) {
      if (spoken.trim()) parts.push([spoken.trim(), false]);
      if (pending.trim()) parts.push([pending.trim(), true]);
    }
    const state = this._bot.get(entry);
    const key = JSON.stringify(parts);
    if (state.rendered === key) return;
    state.rendered = key;
    const el = entry.querySelector(".text");
    el.replaceChildren();
    parts.forEach(([words, isPending], i) => {
      const piece = (i ? " " : "") + words;
      if (!isPending) {
        el.append(piece);
      } else {
        const span = document.createElement("span");
        span.className = "pending";
        span.textContent = piece;
        el.append(span);
      }
    });
    this._changed();
  }

  _applyLatency(entry, figure) {
    const state = this._bot.get(entry);
    if (state.agent?.source === "server" && figure.source !== "server") return;
    state.agent = figure;
    this._showLatency(entry);
  }

  _showLatency(entry) {
    const { agent, heardMs } = this._bot.get(entry);
    showTurnLatency(entry, { agent, heardMs });
    this._changed();
  }

  _entry(kind, label) {
    const entry = document.createElement("li");
    entry.className = `entry ${kind}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = label;
    const text = document.createElement("p");
    text.className = "text";
    entry.append(who, text);
    this.list.append(entry);
    this.emptyNote.hidden = true;
    this._changed();
    return entry;
  }

  // Follow new words to the bottom, unless the person scrolled up to read.
  _changed() {
    if (!this.follow || this._scrollQueued) return;
    this._scrollQueued = true;
    requestAnimationFrame(() => {
      this._scrollQueued = false;
      this.list.scrollTop = this.list.scrollHeight;
    });
  }

  _onScroll() {
    const l = this.list;
    this.follow = l.scrollHeight - l.scrollTop - l.clientHeight < NEAR_BOTTOM_PX;
  }
}
