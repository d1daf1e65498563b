/**
 * Hostile input: a seeded corpus of at least 10,000 malformed, truncated,
 * lying, oversized and booby-trapped requests (tests/helpers/hostile_corpus.ts)
 * sent to the real program (a subprocess under the shipped permissions).
 * Every one must be answered with a 4xx: never a 5xx, never a connection
 * reset, never a crash; nothing may change in the channel (a before/after
 * snapshot of every file and its sha256), no spool file may remain, and the
 * server must still serve and accept a valid upload afterwards.
 *
 * The seed is random and printed; set `AUH_HOSTILE_SEED=<n>` to replay one.
 * It runs over TLS, 8 requests at a time on HTTP/1.1 keep-alive connections
 * as curl and requests use in CI (as fast as plain HTTP here, so no
 * `--insecure_no_tls`).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { STATUS } from "../src/http/status.ts";
import { SPOOL_DIR_NAME } from "../src/storage/channel_storage.ts";
import { checkChannelInvariants } from "./helpers/channel_invariants.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { buildHostileCorpus, type HostileRequest } from "./helpers/hostile_corpus.ts";
import { serverArgs, startServerProcess, writeTestTls } from "./helpers/server_process.ts";
import { snapshotDirectory } from "./helpers/test_server.ts";

/** Requests in flight at once. */
const WORKERS = 8;
/** Longest wait for one answer; a bomb costs the server about a second. */
const REQUEST_TIMEOUT_MS = 30_000;

const SEED = Number(Deno.env.get("AUH_HOSTILE_SEED") ?? Math.floor(Math.random() * 2 ** 31));

/** What went wrong with one request. */
interface Failure {
  kind: string;
  method: string;
  path: string;
  outcome: string;
}

function describe(request: HostileRequest): string {
  const body = request.body;
  const head = body ? new TextDecoder("latin1").decode(body.subarray(0, 160)) : "";
  return `${request.method} ${request.path.slice(0, 120)} ${
    JSON.stringify(request.headers).slice(0, 200)
  } ` +
    `body ${body?.length ?? 0} bytes: ${JSON.stringify(head)}`;
}

async function upload(
  url: string,
  token: string,
  spec: PackageSpec,
  client: Deno.HttpClient,
): Promise<Response> {
  const form = new FormData();
  form.append("token", token);
  const bytes = await buildPackage(spec);
  form.append("artifact", new Blob([bytes as Uint8Array<ArrayBuffer>]), packageFilename(spec));
  return await fetch(new URL("/", url), { method: "POST", body: form, client });
}

Deno.test("a corpus of 10,000 hostile requests is answered with 4xx only and changes nothing", async () => {
  console.log(`hostile corpus seed: ${SEED} (replay with AUH_HOSTILE_SEED=${SEED})`);
  const dir = await Deno.makeTempDir({ prefix: "auh-hostile-" });
  try {
    const channel = join(dir, "channel");
    await Deno.mkdir(channel);
    const token = `hostile-${crypto.randomUUID()}`;
    const tls = await writeTestTls(dir);
    await using server = await startServerProcess([
      ...await serverArgs(channel, tls, token, "::"),
    ]);
    // Requests without a valid token come from ::1, the others from 127.0.0.1,
    // and each invalid one names its own client address (its own /64) in X-Forwarded-For
    // (the server trusts it from loopback): the failed-token throttle (10
    // failures at once per address, then held back) is tested in
    // abuse_test.ts; here it must not hold the corpus away from the parsers.
    const port = new URL(server.url).port;
    const origins = { valid: `https://127.0.0.1:${port}`, invalid: `https://[::1]:${port}` };
    const caCert = await Deno.readTextFile(tls.caFile);
    using client = Deno.createHttpClient({ caCerts: [caCert], http2: false });
    let retriedOnNewConnection = 0;
    let exited = false;
    server.status.then(() => (exited = true));

    // Seed packages, so that "unchanged" covers published packages and their index.
    for (
      const spec of [
        { name: "seed", version: "1.0", format: ".conda" },
        { name: "seed", version: "1.0", format: ".tar.bz2", subdir: "noarch" },
      ] satisfies PackageSpec[]
    ) {
      const response = await upload(origins.valid, token, spec, client);
      assert.equal(response.status, STATUS.Created, await response.text());
    }
    const before = await snapshotDirectory(channel);

    const started = performance.now();
    const corpus = await buildHostileCorpus(SEED, { token, channelName: "channel" });
    const builtMs = performance.now() - started;
    assert.ok(corpus.length >= 10_000, `${corpus.length} requests`);

    const counts = new Map<string, Map<string, number>>();
    const count = (group: string, outcome: string) => {
      let byOutcome = counts.get(group);
      if (!byOutcome) counts.set(group, byOutcome = new Map());
      byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
    };
    const failures: Failure[] = [];
    const slowest = { ms: 0, kind: "" };
    let next = 0;
    const sendStarted = performance.now();
    const worker = async () => {
      while (next < corpus.length) {
        const index = next++;
        const request = corpus[index]!;
        const group = request.kind.split("/")[0]!;
        const sent = performance.now();
        let outcome: string;
        const send = (via: Deno.HttpClient) =>
          fetch(new URL(request.path, origins[request.credentials]), {
            method: request.method,
            headers: request.credentials === "invalid"
              ? { ...request.headers, "x-forwarded-for": `2001:db8:${index.toString(16)}::1` }
              : request.headers,
            ...(request.body === undefined ? {} : { body: request.body }),
            client: via,
            redirect: "manual",
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          });
        try {
          let response: Response;
          try {
            response = await send(client);
          } catch {
            // A pooled keep-alive connection the server closed after an earlier refusal
            // (it does not read a refused body) fails the next request on it: that is the
            // transport, not an answer. Send once more on a new connection and judge that.
            retriedOnNewConnection++;
            using fresh = Deno.createHttpClient({ caCerts: [caCert], http2: false });
            response = await send(fresh);
          }
          await response.arrayBuffer();
          outcome = String(response.status);
          const locked = request.credentials === "valid" &&
            (response.status === STATUS.Unauthorized || response.status === STATUS.TooManyRequests);
          if (response.status < 400 || response.status >= 500 || locked) {
            failures.push({ ...request, outcome: `${response.status}: ${describe(request)}` });
          }
        } catch (error) {
          outcome = "error";
          failures.push({
            ...request,
            outcome: `${error instanceof Error ? error.message : error}: ${describe(request)}`,
          });
        }
        const ms = performance.now() - sent;
        if (ms > slowest.ms) Object.assign(slowest, { ms, kind: request.kind });
        count(group, outcome);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    const sendMs = performance.now() - sendStarted;

    const total = new Map<string, number>();
    for (const byOutcome of counts.values()) {
      for (const [outcome, n] of byOutcome) total.set(outcome, (total.get(outcome) ?? 0) + n);
    }
    const line = (map: Map<string, number>) =>
      [...map].sort(([a], [b]) => a < b ? -1 : 1).map(([k, n]) => `${k}:${n}`).join(" ");
    console.log(
      `${corpus.length} hostile requests (built in ${Math.round(builtMs)} ms, sent in ` +
        `${Math.round(sendMs)} ms by ${WORKERS} workers; slowest ${Math.round(slowest.ms)} ms, ` +
        `${slowest.kind}; ${retriedOnNewConnection} resent on a new connection)\n` +
        `by status: ${line(total)}\n` +
        [...counts].sort(([a], [b]) => a < b ? -1 : 1).map(([group, byOutcome]) =>
          `  ${group}: ${line(byOutcome)}`
        ).join("\n"),
    );

    const failedKinds = new Map<string, number>();
    for (const { kind } of failures) failedKinds.set(kind, (failedKinds.get(kind) ?? 0) + 1);
    assert.deepEqual(
      failures.slice(0, 20).map((failure) => `${failure.kind}: ${failure.outcome}`),
      [],
      `${failures.length} requests were not answered with a 4xx (${line(failedKinds)})`,
    );
    assert.equal(exited, false, "the server exited");
    const errors = server.stderr.filter((line) => /\bERROR\b|internal error|Uncaught/.test(line));
    assert.deepEqual(errors.slice(0, 10), [], "the server logged errors");
    assert.deepEqual(await snapshotDirectory(channel), before, "the channel changed");
    const spool: string[] = [];
    for await (const entry of Deno.readDir(join(channel, SPOOL_DIR_NAME))) spool.push(entry.name);
    assert.deepEqual(spool, [], "spool files were left behind");

    // Still healthy: it serves, and it accepts a valid upload.
    const home = await fetch(new URL("/", origins.valid), { client });
    assert.equal(home.status, STATUS.OK);
    await home.body?.cancel();
    const after = await upload(origins.valid, token, { name: "after", version: "1.0" }, client);
    assert.equal(after.status, STATUS.Created, await after.text());
    assert.deepEqual(await checkChannelInvariants(channel), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
