// The latency a person hears: from the end of their speech, on the local
// microphone, to the first audible sound of the reply, in the assistant's
// voice as it arrives. One speech detector (speech-edges.js) on each.
//
// A reply is the assistant's first sound after the person's speech ended,
// with the assistant silent in between. So:
// - the assistant starting while the person is still speaking (barge-in, or a
//   reply to half a sentence) answers nothing yet: the person's speech has
//   not ended, and is measured from where it does end;
// - if the assistant was still talking as the person stopped, what it says
//   next is no reply to that moment, and nothing is measured;
// - speech with no reply waits for one until the person speaks again;
// - the assistant speaking first (the greeting) answers nothing.

import { SpeechDetector } from "./speech-edges.js";

// The person: 100 ms of sound before it is speech (not a cough or a click),
// and 200 ms of quiet before it has ended, as the agent's own VAD_STOP_SECS.
const LOCAL = { minSpeechMs: 100, hangoverMs: 200 };
// The assistant's synthesised voice starts cleanly: 40 ms of it is enough.
const REMOTE = { minSpeechMs: 40, hangoverMs: 200 };
// Sound this long after the person's speech is no answer to it.
const MAX_REPLY_WAIT_MS = 60_000;

export class HeardLatency {
  measurements = []; // one per reply: {ms, speechEnd, replyStart} (the audio clock, in ms)
  local;
  remote;
  #onHeard;
  #speechEnd = null; // the end of the person's speech, while it waits for a reply

  constructor(onHeard = () => {}) {
    this.#onHeard = onHeard;
    this.local = new SpeechDetector({
      ...LOCAL,
      onStart: () => { this.#speechEnd = null; },
      onEnd: (segment) => this.#speechEnded(segment.end),
    });
    this.remote = new SpeechDetector({ ...REMOTE, onStart: (segment) => this.#replyStarted(segment.start) });
  }

  #speechEnded(end) {
    const talkingOver = this.remote.segments.some((s) => s.start < end && (s.end === null || s.end > end));
    if (talkingOver) return;
    // The reply may have started while the person's silence was not yet long
    // enough to call their speech over.
    const reply = this.remote.segments.find((s) => s.start >= end);
    if (reply) this.#record(end, reply.start);
    else this.#speechEnd = end;
  }

  #replyStarted(start) {
    // While the person speaks there is no end waiting: theirs decides (#speechEnded).
    if (this.#speechEnd === null) return;
    const end = this.#speechEnd;
    this.#speechEnd = null;
    this.#record(end, start);
  }

  #record(speechEnd, replyStart) {
    const ms = replyStart - speechEnd;
    if (ms > MAX_REPLY_WAIT_MS) return;
    const measurement = { ms, speechEnd, replyStart };
    this.measurements.push(measurement);
    this.#onHeard(measurement);
  }
}
