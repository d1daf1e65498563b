import assert from "node:assert/strict";
import { CoalescedRuns } from "../src/index/coalesced_runs.ts";

/** A task whose runs the test finishes by hand, one at a time. */
class ManualTask {
  started = 0;
  inFlight = 0;
  maxInFlight = 0;
  readonly #pending: { resolve: () => void; reject: (error: Error) => void }[] = [];

  readonly task = (): Promise<void> => {
    this.started++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<void>((resolve, reject) => this.#pending.push({ resolve, reject }))
      .finally(() => this.inFlight--);
  };

  /** Ends the oldest unfinished run, with `error` if given. */
  finish(error?: Error): void {
    const run = this.#pending.shift();
    assert.ok(run, "no run to finish");
    if (error) run.reject(error);
    else run.resolve();
  }
}

/** The state of a promise, observed without awaiting it. */
function track(
  promise: Promise<void>,
): { state: "pending" | "fulfilled" | "rejected"; error?: unknown } {
  const tracked: { state: "pending" | "fulfilled" | "rejected"; error?: unknown } = {
    state: "pending",
  };
  promise.then(() => tracked.state = "fulfilled", (error) => {
    tracked.state = "rejected";
    tracked.error = error;
  });
  return tracked;
}

/** Lets every queued promise job run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("CoalescedRuns.request() starts a run at once when none is in flight", async () => {
  const manual = new ManualTask();
  const runs = new CoalescedRuns(manual.task);
  const first = track(runs.request());
  assert.equal(manual.started, 1);
  assert.equal(runs.runs, 1);
  await settle();
  assert.equal(first.state, "pending");
  manual.finish();
  await settle();
  assert.equal(first.state, "fulfilled");
  // Idle again: the next request starts its own run at once.
  const second = track(runs.request());
  assert.equal(manual.started, 2);
  manual.finish();
  await settle();
  assert.equal(second.state, "fulfilled");
});

Deno.test("CoalescedRuns.request() during a run settles with the next run, which starts after it", async () => {
  const manual = new ManualTask();
  const runs = new CoalescedRuns(manual.task);
  const first = track(runs.request());
  const second = track(runs.request());
  assert.equal(manual.started, 1, "no second run while the first is in flight");
  manual.finish();
  await settle();
  assert.equal(first.state, "fulfilled");
  assert.equal(second.state, "pending", "the run in flight at its request does not count");
  assert.equal(manual.started, 2, "the next run started once the first ended");
  manual.finish();
  await settle();
  assert.equal(second.state, "fulfilled");
  assert.equal(runs.runs, 2);
});

Deno.test("CoalescedRuns.request() calls made during one run share a single next run", async () => {
  const manual = new ManualTask();
  const runs = new CoalescedRuns(manual.task);
  const first = track(runs.request());
  const waiting = Array.from({ length: 5 }, () => track(runs.request()));
  manual.finish();
  await settle();
  assert.equal(first.state, "fulfilled");
  assert.equal(manual.started, 2);
  assert.ok(waiting.every((request) => request.state === "pending"));
  manual.finish();
  await settle();
  assert.ok(waiting.every((request) => request.state === "fulfilled"));
  assert.equal(runs.runs, 2);
  assert.equal(manual.maxInFlight, 1);
});

Deno.test("CoalescedRuns.request() rejects the callers of a failing run and still runs the next", async () => {
  const manual = new ManualTask();
  const runs = new CoalescedRuns(manual.task);
  const first = track(runs.request());
  const second = track(runs.request());
  const third = track(runs.request());
  const boom = new Error("run 1 failed");
  manual.finish(boom);
  await settle();
  assert.equal(first.state, "rejected");
  assert.equal(first.error, boom);
  assert.equal(second.state, "pending", "a failure of the run before does not answer it");
  assert.equal(third.state, "pending");
  assert.equal(manual.started, 2, "the failure did not stop the queued run");
  const fourth = track(runs.request()); // during run 2: served by run 3
  const again = new Error("run 2 failed");
  manual.finish(again);
  await settle();
  for (const request of [second, third]) {
    assert.equal(request.state, "rejected");
    assert.equal(request.error, again);
  }
  assert.equal(fourth.state, "pending");
  assert.equal(manual.started, 3);
  manual.finish();
  await settle();
  assert.equal(fourth.state, "fulfilled");
  // Failures leave no state behind: an idle request starts a run at once.
  const fifth = track(runs.request());
  assert.equal(manual.started, 4);
  manual.finish();
  await settle();
  assert.equal(fifth.state, "fulfilled");
  assert.equal(manual.maxInFlight, 1);
});

Deno.test("CoalescedRuns.request() right after a run ends joins the queued run instead of overlapping it", async () => {
  // Regression: a caller continuing from a finished run used to find no run
  // in flight and start one, while the queued run started too.
  const manual = new ManualTask();
  const runs = new CoalescedRuns(manual.task);
  const first = runs.request();
  const second = track(runs.request());
  manual.finish();
  await first;
  const third = track(runs.request());
  await settle();
  assert.equal(manual.started, 2);
  assert.equal(manual.maxInFlight, 1, "two runs were in flight at once");
  manual.finish();
  await settle();
  assert.equal(second.state, "fulfilled");
  assert.equal(third.state, "fulfilled");
  assert.equal(runs.runs, 2);
});

Deno.test("CoalescedRuns.request() always settles after a run that started after it, one run at a time", async () => {
  // Random arrivals against a task of random length, with a logical clock.
  let seed = 0x2545f491;
  const random = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  let clock = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let lastEndedRunStart = -1;
  const runs = new CoalescedRuns(async () => {
    const start = ++clock;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await sleep(Math.floor(random() * 4));
    inFlight--;
    lastEndedRunStart = start;
  });
  const callers = Array.from({ length: 60 }, async () => {
    await sleep(Math.floor(random() * 40));
    // Twice in a row: the second request comes straight from the first one's continuation.
    for (let round = 0; round < 2; round++) {
      const asked = ++clock;
      await runs.request();
      // Runs never overlap, so the run that just ended is the one that served this caller.
      assert.ok(
        lastEndedRunStart > asked,
        `asked at ${asked}, served by a run from ${lastEndedRunStart}`,
      );
    }
  });
  await Promise.all(callers);
  assert.equal(maxInFlight, 1);
  assert.ok(runs.runs < 120, `${runs.runs} runs for 120 requests`);
});
