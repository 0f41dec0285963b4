// The loudness of an audio source, one 20 ms frame at a time, measured on the
// audio thread (levels-worklet.js) so a busy page does not blur the timing.
// Frame times are on the audio context's clock, in ms: the microphone and the
// assistant's voice, watched in one context, share it.

export const FRAME_MS = 20;

export function loadLevels(context) {
  return context.audioWorklet.addModule(new URL("./levels-worklet.js", import.meta.url));
}

// Calls onFrame({startMs, endMs, rms}) for each frame of `source` (an AudioNode
// of `context`, after loadLevels); rms is linear, 1 = full scale. Returns a
// function that stops watching.
export function watchLevels(context, source, onFrame) {
  const node = new AudioWorkletNode(context, "frame-levels", { processorOptions: { frameMs: FRAME_MS } });
  node.port.onmessage = ({ data }) => onFrame({ startMs: data.start * 1000, endMs: data.end * 1000, rms: data.rms });
  source.connect(node);
  // Only a node that leads to the destination is sure to be processed. It
  // outputs silence, so the assistant is not played twice.
  node.connect(context.destination);
  return () => {
    node.port.onmessage = null;
    source.disconnect(node);
    node.disconnect();
  };
}
