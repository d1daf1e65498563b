/**
 * Caps on open client connections, in total and per client address, and the
 * default total derived from the process's open-file limit: every
 * connection holds a file descriptor, and uploads, served files, the index
 * and `conda index` need some too.
 *
 * @module
 */

/** Options for {@linkcode ConnectionLimits}. */
export interface ConnectionLimitsOptions {
  /** Most connections open at once. */
  maxConnections: number;
  /** Most connections open at once from one client address. */
  maxPerClient: number;
}

/** Counts open connections and admits new ones within the caps. */
export class ConnectionLimits {
  readonly #maxConnections: number;
  readonly #maxPerClient: number;
  readonly #perClient = new Map<string, number>();
  #open = 0;

  /** Caps as given. */
  constructor(options: ConnectionLimitsOptions) {
    this.#maxConnections = options.maxConnections;
    this.#maxPerClient = options.maxPerClient;
  }

  /** Connections open now. */
  get open(): number {
    return this.#open;
  }

  /**
   * Admits a connection from `address` and returns the function that
   * releases it, or says which cap it would pass.
   */
  admit(address: string): (() => void) | "total" | "client" {
    if (this.#open >= this.#maxConnections) return "total";
    const fromClient = this.#perClient.get(address) ?? 0;
    if (fromClient >= this.#maxPerClient) return "client";
    this.#open++;
    this.#perClient.set(address, fromClient + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open--;
      const left = (this.#perClient.get(address) ?? 1) - 1;
      if (left === 0) this.#perClient.delete(address);
      else this.#perClient.set(address, left);
    };
  }
}

/** File descriptors kept free at least for everything but client connections. */
export const RESERVED_FILE_DESCRIPTORS = 64;
/** Highest default connection cap, however many file descriptors are free. */
export const DEFAULT_CONNECTION_CEILING = 2048;
/** Free file descriptors assumed when they cannot be counted. */
const ASSUMED_FREE = 1000;

/**
 * The default cap on open connections, from the file descriptors the
 * process can still open: all but a quarter of them (at least
 * {@linkcode RESERVED_FILE_DESCRIPTORS}) stay for spool files, served
 * files, the index and the runtime; at least 8, at most
 * {@linkcode DEFAULT_CONNECTION_CEILING}.
 *
 * @example Usage
 * ```ts
 * import { defaultMaxConnections } from "./connection_limits.ts";
 * console.log(defaultMaxConnections(1000)); // 750
 * console.log(defaultMaxConnections(90)); // 26
 * ```
 */
export function defaultMaxConnections(freeFileDescriptors: number | undefined): number {
  const free = freeFileDescriptors ?? ASSUMED_FREE;
  const reserved = Math.max(RESERVED_FILE_DESCRIPTORS, Math.floor(free / 4));
  return Math.max(8, Math.min(DEFAULT_CONNECTION_CEILING, free - reserved));
}

/** Enough free descriptors to give the ceiling: counting stops there. */
export const FREE_DESCRIPTORS_ENOUGH = Math.ceil(DEFAULT_CONNECTION_CEILING * 4 / 3) + 1;

/**
 * How many more files this process can open, counted up to `max` by
 * opening `path` (a directory it may read) until the open-file limit
 * (`EMFILE`) stops it; all are closed again. Undefined when `path` cannot
 * be opened at all.
 *
 * Deno refuses to read `/proc/self/limits` without `--allow-all`, and no
 * Deno API returns `RLIMIT_NOFILE`: counting is how a process with scoped
 * permissions learns its limit. It costs about 20-40 µs per descriptor.
 */
export function countFreeFileDescriptors(path: string, max: number): number | undefined {
  const opened: Deno.FsFile[] = [];
  try {
    while (opened.length < max) opened.push(Deno.openSync(path));
    return max;
  } catch (error) {
    const message = error instanceof Error ? error.message : "";
    return /os error (24|23)\b/.test(message) ? opened.length : undefined;
  } finally {
    for (const file of opened) file.close();
  }
}
