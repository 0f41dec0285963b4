// Where speech starts and ends in a stream of frame loudness (levels.js): an
// energy detector. A frame is loud above THRESHOLD_DB (room noise under a
// browser's noise suppression, and codec hiss, stay well below it). Speech
// starts once `minSpeechMs` of loud frames come in a row (a click is not
// speech), and ends at the end of its last loud frame, once `hangoverMs` have
// passed without another (the gaps inside words and between them are shorter).

export const THRESHOLD_DB = -45;
const THRESHOLD_RMS = 10 ** (THRESHOLD_DB / 20);
const KEPT_SEGMENTS = 16;
// Frame times are sums of float seconds: allow them a little rounding.
const SLACK_MS = 0.5;

export class SpeechDetector {
  speaking = false;
  segments = []; // the latest stretches of speech, oldest first: {start, end} in ms, end null while speaking
  #minSpeechMs;
  #hangoverMs;
  #onStart;
  #onEnd;
  #runStart = null; // start of the current run of loud frames
  #lastLoudEnd = null;

  constructor({ minSpeechMs, hangoverMs, onStart = () => {}, onEnd = () => {} }) {
    this.#minSpeechMs = minSpeechMs;
    this.#hangoverMs = hangoverMs;
    this.#onStart = onStart;
    this.#onEnd = onEnd;
  }

  push({ startMs, endMs, rms }) {
    if (rms > THRESHOLD_RMS) {
      this.#runStart ??= startMs;
      this.#lastLoudEnd = endMs;
      if (!this.speaking && endMs - this.#runStart >= this.#minSpeechMs - SLACK_MS) {
        this.speaking = true;
        const segment = { start: this.#runStart, end: null };
        this.segments.push(segment);
        if (this.segments.length > KEPT_SEGMENTS) this.segments.shift();
        this.#onStart(segment);
      }
      return;
    }
    this.#runStart = null;
    if (this.speaking && endMs - this.#lastLoudEnd >= this.#hangoverMs - SLACK_MS) {
      this.speaking = false;
      const segment = this.segments.at(-1);
      segment.end = this.#lastLoudEnd;
      this.#onEnd(segment);
    }
  }
}
