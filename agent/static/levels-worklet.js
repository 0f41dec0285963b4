// Runs on the audio thread (see levels.js): the loudness (RMS) of each frame of
// its input, posted with the frame's start and end on the audio context's
// clock, in seconds. It writes no output, so nothing of it is heard.

class FrameLevels extends AudioWorkletProcessor {
  #size;
  #sum = 0;
  #count = 0;

  constructor(options) {
    super();
    this.#size = Math.max(1, Math.round((options.processorOptions.frameMs / 1000) * sampleRate));
  }

  process(inputs) {
    const channels = inputs[0] ?? [];
    // A source with nothing to play yet (a remote track before its first packet)
    // has no channels: that quantum is silence, and the clock goes on.
    const length = channels[0]?.length ?? 128;
    for (let i = 0; i < length; i += 1) {
      let square = 0;
      for (const channel of channels) square += channel[i] * channel[i];
      this.#sum += channels.length ? square / channels.length : 0;
      this.#count += 1;
      if (this.#count === this.#size) {
        const end = currentFrame + i + 1;
        this.port.postMessage({
          start: (end - this.#size) / sampleRate,
          end: end / sampleRate,
          rms: Math.sqrt(this.#sum / this.#size),
        });
        this.#sum = 0;
        this.#count = 0;
      }
    }
    return true;
  }
}

registerProcessor("frame-levels", FrameLevels);
