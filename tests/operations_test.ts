/**
 * Operating the server: configuration from `AUH_*` variables, JSON log
 * lines with no secret in them, the audit log, `GET /health` and
 * `GET /metrics`. In process where possible; the real program (under the
 * shipped permissions) where the environment and the process list matter.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { hashToken } from "../src/auth/token_hash.ts";
import {
  helpText,
  parseCommandLine,
  SERVER_FLAGS,
  type ServerFlags,
} from "../src/cli/command_line.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { serverArgs, startServerProcess, writeTestTls } from "./helpers/server_process.ts";
import { startTestServer, type TestServer, uploadForm } from "./helpers/test_server.ts";
import { tempDir } from "./helpers/temp_dir.ts";
import { rattlerPrefixForm, sha256Hex } from "./helpers/upload_clients.ts";

/** The value of one Prometheus series (`name` or `name{labels}`), or undefined when absent. */
function metricValue(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

async function metricsText(server: TestServer): Promise<string> {
  const response = await server.fetch("/metrics");
  assert.equal(response.status, 200);
  return await response.text();
}

function put(
  server: TestServer,
  spec: PackageSpec,
  bytes: Uint8Array,
  options: { token?: string; query?: string } = {},
): Promise<Response> {
  return server.fetch(
    `/${spec.subdir ?? "linux-64"}/${packageFilename(spec)}${options.query ?? ""}`,
    {
      method: "PUT",
      headers: { authorization: `Bearer ${options.token ?? server.token}` },
      body: bytes as Uint8Array<ArrayBuffer>,
    },
  );
}

async function expectStatus(response: Response, status: number): Promise<string> {
  const body = await response.text();
  assert.equal(response.status, status, body);
  return body;
}

/** The `ServerFlags` key of a canonical flag name: `audit_log` → `auditLog`. */
function flagKey(name: string): keyof ServerFlags {
  if (name === "token_hash") return "tokenHashes";
  if (name === "channel") return "channels";
  return name.replace(/_(\w)/g, (_, letter: string) => letter.toUpperCase()) as keyof ServerFlags;
}

Deno.test("every server flag can come from its AUH_ variable, the flag wins, and --help names the variable", () => {
  const names = Object.keys(SERVER_FLAGS).filter((name) => name !== "help" && name !== "version");
  assert.ok(names.includes("audit_log") && names.includes("shutdown_timeout"));
  const help = helpText("0.0.0").split("\n");
  for (const name of names) {
    const spec = SERVER_FLAGS[name]!;
    const variable = `AUH_${name.toUpperCase()}`;
    const key = flagKey(name);
    // --help: the flag's own description ends with its variable
    const at = help.findIndex((line) => new RegExp(`^  (-\\w, |    )--${name}\\b`).test(line));
    assert.ok(at >= 0, `--${name} is not in --help`);
    assert.ok(help[at + 1]!.endsWith(`[${variable}]`), `${help[at + 1]} does not name ${variable}`);
    if (spec.type === "boolean") {
      const fromEnv = parseCommandLine([], { [variable]: "true" });
      assert.equal(fromEnv.kind === "serve" && fromEnv.flags[key], true, variable);
      const off = parseCommandLine([], { [variable]: "no" });
      assert.equal(off.kind === "serve" && off.flags[key], false, variable);
      continue;
    }
    const fromEnv = parseCommandLine([], { [variable]: "from-env" });
    const fromFlag = parseCommandLine([`--${name}`, "from-flag"], { [variable]: "from-env" });
    assert.ok(fromEnv.kind === "serve" && fromFlag.kind === "serve");
    const expected = (value: string) => spec.multiple ? [value] : value;
    assert.deepEqual(fromEnv.flags[key], expected("from-env"), variable);
    assert.deepEqual(fromFlag.flags[key], expected("from-flag"), `--${name} over ${variable}`);
  }
});

Deno.test("the program starts from AUH_ variables only, logs JSON lines, and no token reaches a log line, an answer or the process list", async () => {
  await using dir = await tempDir("auh-ops-");
  const channel = join(dir.path, "channel");
  const logDir = join(dir.path, "log");
  await Deno.mkdir(channel);
  await Deno.mkdir(logDir);
  const tls = await writeTestTls(dir.path);
  const token = `ops-${crypto.randomUUID()}`;
  const wrongToken = `wrong-${crypto.randomUUID()}`;
  const hash = await hashToken(token);
  const auditLog = join(logDir, "audit.jsonl");
  await using server = await startServerProcess([], {
    env: {
      AUH_WRITE_DIR: channel,
      AUH_PORT: "0",
      AUH_HOST: "127.0.0.1",
      AUH_TOKEN_HASH: hash,
      AUH_CERTFILE: tls.certFile,
      AUH_KEYFILE: tls.keyFile,
      AUH_LOG_FORMAT: "json",
      AUH_AUDIT_LOG: auditLog,
    },
  });
  const cmdline = await Deno.readTextFile(`/proc/${server.pid}/cmdline`);
  assert.match(cmdline, /main\.ts/);
  assert.ok(!cmdline.includes(token) && !cmdline.includes(hash), cmdline);
  assert.ok(!/--token_hash|-t\0/.test(cmdline), cmdline);

  const linux: PackageSpec = { name: "ops-linux", version: "1.0" };
  const noarch: PackageSpec = { name: "ops-noarch", version: "2.0", subdir: "noarch" };
  const linuxBytes = await buildPackage(linux);
  const noarchBytes = await buildPackage(noarch);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(tls.caFile)] });
  try {
    const call = (path: string, init: RequestInit = {}) =>
      fetch(new URL(path, server.url), { ...init, client });
    const bodies: string[] = [];
    const answer = async (response: Response, status: number) => {
      bodies.push(await expectStatus(response, status));
    };
    // 1: header token
    await answer(
      await call(`/linux-64/${packageFilename(linux)}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${token}` },
        body: linuxBytes as Uint8Array<ArrayBuffer>,
      }),
      201,
    );
    // 2: path token
    await answer(
      await call(`/t/${token}/noarch/${packageFilename(noarch)}`, {
        method: "PUT",
        body: noarchBytes as Uint8Array<ArrayBuffer>,
      }),
      201,
    );
    // 3-5: a wrong token in a header, a form field and the path
    await answer(
      await call(`/linux-64/${packageFilename(linux)}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${wrongToken}` },
        body: linuxBytes as Uint8Array<ArrayBuffer>,
      }),
      401,
    );
    await answer(
      await call("/", {
        method: "POST",
        body: uploadForm(wrongToken, packageFilename(linux), linuxBytes),
      }),
      401,
    );
    await answer(
      await call(`/t/${wrongToken}/linux-64/${packageFilename(linux)}`, { method: "DELETE" }),
      401,
    );
    // 6-8: reads
    await answer(await call("/health"), 200);
    await answer(await call("/linux-64/repodata.json"), 200);
    await answer(await call(`/t/${token}/noarch/repodata.json`), 200);
    for (const body of bodies) {
      assert.ok(!body.includes(token) && !body.includes(wrongToken), body);
    }
  } finally {
    client.close();
  }
  server.kill("SIGTERM");
  assert.equal((await server.status).code, 0);

  const records = server.stderr.map((line) => {
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      assert.fail(`not a JSON log line: ${line}`);
    }
  });
  for (const record of records) {
    assert.ok(!Number.isNaN(Date.parse(String(record.time))), JSON.stringify(record));
    assert.ok(["debug", "info", "warn", "error"].includes(String(record.level)));
    assert.equal(typeof record.msg, "string");
  }
  for (const line of server.stderr) {
    assert.ok(!line.includes(token), `token in log line: ${line}`);
    assert.ok(!line.includes(wrongToken), `wrong token in log line: ${line}`);
  }
  const requests = records.filter((record) => record.msg === "request");
  assert.deepEqual(
    requests.map((record) => `${record.method} ${record.path} ${record.status}`),
    [
      "PUT /linux-64/ops-linux-1.0-0.conda 201",
      "PUT /t/<redacted>/noarch/ops-noarch-2.0-0.conda 201",
      "PUT /linux-64/ops-linux-1.0-0.conda 401",
      "POST / 401",
      "DELETE /t/<redacted>/linux-64/ops-linux-1.0-0.conda 401",
      "GET /health 200",
      "GET /linux-64/repodata.json 200",
      "GET /t/<redacted>/noarch/repodata.json 200",
    ],
  );
  for (const record of requests) {
    assert.equal(typeof record.ms, "number");
    assert.equal(record.client, "127.0.0.1");
  }
  const published = records.filter((record) => record.msg === "published");
  assert.equal(published.length, 2);
  const principal = published[0]!.by;
  assert.match(String(principal), /^token:[0-9a-f]{8}$/);
  const fields = ({ package: name, subdir, size, sha256, by }: Record<string, unknown>) => ({
    package: name,
    subdir,
    size,
    sha256,
    by,
  });
  assert.deepEqual(published.map(fields), [
    {
      package: packageFilename(linux),
      subdir: "linux-64",
      size: linuxBytes.length,
      sha256: sha256Hex(linuxBytes),
      by: principal,
    },
    {
      package: packageFilename(noarch),
      subdir: "noarch",
      size: noarchBytes.length,
      sha256: sha256Hex(noarchBytes),
      by: principal,
    },
  ]);
  // the audit log outside the channel was writable under the shipped permissions
  const audit = (await Deno.readTextFile(auditLog)).trimEnd().split("\n").map((line) =>
    JSON.parse(line)
  );
  assert.deepEqual(audit.map((event) => `${event.action} ${event.subdir}/${event.filename}`), [
    "publish linux-64/ops-linux-1.0-0.conda",
    "publish noarch/ops-noarch-2.0-0.conda",
  ]);
});

Deno.test("flags win over AUH_ variables, even invalid ones", async () => {
  await using dir = await tempDir("auh-ops-");
  const channel = join(dir.path, "channel");
  await Deno.mkdir(channel);
  const tls = await writeTestTls(dir.path);
  const token = "flag-token";
  await using server = await startServerProcess([
    ...await serverArgs(channel, tls, token),
    "--log_format",
    "text",
  ], {
    env: {
      AUH_WRITE_DIR: join(dir.path, "missing"),
      AUH_PORT: "not-a-port",
      AUH_CERTFILE: join(dir.path, "missing.pem"),
      AUH_KEYFILE: join(dir.path, "missing.key"),
      AUH_TOKEN_HASH: "not-a-hash",
      AUH_LOG_FORMAT: "json",
    },
  });
  assert.match(server.url, /^https:\/\/localhost:\d+$/);
  const listening = server.stderr.find((line) => /\blistening\b/.test(line))!;
  assert.match(listening, /^\S+ INFO listening /);
  assert.ok(listening.includes(`channel=${channel}`), listening);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(tls.caFile)] });
  try {
    const spec: PackageSpec = { name: "flag-wins", version: "1.0" };
    const response = await fetch(new URL(`/linux-64/${packageFilename(spec)}`, server.url), {
      method: "PUT",
      headers: { authorization: `Bearer ${token}` },
      body: await buildPackage(spec) as Uint8Array<ArrayBuffer>,
      client,
    });
    await expectStatus(response, 201);
  } finally {
    client.close();
  }
  await Deno.stat(join(channel, "linux-64", "flag-wins-1.0-0.conda"));
});

interface AuditRecord {
  time: string;
  action: string;
  subdir: string;
  filename: string;
  by: string;
  size?: number;
  sha256?: string;
}

Deno.test("the audit log has one JSON line per publish, replace (prefix and Artifactory force) and delete, in order, appended across a restart", async () => {
  await using dir = await tempDir("auh-ops-");
  const channelRoot = join(dir.path, "channel");
  const auditLog = join(dir.path, "audit.jsonl");
  const flags = { auditLog, allowOverwrite: true };
  const spec: PackageSpec = { name: "audited", version: "1.0" };
  const filename = packageFilename(spec);
  const first = await buildPackage(spec);
  const second = await buildPackage({ ...spec, files: { "share/audited/v": "second" } });
  const third = await buildPackage({ ...spec, files: { "share/audited/v": "third" } });
  const later: PackageSpec = { name: "after-restart", version: "1.0", subdir: "noarch" };
  const laterBytes = await buildPackage(later);
  let firstBy: string;
  {
    await using server = await startTestServer({ channelRoot, flags });
    await expectStatus(await put(server, spec, first), 201);
    const form = rattlerPrefixForm(filename, second);
    await expectStatus(
      await server.fetch("/api/v1/upload/channel?force=true", {
        method: "POST",
        headers: { authorization: `Bearer ${server.token}`, "content-type": form.contentType },
        body: form.body as Uint8Array<ArrayBuffer>,
      }),
      201,
    );
    await expectStatus(await put(server, spec, third, { query: "?force=true" }), 201);
    // refusals are not audited
    await expectStatus(await put(server, spec, first), 409);
    await expectStatus(
      await put(server, spec, first, { token: "wrong", query: "?force=true" }),
      401,
    );
    await expectStatus(
      await server.fetch(`/linux-64/${filename}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${server.token}` },
      }),
      200,
    );
    await expectStatus(
      await server.fetch(`/linux-64/${filename}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${server.token}` },
      }),
      404,
    );
    const lines = (await Deno.readTextFile(auditLog)).split("\n");
    assert.equal(lines.length, 5, "four lines, each ending in a newline");
    firstBy = (JSON.parse(lines[0]!) as AuditRecord).by;
  }
  {
    await using server = await startTestServer({ channelRoot, flags });
    await expectStatus(await put(server, later, laterBytes), 201);
  }
  const text = await Deno.readTextFile(auditLog);
  assert.ok(text.endsWith("\n"));
  const records = text.trimEnd().split("\n").map((line) => JSON.parse(line) as AuditRecord);
  const publish = (bytes: Uint8Array) => ({ size: bytes.length, sha256: sha256Hex(bytes) });
  assert.deepEqual(
    records.map(({ time: _time, by: _by, ...rest }) => rest),
    [
      { action: "publish", subdir: "linux-64", filename, ...publish(first) },
      { action: "replace", subdir: "linux-64", filename, ...publish(second) },
      { action: "replace", subdir: "linux-64", filename, ...publish(third) },
      { action: "delete", subdir: "linux-64", filename },
      {
        action: "publish",
        subdir: "noarch",
        filename: packageFilename(later),
        ...publish(laterBytes),
      },
    ],
  );
  assert.match(firstBy, /^token:[0-9a-f]{8}$/);
  assert.deepEqual(records.slice(0, 4).map((record) => record.by), Array(4).fill(firstBy));
  // the second server has another token: another id
  assert.match(records[4]!.by, /^token:[0-9a-f]{8}$/);
  assert.notEqual(records[4]!.by, firstBy);
  const times = records.map((record) => Date.parse(record.time));
  assert.deepEqual(times, [...times].sort((a, b) => a - b));
});

Deno.test("GET /health answers ready without a token, 503 not ready while the spool area cannot be written", async () => {
  await using server = await startTestServer();
  const health = async () => {
    const response = await server.fetch("/health");
    return { status: response.status, body: await response.json() as Record<string, unknown> };
  };
  const ready = await health();
  assert.equal(ready.status, 200);
  assert.equal(ready.body.status, "ready");

  // running as root, chmod would not stop writes: put a file where the spool directory was
  const spool = join(server.channelRoot, ".upload-spool");
  await Deno.remove(spool, { recursive: true });
  await Deno.writeTextFile(spool, "not a directory");
  try {
    const broken = await health();
    assert.equal(broken.status, 503);
    assert.equal(broken.body.status, "not ready");
    assert.equal(typeof broken.body.reason, "string");
    assert.ok(!String(broken.body.reason).includes(server.channelRoot), "no path in the answer");
  } finally {
    await Deno.remove(spool);
    await Deno.mkdir(spool);
  }
  const again = await health();
  assert.equal(again.status, 200);
  assert.equal(again.body.status, "ready");
});

Deno.test("GET /metrics is Prometheus text whose counters move with uploads, refusals and a slow upload in flight", async () => {
  await using server = await startTestServer();
  const response = await server.fetch("/metrics");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const before = await response.text();
  assert.match(before, /^# TYPE auh_uploads_total counter$/m);
  assert.match(before, /^# TYPE auh_upload_duration_seconds histogram$/m);
  assert.equal(metricValue(before, 'auh_uploads_total{outcome="stored"}'), undefined);
  assert.equal(metricValue(before, "auh_received_bytes_total"), 0);
  assert.equal(metricValue(before, "auh_uploads_in_flight"), 0);
  assert.equal(metricValue(before, "auh_auth_failures_total"), 0);
  assert.equal(metricValue(before, "auh_upload_duration_seconds_count"), 0);
  assert.equal(metricValue(before, "auh_index_duration_seconds_count"), 0);

  const spec: PackageSpec = { name: "metered", version: "1.0" };
  const bytes = await buildPackage(spec);
  await expectStatus(await put(server, spec, bytes), 201);
  let text = await metricsText(server);
  assert.equal(metricValue(text, 'auh_uploads_total{outcome="stored"}'), 1);
  assert.ok(metricValue(text, "auh_received_bytes_total")! >= bytes.length);
  assert.equal(metricValue(text, "auh_upload_duration_seconds_count"), 1);
  assert.equal(metricValue(text, 'auh_upload_duration_seconds_bucket{le="+Inf"}'), 1);
  assert.equal(metricValue(text, "auh_index_duration_seconds_count"), 1);
  assert.ok(metricValue(text, "auh_index_duration_seconds_sum")! > 0);

  await expectStatus(await put(server, spec, bytes), 409);
  await expectStatus(await put(server, spec, bytes, { token: "wrong-token" }), 401);
  text = await metricsText(server);
  assert.equal(metricValue(text, 'auh_uploads_total{outcome="stored"}'), 1);
  assert.equal(metricValue(text, 'auh_uploads_total{outcome="409"}'), 1);
  assert.equal(metricValue(text, 'auh_uploads_total{outcome="401"}'), 1);
  assert.equal(metricValue(text, "auh_auth_failures_total"), 1);
  assert.equal(metricValue(text, "auh_upload_duration_seconds_count"), 3);
  assert.equal(metricValue(text, "auh_index_duration_seconds_count"), 1, "no index for a refusal");
  assert.ok(metricValue(text, "auh_received_bytes_total")! >= 2 * bytes.length);

  // a slow upload: the body waits for a go before its last chunk
  const slow: PackageSpec = { name: "metered-slow", version: "1.0" };
  const slowBytes = await buildPackage(slow);
  let go!: () => void;
  const released = new Promise<void>((resolve) => go = resolve);
  const half = Math.floor(slowBytes.length / 2);
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent === 0) {
        controller.enqueue(slowBytes.slice(0, half));
        sent = half;
        return;
      }
      await released;
      controller.enqueue(slowBytes.slice(half));
      controller.close();
    },
  }, { highWaterMark: 0 });
  const uploading = server.fetch(`/linux-64/${packageFilename(slow)}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${server.token}` },
    body,
  });
  try {
    let inFlight = 0;
    for (let attempt = 0; attempt < 100 && inFlight === 0; attempt++) {
      inFlight = metricValue(await metricsText(server), "auh_uploads_in_flight")!;
      if (inFlight === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(inFlight, 1);
  } finally {
    go();
  }
  await expectStatus(await uploading, 201);
  text = await metricsText(server);
  assert.equal(metricValue(text, "auh_uploads_in_flight"), 0);
  assert.equal(metricValue(text, 'auh_uploads_total{outcome="stored"}'), 2);
  assert.equal(metricValue(text, "auh_index_duration_seconds_count"), 2);
});
