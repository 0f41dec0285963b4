// The audio side of the heard latency (heard-latency.js): the microphone and
// the assistant's voice, each watched in one audio context of the call's own.
// Measuring is a nicety: a browser that cannot do it (no AudioWorklet) still
// has its conversation, only without the figure.

import { HeardLatency } from "./heard-latency.js";
import { loadLevels, watchLevels } from "./levels.js";

export class HeardMeter {
  latency;
  #context = null;
  #loaded = null;
  #stops = new Map(); // "local" | "remote" -> {stream, stop}

  constructor(onHeard) {
    this.latency = new HeardLatency(onHeard);
  }

  // Inside the click: Safari lets an audio context run only if made there.
  start() {
    try {
      this.#context = new AudioContext();
      this.#loaded = loadLevels(this.#context);
    } catch (err) {
      this.#unavailable(err);
    }
  }

  hearMicrophone(stream) {
    return this.#watch("local", stream, (frame) => this.latency.local.push(frame));
  }

  // The assistant's voice; a new stream (after a reconnection) replaces the last.
  hearAssistant(stream) {
    return this.#watch("remote", stream, (frame) => this.latency.remote.push(frame));
  }

  close() {
    for (const { stop } of this.#stops.values()) stop();
    this.#stops.clear();
    this.#context?.close().catch(() => {});
    this.#context = null;
  }

  async #watch(side, stream, onFrame) {
    const context = this.#context;
    if (!context || this.#stops.get(side)?.stream === stream) return;
    try {
      await this.#loaded;
    } catch (err) {
      this.#unavailable(err);
      return;
    }
    if (context !== this.#context || context.state === "closed") return; // closed meanwhile
    this.#stops.get(side)?.stop();
    const source = context.createMediaStreamSource(stream);
    this.#stops.set(side, { stream, stop: watchLevels(context, source, onFrame) });
  }

  #unavailable(err) {
    console.warn("voice-agent: this browser cannot measure the latency heard", err);
    this.close();
  }
}
