/**
 * A lease (a lock with a time limit) in an object store whose only atomic
 * conditional write is create-if-absent.
 *
 * The lease's history is a row of generation objects `<name>/<gen>`, each
 * created with `If-None-Match: *`; whoever created the highest generation
 * holds the lease until it expires. Taking, renewing and releasing all
 * create the next generation, so of any number of contenders exactly one
 * succeeds, and a holder learns it lost the lease when its renewal finds the
 * generation taken. The generation number is a fencing token.
 *
 * Time: a holder counts its lease from *before* it sent the create and stops
 * acting at `ttl` (by its own monotonic clock); a contender counts from when
 * it first *saw* the generation and takes over after `ttl`, so the holder's
 * deadline is always earlier, whatever the clocks say. A generation whose
 * store time (LastModified) is older than `ttl + clockSkew` by the local
 * clock is expired at once, so a replica starting long after a crash does not
 * wait. See docs/object_storage.md.
 *
 * @module
 */

import { ObjectExistsError, type ObjectStore } from "./object_store.ts";

/** Options for {@linkcode ObjectLease.acquire}. */
export interface AcquireOptions {
  /**
   * How long to wait for a busy lease, in ms; then {@linkcode LeaseBusyError}.
   * @default {0}
   */
  waitMs?: number;
  /**
   * Poll interval while waiting, in ms.
   * @default {200}
   */
  pollMs?: number;
}

/** Options for {@linkcode ObjectLease}. */
export interface ObjectLeaseOptions {
  /**
   * Lease duration in ms; a holder renews before it ends.
   * @default {30000}
   */
  ttlMs?: number;
  /**
   * Largest difference assumed between a replica's clock and the store's,
   * in ms (only used to expire generations that are clearly old).
   * @default {60000}
   */
  clockSkewMs?: number;
  /**
   * Name of the holder, stored in the generation object for operators.
   * @default {a random id}
   */
  owner?: string;
}

/** Thrown by {@linkcode ObjectLease.acquire} when another holder keeps the lease. */
export class LeaseBusyError extends Error {
  constructor(name: string, owner: string) {
    super(`Cannot take lease ${name}: held by ${owner}`);
    this.name = "LeaseBusyError";
  }
}

/** Thrown by {@linkcode HeldLease.renew} when the lease was lost (expired and taken over). */
export class LeaseLostError extends Error {
  constructor(name: string, generation: number) {
    super(`Cannot renew lease ${name}: generation ${generation} was taken over`);
    this.name = "LeaseLostError";
  }
}

interface GenerationRecord {
  owner: string;
  holder: string;
  ttlMs: number;
  released: boolean;
}

const GEN_DIGITS = 12;

function genOf(key: string): number | undefined {
  const name = key.slice(key.lastIndexOf("/") + 1);
  return /^\d{12}$/.test(name) ? Number(name) : undefined;
}

/** A lease taken by this process. */
export interface HeldLease {
  /** The generation this holder created last: a fencing token. */
  readonly generation: number;
  /** True while the lease is certainly still ours (before the local deadline). */
  isValid(): boolean;
  /** Extends the lease by a new generation; throws {@linkcode LeaseLostError}. */
  renew(): Promise<void>;
  /**
   * Renews every third of the ttl in the background until {@linkcode release};
   * the signal aborts (reason: the error) when a renewal fails or the lease
   * runs out before one succeeds. Work done under the lease should stop then.
   */
  keepRenewed(): AbortSignal;
  /** Gives the lease up (creates a released generation). */
  release(): Promise<void>;
}

/**
 * One named lease in a store.
 *
 * @example Usage
 * ```ts ignore
 * import { ObjectLease } from "./object_lease.ts";
 * const held = await new ObjectLease(store, ".index/linux-64/writer").acquire({ waitMs: 5000 });
 * const signal = held.keepRenewed();
 * try {
 *   await writeDerivedFiles({ signal, fencingToken: held.generation });
 * } finally {
 *   await held.release();
 * }
 * ```
 */
export class ObjectLease {
  readonly #store: ObjectStore;
  readonly #name: string;
  readonly #ttlMs: number;
  readonly #clockSkewMs: number;
  readonly #owner: string;
  /** The generation last seen as newest, and when (local monotonic ms). */
  #seen: { generation: number; at: number } | undefined;
  /**
   * The record of the generation last read: generations are created once
   * and never rewritten, so a contender polling a held lease lists but does
   * not read the same generation again.
   */
  #read: { generation: number; record: GenerationRecord } | undefined;

  constructor(store: ObjectStore, name: string, options: ObjectLeaseOptions = {}) {
    this.#store = store;
    this.#name = name.replace(/\/+$/, "");
    this.#ttlMs = options.ttlMs ?? 30_000;
    this.#clockSkewMs = options.clockSkewMs ?? 60_000;
    this.#owner = options.owner ?? crypto.randomUUID();
  }

  #key(generation: number): string {
    return `${this.#name}/${String(generation).padStart(GEN_DIGITS, "0")}`;
  }

  /** Takes the lease, waiting up to `waitMs` for a holder to release it or expire. */
  async acquire(options: AcquireOptions = {}): Promise<HeldLease> {
    const deadline = performance.now() + (options.waitMs ?? 0);
    while (true) {
      const newest = await this.#newest();
      if (newest === undefined || this.#isFree(newest)) {
        const next = (newest?.generation ?? 0) + 1;
        const startedAt = performance.now();
        if (await this.#create(next, false)) return this.#held(next, startedAt);
        continue; // someone else took that generation: look again
      }
      if (performance.now() >= deadline) {
        throw new LeaseBusyError(this.#name, newest.record?.owner ?? "an unknown holder");
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 200));
    }
  }

  async #newest(): Promise<
    { generation: number; lastModified: Date; record: GenerationRecord | undefined } | undefined
  > {
    let newest: { generation: number; lastModified: Date } | undefined;
    for await (const info of this.#store.list(`${this.#name}/`)) {
      const generation = genOf(info.key);
      if (generation !== undefined) newest = { generation, lastModified: info.lastModified };
    }
    if (newest === undefined) return undefined;
    if (this.#read?.generation === newest.generation) {
      return { ...newest, record: this.#read.record };
    }
    const got = await this.#store.getBytes(this.#key(newest.generation));
    const record = got === undefined
      ? undefined
      : JSON.parse(new TextDecoder().decode(got.bytes)) as GenerationRecord;
    if (record !== undefined) this.#read = { generation: newest.generation, record };
    return { ...newest, record };
  }

  #isFree(
    newest: { generation: number; lastModified: Date; record: GenerationRecord | undefined },
  ): boolean {
    if (newest.record?.released) return true;
    const ttl = newest.record?.ttlMs ?? this.#ttlMs;
    const now = performance.now();
    if (this.#seen?.generation !== newest.generation) {
      this.#seen = { generation: newest.generation, at: now };
    }
    if (now - this.#seen.at > ttl) return true;
    return Date.now() - newest.lastModified.getTime() > ttl + this.#clockSkewMs;
  }

  /** Creates generation `generation`; false when another contender has it. */
  async #create(generation: number, released: boolean): Promise<boolean> {
    const record: GenerationRecord = {
      owner: this.#owner,
      holder: crypto.randomUUID(),
      ttlMs: this.#ttlMs,
      released,
    };
    try {
      await this.#store.put(
        this.#key(generation),
        new TextEncoder().encode(JSON.stringify(record)),
        { createOnly: true, contentType: "application/json" },
      );
    } catch (error) {
      if (error instanceof ObjectExistsError) return false;
      throw error;
    }
    // Old generations may have been pruned: a create far below the newest
    // succeeds, and must not count.
    for await (
      const info of this.#store.list(`${this.#name}/`, { startAfter: this.#key(generation) })
    ) {
      if ((genOf(info.key) ?? 0) > generation) return false;
    }
    return true;
  }

  #held(first: number, startedAt: number): HeldLease {
    let generation = first;
    let validUntil = startedAt + this.#ttlMs;
    let stopped = false;
    const timers = new Set<ReturnType<typeof setTimeout>>();
    const stopTimers = () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
    };
    const name = this.#name;
    const ttlMs = this.#ttlMs;
    const renew = async () => {
      const startedAt = performance.now();
      if (!await this.#create(generation + 1, false)) throw new LeaseLostError(name, generation);
      generation += 1;
      validUntil = startedAt + ttlMs;
    };
    return {
      get generation() {
        return generation;
      },
      isValid: () => !stopped && performance.now() < validUntil,
      renew,
      keepRenewed: () => {
        const controller = new AbortController();
        const fail = (reason: unknown) => {
          stopTimers();
          if (!controller.signal.aborted) controller.abort(reason);
        };
        // Aborts if the lease runs out before a renewal lands.
        const watch = () => {
          const timer = setTimeout(() => {
            timers.delete(timer);
            if (performance.now() >= validUntil) {
              fail(new LeaseLostError(name, generation));
            } else watch();
          }, Math.max(0, validUntil - performance.now()));
          timers.add(timer);
        };
        const tick = () => {
          const timer = setTimeout(async () => {
            timers.delete(timer);
            if (stopped) return;
            try {
              await renew();
              if (!stopped) tick();
            } catch (error) {
              fail(error);
            }
          }, ttlMs / 3);
          timers.add(timer);
        };
        watch();
        tick();
        return controller.signal;
      },
      release: async () => {
        stopped = true;
        stopTimers();
        if (await this.#create(generation + 1, true)) generation += 1;
        validUntil = 0;
      },
    };
  }

  /** Deletes all but the newest `keep` generations; returns how many were deleted. */
  async prune(keep = 10): Promise<number> {
    const keys: string[] = [];
    for await (const info of this.#store.list(`${this.#name}/`)) {
      if (genOf(info.key) !== undefined) keys.push(info.key);
    }
    const doomed = keys.slice(0, Math.max(0, keys.length - keep));
    for (const key of doomed) await this.#store.delete(key);
    return doomed.length;
  }
}
