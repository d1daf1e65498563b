/**
 * Worker threads that decode small `.tar.bz2` packages whole with libbzip2
 * in WebAssembly (`bzip2_worker.ts`), so that the server's main thread only
 * reads the file and walks the decoded tar. Workers start on first use and
 * are kept while requests come (they queue for a free one); a worker idle
 * for `idleMs` is stopped, so that it does not keep the process alive (a web
 * `Worker` has no `unref`, and `node:worker_threads` copies a 100 kB
 * message in ~5 ms, as long as the decoding). A worker that crashes, or does not answer in time, fails
 * the request it was working on (a {@linkcode PackageReadError}: a fault of
 * the machine, not of the package) and is replaced; a worker whose
 * WebAssembly memory grew large is replaced too, so memory stays bounded.
 *
 * @module
 */

import { PackageReadError } from "./package_errors.ts";
import type { Bzip2WorkerReply, Bzip2WorkerRequest } from "./bzip2_worker.ts";

/** Options for {@linkcode Bzip2WorkerPool}. */
export interface Bzip2WorkerPoolOptions {
  /**
   * Worker threads decoding at once.
   * @default {1} one: each costs ~20-30 MiB of memory, and on two cores a
   * second one gave no clear gain (bench, 8 clients uploading ~100 KiB
   * `.tar.bz2` packages: 13-15 % of the reference with one or two)
   */
  workers?: number;
  /**
   * How long one decode may take before the worker is deemed hung, in ms.
   * @default {30000}
   */
  timeoutMs?: number;
  /**
   * How long a worker may stay idle before it is stopped, in ms.
   * @default {10000}
   */
  idleMs?: number;
  /**
   * WebAssembly memory past which a worker is replaced after its request.
   * @default {33554432} 32 MiB
   */
  maxHeapBytes?: number;
  /** The worker module (tests point it at a misbehaving one). @default bzip2_worker.ts */
  workerUrl?: URL;
}

/** What {@linkcode Bzip2WorkerPool.decode} found. */
export type Bzip2DecodeResult =
  | { verified: true; output: Uint8Array }
  | { verified: false; reason: string };

/** The worker module, the one source file the server must be allowed to read. */
export const BZIP2_WORKER_URL: URL = new URL("./bzip2_worker.ts", import.meta.url);

interface _Job {
  request: Bzip2WorkerRequest;
  resolve(result: Bzip2DecodeResult): void;
  reject(error: Error): void;
}

/** One worker thread and the job it is on. */
class _Slot {
  readonly worker: Worker;
  job: _Job | undefined;
  /** The job's deadline while busy, the idle stop while idle. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Set once the worker failed, was replaced or was terminated. */
  gone = false;

  constructor(url: URL) {
    this.worker = new Worker(url, { type: "module" });
  }
}

/**
 * A small pool of bzip2 decoding worker threads; see the module doc.
 *
 * @example Usage
 * ```ts ignore
 * const pool = new Bzip2WorkerPool();
 * const result = await pool.decode(bytesOfATarBz2, 32 * 1024 * 1024);
 * if (result.verified) console.log(result.output.length);
 * await pool.close();
 * ```
 */
export class Bzip2WorkerPool {
  readonly #size: number;
  readonly #timeoutMs: number;
  readonly #idleMs: number;
  readonly #maxHeapBytes: number;
  readonly #url: URL;
  readonly #slots: (_Slot | undefined)[];
  readonly #queue: _Job[] = [];
  #closed = false;

  constructor(options: Bzip2WorkerPoolOptions = {}) {
    this.#size = Math.max(1, options.workers ?? 1);
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#idleMs = options.idleMs ?? 10_000;
    this.#maxHeapBytes = options.maxHeapBytes ?? 32 * 1024 * 1024;
    this.#url = options.workerUrl ?? BZIP2_WORKER_URL;
    this.#slots = new Array(this.#size).fill(undefined);
  }

  /**
   * Decodes the whole bzip2 file `bytes` (handed over: do not use it after)
   * into at most `maxOutputBytes`, checking every CRC. "Not verified" means
   * the file is not one the fast path decodes whole (multi-stream quirks,
   * trailing bytes, corrupt, too large once decoded): decode it another way.
   * Rejects with a {@linkcode PackageReadError} when the worker fails.
   */
  decode(
    bytes: Uint8Array<ArrayBuffer>,
    maxOutputBytes: number,
    maxEmptyStreams = 8,
  ): Promise<Bzip2DecodeResult> {
    if (this.#closed) {
      return Promise.reject(
        new PackageReadError("Cannot read package: bzip2 decoder is shut down"),
      );
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ request: { bytes, maxOutputBytes, maxEmptyStreams }, resolve, reject });
      this.#dispatch();
    });
  }

  /** Stops every worker; requests in flight or queued, and later ones, fail. */
  async close(): Promise<void> {
    this.#closed = true;
    const error = new PackageReadError("Cannot read package: bzip2 decoder is shut down");
    for (const job of this.#queue.splice(0)) job.reject(error);
    for (let i = 0; i < this.#slots.length; i++) {
      const slot = this.#slots[i];
      if (slot === undefined) continue;
      this.#retire(i, slot, error);
      slot.worker.terminate();
    }
    // a terminated worker runs nothing more; let its thread wind down
    await new Promise((resolve) => setTimeout(resolve, 0));
  }

  /** {@linkcode Bzip2WorkerPool.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #dispatch(): void {
    for (let i = 0; i < this.#slots.length && this.#queue.length > 0; i++) {
      let slot = this.#slots[i];
      if (slot?.job !== undefined) continue;
      if (slot === undefined) {
        slot = this.#start(i);
        if (slot === undefined) return;
      }
      const job = this.#queue.shift()!;
      slot.job = job;
      clearTimeout(slot.timer);
      const taken = slot;
      slot.timer = setTimeout(() => {
        this.#fail(i, taken, `did not answer in ${this.#timeoutMs / 1000} s`);
      }, this.#timeoutMs);
      const { bytes } = job.request;
      slot.worker.postMessage(job.request, [bytes.buffer]);
    }
  }

  #start(index: number): _Slot | undefined {
    let slot: _Slot;
    try {
      slot = new _Slot(this.#url);
    } catch (error) {
      const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
      const failure = new PackageReadError(
        `Cannot read package: bzip2 decoder cannot start (${reason})`,
        { cause: error },
      );
      for (const job of this.#queue.splice(0)) job.reject(failure);
      return undefined;
    }
    this.#slots[index] = slot;
    slot.worker.onmessage = (event: MessageEvent<Bzip2WorkerReply>) => {
      this.#answer(index, slot, event.data);
    };
    slot.worker.onerror = (event: ErrorEvent) => {
      // handled here: unhandled, a worker's error would end the whole process
      event.preventDefault();
      const reason = String(event.message ?? "unknown error").split("\n")[0];
      this.#fail(index, slot, `crashed (${reason})`);
    };
    slot.worker.onmessageerror = () => this.#fail(index, slot, "sent an unreadable message");
    return slot;
  }

  #answer(index: number, slot: _Slot, reply: Bzip2WorkerReply): void {
    const job = slot.job;
    if (slot.gone || job === undefined) return;
    clearTimeout(slot.timer);
    slot.job = undefined;
    if (reply.heapBytes > this.#maxHeapBytes) {
      // WebAssembly memory never shrinks: a fresh worker gives it back
      this.#retire(index, slot);
      slot.worker.terminate();
    } else {
      const idle = setTimeout(() => {
        if (slot.job !== undefined) return;
        this.#retire(index, slot);
        slot.worker.terminate();
      }, this.#idleMs);
      // the stop must not keep the process alive by itself either
      Deno.unrefTimer(idle as unknown as number);
      slot.timer = idle;
    }
    job.resolve(
      reply.verified
        ? { verified: true, output: reply.output }
        : { verified: false, reason: reply.reason },
    );
    this.#dispatch();
  }

  /** Fails the slot's job, drops the slot (terminating its worker), starts over. */
  #fail(index: number, slot: _Slot, what: string): void {
    if (slot.gone) return;
    this.#retire(
      index,
      slot,
      new PackageReadError(`Cannot read package: bzip2 decoder worker ${what}`),
    );
    slot.worker.terminate();
    this.#dispatch();
  }

  #retire(index: number, slot: _Slot, error?: Error): void {
    slot.gone = true;
    clearTimeout(slot.timer);
    if (this.#slots[index] === slot) this.#slots[index] = undefined;
    const job = slot.job;
    slot.job = undefined;
    if (job !== undefined) job.reject(error ?? new PackageReadError("Cannot read package"));
  }
}

/** The process's pool, used by the `.tar.bz2` reader. */
export const bzip2WorkerPool: Bzip2WorkerPool = new Bzip2WorkerPool();
