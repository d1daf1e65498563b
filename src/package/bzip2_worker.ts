/**
 * The worker thread that decodes small `.tar.bz2` packages whole with
 * libbzip2 compiled to WebAssembly (`@foxglove/wasm-bz2`), off the server's
 * main thread. Started by `bzip2_worker_pool.ts` (which imports only its
 * types; tests import its functions, and no handler is installed then).
 *
 * libbzip2's one-call decoder (`BZ2_bzBuffToBuffDecompress`) reads one
 * stream and ignores whatever follows it, so the file is first cut into
 * streams at its end-of-stream markers: every piece must hold exactly one
 * marker, at its end, and be followed by the next stream's `BZh` header or
 * by the end of the file. Each piece is then decoded on its own (every block
 * CRC and the stream CRC checked by libbzip2). Anything else (a marker
 * inside a stream, trailing bytes, a decoder error, output past the bound,
 * a run of empty streams) answers "not verified", and the caller decodes
 * the file with its own streaming reader, which names the fault: so no byte
 * is ever accepted here without being checked.
 *
 * The file imports nothing of ours: a worker reads its modules from disk,
 * and the server may read only this one file of its sources (see
 * `src/permissions.ts`). The `.wasm` comes from the npm package as bytes
 * (`with { type: "bytes" }`), so no file is read at run time.
 *
 * @module
 */

import createBzip2Module from "@foxglove/wasm-bz2/wasm/module.js";
import wasmBinary from "@foxglove/wasm-bz2/wasm/module.wasm" with { type: "bytes" };

/** A request from the pool. */
export interface Bzip2WorkerRequest {
  /** The whole `.tar.bz2` file. */
  bytes: Uint8Array<ArrayBuffer>;
  /** Most decoded bytes to produce before giving up (answering "not verified"). */
  maxOutputBytes: number;
  /** Empty streams accepted in a row (more answer "not verified"). */
  maxEmptyStreams: number;
}

/** The answer to a {@linkcode Bzip2WorkerRequest}. */
export type Bzip2WorkerReply =
  | { verified: true; output: Uint8Array<ArrayBuffer>; heapBytes: number }
  | { verified: false; reason: string; heapBytes: number };

/** The parts of the Emscripten module used here. */
interface _Bzip2Module {
  HEAPU8: Uint8Array;
  _malloc(size: number): number;
  _free(pointer: number): void;
  decompress(
    destination: number,
    destinationSize: number,
    source: number,
    sourceSize: number,
    small: number,
  ): { code: number; error?: string; buffer?: Uint8Array };
}

/** The 48-bit end-of-stream magic, as two 24-bit halves. */
const EOS_HIGH = 0x177245;
const EOS_LOW = 0x385090;
/** For each bit shift 0..7: the 4 whole bytes the magic covers after its first byte. */
const EOS_KEYS: readonly number[] = Array.from({ length: 8 }, (_, shift) => {
  // the magic placed `shift` bits into a 64-bit window; bytes 1..4 of it
  const window = (0x177245385090n << BigInt(64 - 48 - shift)) & ((1n << 64n) - 1n);
  return Number((window >> 24n) & 0xffffffffn);
});

/** `count` (at most 24) bits of `bytes` from bit `position`, most significant first; -1 past the end. */
function _bitsAt(bytes: Uint8Array, position: number, count: number): number {
  const first = position >>> 3;
  const last = (position + count - 1) >>> 3;
  if (last >= bytes.length) return -1;
  let value = 0;
  for (let i = first; i <= last; i++) value = value * 256 + bytes[i]!;
  const trailing = (last + 1) * 8 - (position + count);
  return Math.floor(value / 2 ** trailing) % 2 ** count;
}

/** For each byte value: the shifts whose key starts with it, as a bit mask. */
const EOS_FIRST_BYTE: Uint8Array = new Uint8Array(256);
for (let shift = 0; shift < 8; shift++) EOS_FIRST_BYTE[EOS_KEYS[shift]! >>> 24]! |= 1 << shift;

/** Bit positions of every end-of-stream magic in `bytes`, in order. */
export function findStreamEndMarkers(bytes: Uint8Array): number[] {
  const found: number[] = [];
  // byte j starts the 4 whole bytes a magic starting in byte j-1 covers
  for (let j = 1; j + 3 < bytes.length; j++) {
    const shifts = EOS_FIRST_BYTE[bytes[j]!]!;
    if (shifts === 0) continue;
    const word = ((bytes[j]! << 24) | (bytes[j + 1]! << 16) | (bytes[j + 2]! << 8) |
      bytes[j + 3]!) >>> 0;
    for (let shift = 0; shift < 8; shift++) {
      if ((shifts & (1 << shift)) === 0 || word !== EOS_KEYS[shift]) continue;
      const position = (j - 1) * 8 + shift;
      if (
        _bitsAt(bytes, position, 24) === EOS_HIGH && _bitsAt(bytes, position + 24, 24) === EOS_LOW
      ) {
        found.push(position);
      }
    }
  }
  return found;
}

function _isStreamHeader(bytes: Uint8Array, at: number): boolean {
  const level = bytes[at + 3] ?? 0;
  return bytes[at] === 0x42 && bytes[at + 1] === 0x5a && bytes[at + 2] === 0x68 &&
    level >= 0x31 && level <= 0x39;
}

/**
 * The byte ranges of the file's bzip2 streams, each holding exactly one
 * end-of-stream marker at its end; a string saying why not when the file
 * cannot be cut so.
 */
export function splitStreams(bytes: Uint8Array): [number, number][] | string {
  const streams: [number, number][] = [];
  let start = 0;
  for (const marker of findStreamEndMarkers(bytes)) {
    if (marker < start * 8) return "an end-of-stream marker inside another's trailer";
    // the marker, the 32-bit stream CRC, padding to a whole byte
    const end = Math.ceil((marker + 80) / 8);
    if (end > bytes.length) return "an end-of-stream marker without its CRC";
    if (end !== bytes.length && !_isStreamHeader(bytes, end)) {
      return "an end-of-stream marker not followed by a stream";
    }
    streams.push([start, end]);
    start = end;
  }
  if (start !== bytes.length) return "bytes after the last end-of-stream marker";
  return streams;
}

let bzip2: _Bzip2Module | undefined;

/** Decodes `request`'s file stream by stream; see the module doc. */
async function _decode(request: Bzip2WorkerRequest): Promise<Bzip2WorkerReply> {
  bzip2 ??= await (createBzip2Module as unknown as (
    options: { wasmBinary: Uint8Array },
  ) => Promise<_Bzip2Module>)({ wasmBinary });
  const module = bzip2;
  const { bytes, maxOutputBytes, maxEmptyStreams } = request;
  const notVerified = (reason: string): Bzip2WorkerReply => ({
    verified: false,
    reason,
    heapBytes: module.HEAPU8.length,
  });
  const streams = splitStreams(bytes);
  if (typeof streams === "string") return notVerified(streams);
  const source = module._malloc(bytes.length);
  const destination = module._malloc(maxOutputBytes);
  try {
    if (source === 0 || destination === 0) return notVerified("out of decoder memory");
    module.HEAPU8.set(bytes, source);
    let produced = 0;
    let emptyInARow = 0;
    for (const [start, end] of streams) {
      const result = module.decompress(
        destination + produced,
        maxOutputBytes - produced,
        source + start,
        end - start,
        0,
      );
      if (result.code !== 0 || result.buffer === undefined) {
        return notVerified(`libbzip2 error ${result.code} (${result.error ?? "unknown"})`);
      }
      const length = result.buffer.length;
      emptyInARow = length === 0 ? emptyInARow + 1 : 0;
      if (emptyInARow > maxEmptyStreams) return notVerified("a run of empty streams");
      produced += length;
    }
    const output = module.HEAPU8.slice(destination, destination + produced);
    return { verified: true, output, heapBytes: module.HEAPU8.length };
  } finally {
    if (source !== 0) module._free(source);
    if (destination !== 0) module._free(destination);
  }
}

/** The worker's global scope, as far as used here. */
interface _WorkerScope {
  onmessage: ((event: MessageEvent<Bzip2WorkerRequest>) => void) | null;
  postMessage(message: Bzip2WorkerReply, transfer: Transferable[]): void;
}

// In a worker (not when a test imports the module for its functions).
if (typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined") {
  const scope = globalThis as unknown as _WorkerScope;
  scope.onmessage = async (event) => {
    const reply = await _decode(event.data);
    scope.postMessage(reply, reply.verified ? [reply.output.buffer] : []);
  };
}
