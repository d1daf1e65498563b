/**
 * Slows down token guessing: a client address with too many failed token
 * attempts in a window is refused (429 with `Retry-After`) until the window
 * has passed, without the token being checked at all.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";

/** Options for {@linkcode AuthThrottle}. */
export interface AuthThrottleOptions {
  /**
   * Failed attempts allowed per address within the window.
   * @default {10}
   */
  maxFailures?: number;
  /**
   * Length of the window, in ms.
   * @default {60000}
   */
  windowMs?: number;
  /**
   * Addresses tracked at most (the oldest are forgotten first).
   * @default {10000}
   */
  maxAddresses?: number;
}

/** Counts failed token attempts per client address. */
export class AuthThrottle {
  readonly #failures = new Map<string, number[]>();
  readonly #maxFailures: number;
  readonly #windowMs: number;
  readonly #maxAddresses: number;

  constructor(options: AuthThrottleOptions = {}) {
    this.#maxFailures = options.maxFailures ?? 10;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#maxAddresses = options.maxAddresses ?? 10_000;
  }

  /** Throws 429 when `address` is over its limit of failed attempts. */
  check(address: string, now: number = Date.now()): void {
    const recent = this.#recent(address, now);
    if (recent.length < this.#maxFailures) return;
    const retryAfter = Math.max(1, Math.ceil((recent[0]! + this.#windowMs - now) / 1000));
    throw new HttpError(
      STATUS.TooManyRequests,
      `Cannot authenticate: too many failed token attempts from this address; retry in ${retryAfter} s`,
      { headers: { "retry-after": String(retryAfter) } },
    );
  }

  /** Records one failed attempt from `address`. */
  fail(address: string, now: number = Date.now()): void {
    const recent = this.#recent(address, now);
    recent.push(now);
    this.#failures.delete(address);
    this.#failures.set(address, recent);
    if (this.#failures.size > this.#maxAddresses) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
  }

  #recent(address: string, now: number): number[] {
    const times = this.#failures.get(address) ?? [];
    const recent = times.filter((time) => now - time < this.#windowMs);
    if (recent.length === 0) this.#failures.delete(address);
    return recent;
  }
}
