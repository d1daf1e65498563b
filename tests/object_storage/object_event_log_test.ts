import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type LogEvent, ObjectEventLog } from "../../src/storage/object_event_log.ts";
import { newTestStore, noS3Engine } from "../helpers/s3_test_store.ts";

const WORKER = fileURLToPath(new URL("../helpers/s3_coordination_worker.ts", import.meta.url));

interface Entry {
  writer: string;
  i: number;
}

async function allEvents(log: ObjectEventLog<Entry, unknown>): Promise<LogEvent<Entry>[]> {
  const { events, hole } = await log.eventsAfter(0);
  assert.equal(hole, false);
  return events;
}

/** Every (writer, i) exactly once, numbers 1..N without a gap, each writer's events in order. */
function assertCompleteLog(events: LogEvent<Entry>[], writers: string[], perWriter: number) {
  assert.deepEqual(events.map((event) => event.seq), events.map((_, index) => index + 1));
  assert.equal(events.length, writers.length * perWriter);
  for (const writer of writers) {
    const mine = events.filter((event) => event.payload.writer === writer);
    assert.deepEqual(mine.map((event) => event.payload.i), [...Array(perWriter).keys()]);
  }
  assert.equal(new Set(events.map((event) => event.id)).size, events.length);
}

Deno.test({
  name: "ObjectEventLog: 6 concurrent writers in one process lose no event and share no number",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("log-instances");
    const writers = ["a", "b", "c", "d", "e", "f"];
    const appended = await Promise.all(writers.map(async (writer) => {
      const log = new ObjectEventLog<Entry, unknown>(store, "log");
      const seqs: number[] = [];
      for (let i = 0; i < 15; i++) seqs.push((await log.append({ writer, i })).seq);
      return seqs;
    }));
    const allSeqs = appended.flat().sort((a, b) => a - b);
    assert.deepEqual(allSeqs, [...Array(90).keys()].map((i) => i + 1));
    const log = new ObjectEventLog<Entry, unknown>(store, "log");
    assertCompleteLog(await allEvents(log), writers, 15);
    assert.equal(await log.head(), 90);
  },
});

Deno.test({
  name: "ObjectEventLog: 4 writer processes appending at once lose no event and share no number",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("log-processes");
    const prefix = store.location.prefix;
    const writers = ["p1", "p2", "p3", "p4"];
    const outputs = await Promise.all(writers.map((writer) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", WORKER, "append", prefix, writer, "20"],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(120_000),
      }).output()
    ));
    for (const output of outputs) {
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      const lines = new TextDecoder().decode(output.stdout).trim().split("\n");
      assert.equal(lines.at(-1), "done");
      assert.equal(lines.length, 21);
    }
    const events = await allEvents(new ObjectEventLog(store, "log"));
    assertCompleteLog(events, writers, 20);
  },
});

Deno.test({
  name:
    "ObjectEventLog load() applies the events after the newest snapshot; prune() keeps what load needs",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("log-snapshot");
    const log = new ObjectEventLog<Entry, string[]>(store, "log", { pruneGraceMs: 0 });
    const apply = (state: string[], event: LogEvent<Entry>) => [
      ...state,
      `${event.payload.writer}${event.payload.i}`,
    ];
    for (let i = 0; i < 5; i++) await log.append({ writer: "x", i });
    const first = await log.load([], apply);
    assert.deepEqual(first, { seq: 5, state: ["x0", "x1", "x2", "x3", "x4"] });
    await log.writeSnapshot(first);
    await log.writeSnapshot({ seq: 5, state: ["ignored: the first snapshot of 5 stays"] });
    for (let i = 5; i < 8; i++) await log.append({ writer: "x", i });

    // A reader that knew only the state at 3 sees the later events.
    assert.deepEqual((await log.eventsAfter(3)).events.map((event) => event.seq), [4, 5, 6, 7, 8]);

    const deleted = await log.prune();
    assert.equal(deleted, 5); // events 1-5: covered by the snapshot
    const pruned = await log.eventsAfter(3);
    assert.equal(pruned.hole, true); // a reader from 3 must reload
    const loaded = await new ObjectEventLog<Entry, string[]>(store, "log").load([], apply);
    assert.deepEqual(loaded, {
      seq: 8,
      state: ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7"],
    });
    // A fresh writer continues after the head, never below the snapshot.
    assert.equal(
      (await new ObjectEventLog<Entry, unknown>(store, "log").append({ writer: "y", i: 0 })).seq,
      9,
    );

    // With everything up to the head covered, the newest event stays.
    await log.writeSnapshot(await log.load([], apply));
    await log.prune();
    assert.deepEqual((await log.eventsAfter(0)).events.map((event) => event.seq), [9]);
    assert.equal(
      (await new ObjectEventLog<Entry, unknown>(store, "log").append({ writer: "y", i: 1 })).seq,
      10,
    );
  },
});

Deno.test({
  name:
    "ObjectEventLog: a writer killed with SIGKILL mid-run loses no acknowledged event and leaves no hole",
  ignore: noS3Engine,
  async fn() {
    const store = await newTestStore("log-kill");
    const prefix = store.location.prefix;
    const spawn = (writer: string) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", WORKER, "append", prefix, writer, "100000"],
        stdout: "piped",
        stderr: "null",
      }).spawn();
    const victim = spawn("victim");
    const survivor = spawn("survivor");
    const stop = async (child: Deno.ChildProcess) => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already ended
      }
      await child.status;
    };
    const log = new ObjectEventLog<Entry, unknown>(store, "log");
    const acknowledged: number[] = [];
    const reader = victim.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let headAtKill = 0;
    try {
      // Read the victim's acknowledgements until it has made 15, then kill it
      // (appends are fair: the survivor must not starve it meanwhile).
      const watchdog = setTimeout(() => victim.kill("SIGKILL"), 60_000);
      let buffer = "";
      while (acknowledged.length < 15) {
        const { value, done } = await reader.read();
        assert(!done, `the victim made ${acknowledged.length} appends in 60 s`);
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop() ?? "";
        for (const line of lines) acknowledged.push(Number(line.replace("seq ", "")));
      }
      clearTimeout(watchdog);
      await stop(victim);
      // Let the survivor go on past the kill, then stop it too.
      headAtKill = await log.head();
      const deadline = Date.now() + 60_000;
      while (await log.head() < headAtKill + 10 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      await stop(victim);
      await reader.cancel();
      await stop(survivor);
      await survivor.stdout.cancel();
    }

    const { events, hole } = await log.eventsAfter(0);
    assert.equal(hole, false);
    assert.deepEqual(events.map((event) => event.seq), events.map((_, index) => index + 1));
    assert(events.length >= headAtKill + 10, `the survivor stopped at ${events.length}`);
    const victims = events.filter((event) => event.payload.writer === "victim");
    // Every acknowledged event is there at the number it was acknowledged with,
    // and the victim's events are its first appends in order (one unacknowledged may follow).
    for (const [i, seq] of acknowledged.entries()) {
      assert.deepEqual(victims[i] && { seq: victims[i].seq, i: victims[i].payload.i }, { seq, i });
    }
    assert(victims.length <= acknowledged.length + 1);
    // A new writer continues after the head.
    const next = await new ObjectEventLog<Entry, unknown>(store, "log").append({
      writer: "new",
      i: 0,
    });
    assert.equal(next.seq, events.length + 1);
  },
});
