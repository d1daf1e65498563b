/**
 * Runs a task so that callers arriving while it runs share the next run.
 *
 * @module
 */

/**
 * Coalesces requests for a repeatable task (an index rebuild): at most one
 * run is in flight; every request made while it runs is served by the single
 * next run. Each caller's promise settles with the first run that started
 * after its request, so its change is always included.
 *
 * @example Usage
 * ```ts
 * import { CoalescedRuns } from "./coalesced_runs.ts";
 * let runs = 0;
 * const rebuild = new CoalescedRuns(async () => { runs++; });
 * await Promise.all([rebuild.request(), rebuild.request(), rebuild.request()]);
 * console.log(runs <= 2); // true
 * ```
 */
export class CoalescedRuns {
  readonly #task: () => Promise<void>;
  #running: Promise<void> | undefined;
  #next: Promise<void> | undefined;
  #runs = 0;

  constructor(task: () => Promise<void>) {
    this.#task = task;
  }

  /** Number of runs started so far. */
  get runs(): number {
    return this.#runs;
  }

  /** Resolves after a run that started after this call has finished. */
  request(): Promise<void> {
    // A queued run has not started yet, so it serves this caller too. Checked
    // first: between a run's end and the queued run's start, `#running` is
    // already cleared, and starting here would put two runs in flight.
    if (this.#next !== undefined) return this.#next;
    if (this.#running === undefined) return this.#start();
    this.#next = this.#running.catch(() => {}).then(() => {
      this.#next = undefined;
      return this.#start();
    });
    return this.#next;
  }

  #start(): Promise<void> {
    this.#runs++;
    const run = this.#task().finally(() => {
      if (this.#running === run) this.#running = undefined;
    });
    this.#running = run;
    return run;
  }
}
