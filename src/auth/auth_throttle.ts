/**
 * Slows down token guessing per client address without locking out the
 * right token.
 *
 * Every address has a bucket of failed attempts it may make (`burst`,
 * refilled at `perMinute`). A failed attempt takes one; while the bucket has
 * one, the failure is answered at once. When it is empty, failures are
 * **held**: they queue per address and are answered one at a time, each
 * when the bucket has refilled by one, so an address gets at most `burst`
 * failure answers at once and then `perMinute` a minute, however many it
 * sends in parallel. At most `maxHeld` attempts of one address may be
 * unanswered at once; beyond that a new request from it is refused with 429
 * before its token is looked at.
 *
 * Why the right token still gets through, and why that is no faster oracle:
 * verification is one salted sha256 and a constant-time compare, so every
 * admitted request is verified at once, and a request whose token is right
 * goes on without waiting behind held failures (a shared NAT with one stale
 * CI secret does not block the team's good uploads). A guesser learns that a
 * guess was wrong only from its (held) answer, and a new guess is only
 * admitted while fewer than `maxHeld` of its attempts are unanswered; so in
 * any span of `t` minutes an address gets at most
 * `burst + maxHeld + perMinute * t` tokens verified, parallel or not (52 in
 * the first minute, then 10 a minute, by default). What it cannot do is make
 * verification itself take a different time: a held answer waits on the
 * bucket only, never on how much of the token matched.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";

/** Options for {@linkcode AuthThrottle}. */
export interface AuthThrottleOptions {
  /**
   * Failures answered at once before failures are held.
   * @default {10}
   */
  burst?: number;
  /**
   * Failures answered per minute once the burst is spent.
   * @default {10}
   */
  perMinute?: number;
  /**
   * Attempts of one address that may be unanswered (being verified or held)
   * at once; beyond it a request is refused with 429 before verification.
   * @default {32}
   */
  maxHeld?: number;
  /**
   * Addresses tracked at most (the least recently seen are forgotten first).
   * @default {10000}
   */
  maxAddresses?: number;
  /** The clock, in ms (tests). */
  now?: () => number;
}

/** An admitted attempt: report its outcome exactly once. */
export interface AuthAttempt {
  /** The token was right: nothing is charged. */
  succeeded(): void;
  /**
   * The attempt failed (wrong token, no token): resolves when its failure
   * may be answered. Settles at once when `signal` aborts (the client went
   * away) or the throttle is closed.
   */
  failed(signal?: AbortSignal): Promise<void>;
}

interface _Address {
  /** Failures the bucket holds, fractional while refilling. */
  credits: number;
  /** When `credits` was last brought up to date. */
  updated: number;
  /** Attempts admitted and not yet answered. */
  open: number;
  /** Held failures, first first. */
  held: (() => void)[];
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** Per-address failed-token throttle; see the module doc for the argument. */
export class AuthThrottle {
  readonly #addresses = new Map<string, _Address>();
  readonly #burst: number;
  readonly #msPerCredit: number;
  readonly #maxHeld: number;
  readonly #maxAddresses: number;
  readonly #now: () => number;
  #closed = false;

  constructor(options: AuthThrottleOptions = {}) {
    this.#burst = options.burst ?? 10;
    this.#msPerCredit = 60_000 / (options.perMinute ?? 10);
    this.#maxHeld = options.maxHeld ?? 32;
    this.#maxAddresses = options.maxAddresses ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  /** Failure answers held right now, over all addresses (for metrics). */
  get held(): number {
    let held = 0;
    for (const state of this.#addresses.values()) held += state.held.length;
    return held;
  }

  /**
   * Admits one attempt from `client` (an IP address; IPv6 addresses count
   * per /64, the block one host usually holds), before its token is
   * verified; throws 429 with `Retry-After` when `maxHeld` attempts of that
   * address are unanswered.
   */
  admit(client: string): AuthAttempt {
    const address = throttleKey(client);
    const state = this.#state(address);
    if (state.open >= this.#maxHeld) {
      const retryAfter = Math.max(1, Math.ceil(this.#msPerCredit / 1000));
      throw new HttpError(
        STATUS.TooManyRequests,
        `Cannot authenticate: too many failed token attempts from this address are waiting; retry in ${retryAfter} s`,
        { headers: { "retry-after": String(retryAfter) } },
      );
    }
    state.open++;
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      return true;
    };
    return {
      succeeded: () => {
        if (settle()) this.#close(address, state);
      },
      failed: (signal) => {
        if (!settle()) return Promise.resolve();
        return this.#fail(address, state, signal);
      },
    };
  }

  /** Answers every held failure now and holds none from here on (shutdown). */
  close(): void {
    this.#closed = true;
    for (const state of this.#addresses.values()) {
      clearTimeout(state.timer);
      for (const release of state.held.splice(0)) release();
    }
  }

  #fail(address: string, state: _Address, signal?: AbortSignal): Promise<void> {
    this.#refill(state);
    if (this.#closed || (state.held.length === 0 && state.credits >= 1)) {
      state.credits = Math.max(0, state.credits - 1);
      this.#close(address, state);
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const release = () => {
        signal?.removeEventListener("abort", gone);
        this.#close(address, state);
        resolve();
      };
      const gone = () => {
        const at = state.held.indexOf(release);
        if (at >= 0) state.held.splice(at, 1);
        release();
      };
      if (signal?.aborted) return gone();
      signal?.addEventListener("abort", gone, { once: true });
      state.held.push(release);
      this.#schedule(state);
    });
  }

  /** Releases the first held failure when the bucket has refilled by one. */
  #schedule(state: _Address): void {
    if (state.timer !== undefined || state.held.length === 0) return;
    this.#refill(state);
    const wait = Math.max(0, (1 - state.credits) * this.#msPerCredit);
    state.timer = setTimeout(() => {
      state.timer = undefined;
      this.#refill(state);
      if (state.credits >= 1 && state.held.length > 0) {
        state.credits -= 1;
        state.held.shift()!();
      }
      this.#schedule(state);
    }, Math.ceil(wait));
  }

  #close(address: string, state: _Address): void {
    state.open = Math.max(0, state.open - 1);
    this.#forgetIfIdle(address, state);
  }

  #refill(state: _Address): void {
    const now = this.#now();
    state.credits = Math.min(
      this.#burst,
      state.credits + (now - state.updated) / this.#msPerCredit,
    );
    state.updated = now;
  }

  #state(address: string): _Address {
    let state = this.#addresses.get(address);
    if (state === undefined) {
      state = { credits: this.#burst, updated: this.#now(), open: 0, held: [], timer: undefined };
    } else {
      this.#addresses.delete(address);
    }
    // Most recently seen last, so that the first entry is the one to forget.
    this.#addresses.set(address, state);
    if (this.#addresses.size > this.#maxAddresses) {
      for (const [oldest, old] of this.#addresses) {
        if (old.open > 0) continue;
        this.#addresses.delete(oldest);
        break;
      }
    }
    return state;
  }

  /** An address with a full bucket and nothing open needs no memory. */
  #forgetIfIdle(address: string, state: _Address): void {
    if (state.open > 0 || state.held.length > 0) return;
    this.#refill(state);
    if (state.credits >= this.#burst && this.#addresses.get(address) === state) {
      this.#addresses.delete(address);
    }
  }
}

/**
 * The throttle's key for a client address: an IPv4 address as it is, an
 * IPv6 address by its /64 prefix (one host usually has a whole /64, so per
 * address would give a guesser 2^64 buckets).
 *
 * @example Usage
 * ```ts
 * import { throttleKey } from "./auth_throttle.ts";
 * console.log(throttleKey("2001:db8::1")); // 2001:db8:0:0::/64
 * ```
 */
export function throttleKey(address: string): string {
  if (!address.includes(":")) return address;
  const bare = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  if (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(bare)) return bare.slice(7);
  const [head = "", tail] = bare.split("::", 2) as [string, string | undefined];
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined
    ? left
    : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return groups.slice(0, 4).map((group) => group.toLowerCase().replace(/^0+(?=.)/, "")).join(":") +
    "::/64";
}
