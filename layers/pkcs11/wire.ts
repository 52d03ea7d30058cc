// How the main thread and an HSM worker thread talk: one call at a time through a
// SharedArrayBuffer, so that the main thread can wait for the answer synchronously with a
// deadline (Atomics.wait) and walk away from a call that hangs.
//
// Layout: an Int32Array control block, then the message bytes. A message is a small JSON header
// and the binary fields, each prefixed with its length.

export const STATE = 0;
export const LENGTH = 1;

/** Control states. */
export const STARTING = 0;
export const IDLE = 1;
export const REQUEST = 2;
export const RESPONSE = 3;

const CONTROL_BYTES = 16;
/** Enough for the largest request this proxy takes (functions/xks.ts LIMITS: 64 KiB data + 64 KiB AAD). */
export const MESSAGE_BYTES = 256 * 1024;

export interface Channel {
  readonly control: Int32Array;
  readonly bytes: Uint8Array;
  readonly shared: SharedArrayBuffer;
}

export function createChannel(shared = new SharedArrayBuffer(CONTROL_BYTES + MESSAGE_BYTES)): Channel {
  return {
    shared,
    control: new Int32Array(shared, 0, CONTROL_BYTES / 4),
    bytes: new Uint8Array(shared, CONTROL_BYTES),
  };
}

/** Writes a message; returns its length. Throws RangeError when it does not fit. */
export function writeMessage(channel: Channel, header: object, buffers: readonly Buffer[] = []): number {
  const json = Buffer.from(JSON.stringify(header));
  const size = 4 + json.length + buffers.reduce((sum, b) => sum + 4 + b.length, 0);
  if (size > channel.bytes.length) throw new RangeError(`a ${size}-byte HSM message does not fit`);
  const out = Buffer.from(channel.bytes.buffer, channel.bytes.byteOffset, size);
  let at = out.writeUInt32LE(json.length, 0);
  at += json.copy(out, at);
  for (const b of buffers) {
    at = out.writeUInt32LE(b.length, at);
    at += b.copy(out, at);
  }
  Atomics.store(channel.control, LENGTH, size);
  return size;
}

/** Reads a message: its header and copies of its buffers (the channel is reused at once). */
export function readMessage<T>(channel: Channel): { header: T; buffers: Buffer[] } {
  const size = Atomics.load(channel.control, LENGTH);
  const data = Buffer.from(channel.bytes.buffer, channel.bytes.byteOffset, size);
  const jsonLength = data.readUInt32LE(0);
  const header = JSON.parse(data.toString('utf8', 4, 4 + jsonLength)) as T;
  const buffers: Buffer[] = [];
  for (let at = 4 + jsonLength; at < size; ) {
    const length = data.readUInt32LE(at);
    buffers.push(Buffer.from(data.subarray(at + 4, at + 4 + length)));
    at += 4 + length;
  }
  return { header, buffers };
}

/** Atomics.pause where the engine has it (V8 13.3+, Node 24): a hint to the CPU inside a spin. */
const pause: () => void = (Atomics as { pause?: () => void }).pause?.bind(Atomics) ?? (() => {});

/**
 * Busy-waits up to `micros` for `done()`; true when it came. A thread asleep in Atomics.wait takes
 * 15-40 us to wake on a virtual machine (its vCPU halts); a spinning one sees the change at once
 * (docs/performance.md). Only worth it with a core to spare: hsm.spinMicros, 0 turns it off.
 */
export function spinUntil(micros: number, done: () => boolean): boolean {
  if (micros <= 0) return done();
  const until = performance.now() + micros / 1000;
  do {
    for (let i = 0; i < 32; i++) {
      if (done()) return true;
      pause();
    }
  } while (performance.now() < until);
  return done();
}

/** Sets the state and wakes whoever waits on it. */
export function signal(channel: Channel, state: number): void {
  Atomics.store(channel.control, STATE, state);
  Atomics.notify(channel.control, STATE);
}
