/**
 * Replacing the TLS certificate without a restart: on SIGHUP (the real
 * program) and when the certificate or key file changes (in process, with a
 * short poll interval). New connections get the new certificate; an upload
 * running across the reload completes; a bad pair keeps the old one.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startApplication } from "../src/app.ts";
import { hashToken } from "../src/auth/token_hash.ts";
import { resolveServerConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import {
  createSelfSignedCertificate,
  type PemKeyPair,
} from "../src/tls/self_signed_certificate.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { serverArgs, startServerProcess } from "./helpers/server_process.ts";
import { spoolEntries } from "./helpers/upload_clients.ts";

const TOKEN = "tls-reload-token";

/** The status of `GET /health` through a new client trusting only `ca`, or the error's message. */
async function healthWith(url: string, ca: string): Promise<number | string> {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const response = await fetch(new URL("/health", url), { client });
    await response.body?.cancel();
    return response.status;
  } catch (error) {
    return describe(error);
  } finally {
    client.close();
  }
}

/** An error's message with its causes (fetch's own message is just "fetch failed"). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  return error.cause === undefined ? error.message : `${error.message}: ${describe(error.cause)}`;
}

/** Polls `check` every 50 ms until it returns true; throws after `timeoutMs`. */
async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`Cannot see ${what} within ${timeoutMs} ms`);
}

async function writePair(dir: string, pem: PemKeyPair): Promise<void> {
  await Deno.writeTextFile(join(dir, "key.pem"), pem.key, { mode: 0o600 });
  await Deno.writeTextFile(join(dir, "cert.pem"), pem.cert);
}

/** `<dir>/channel` made, two fresh pairs A and B, and A written as the served pair. */
async function channelWithTwoPairs(
  dir: string,
): Promise<{ channel: string; a: PemKeyPair; b: PemKeyPair }> {
  const channel = join(dir, "channel");
  await Deno.mkdir(channel);
  const [a, b] = await Promise.all([createSelfSignedCertificate(), createSelfSignedCertificate()]);
  await writePair(dir, a);
  return { channel, a, b };
}

Deno.test("SIGHUP re-reads the certificate files: new connections get certificate B, only B's CA is trusted, and an upload running across the reload and a SIGTERM completes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-tls-" });
  try {
    const { channel, a, b } = await channelWithTwoPairs(dir);
    await using server = await startServerProcess([
      ...await serverArgs(channel, {
        certFile: join(dir, "cert.pem"),
        keyFile: join(dir, "key.pem"),
      }, TOKEN),
    ]);
    assert.equal(await healthWith(server.url, a.ca), 200);
    assert.match(String(await healthWith(server.url, b.ca)), /certificate|UnknownIssuer/i);

    // an upload over a connection made with certificate A, sending for ~2 s
    const spec: PackageSpec = { name: "across-reload", version: "1.0" };
    const bytes = await buildPackage(spec);
    const clientA = Deno.createHttpClient({ caCerts: [a.ca] });
    try {
      const size = Math.ceil(bytes.length / 10);
      let at = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (at > 0) await new Promise((resolve) => setTimeout(resolve, 200));
          if (at >= bytes.length) return controller.close();
          controller.enqueue(bytes.slice(at, at + size));
          at += size;
        },
      }, { highWaterMark: 0 });
      const upload = fetch(new URL(`/linux-64/${packageFilename(spec)}`, server.url), {
        method: "PUT",
        headers: { authorization: `Bearer ${TOKEN}` },
        body,
        client: clientA,
      });
      await eventually(
        "the upload's spool file",
        async () => (await spoolEntries(channel)).length > 0,
      );

      await writePair(dir, b);
      server.kill("SIGHUP");
      await server.waitForLine(/INFO TLS certificate reloaded/);
      assert.equal(await healthWith(server.url, b.ca), 200);
      assert.match(String(await healthWith(server.url, a.ca)), /certificate|UnknownIssuer/i);

      // a shutdown now waits for the upload still running on the replaced listener too
      assert.ok(at < bytes.length, "the upload was still sending after the reload");
      server.kill("SIGTERM");
      const response = await upload;
      assert.equal(response.status, 201, await response.text());
      assert.equal((await server.status).code, 0);
    } finally {
      clientA.close();
    }
    const repodata = JSON.parse(await Deno.readTextFile(join(channel, "linux-64/repodata.json")));
    assert.ok(packageFilename(spec) in repodata["packages.conda"]);
    assert.ok(!server.stderr.some((line) => /\bERROR\b/.test(line)), server.stderr.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a changed certificate file is picked up within tlsPollMs without a signal; a certificate that does not match its key keeps the old pair serving", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-tls-poll-" });
  const logs: string[] = [];
  try {
    const { channel, a, b } = await channelWithTwoPairs(dir);
    const config = await resolveServerConfig({
      writeDir: channel,
      port: "0",
      host: "127.0.0.1",
      tokenHashes: [await hashToken(TOKEN)],
      certfile: join(dir, "cert.pem"),
      keyfile: join(dir, "key.pem"),
      allowOverwrite: false,
      noServe: false,
      insecureNoTls: false,
      dev: false,
    });
    const logger = createLogger({ write: (line) => logs.push(line) });
    await using server = await startApplication(config, { logger, tlsPollMs: 200 });
    assert.equal(await healthWith(server.url, a.ca), 200);

    // first only the certificate changes (as when a renewal writes the files one by one)
    await Deno.writeTextFile(join(dir, "cert.pem"), b.cert);
    await eventually(
      "the failed reload",
      () => Promise.resolve(logs.some((line) => /ERROR TLS certificate reload failed/.test(line))),
    );
    assert.ok(!logs.some((line) => /INFO TLS certificate reloaded/.test(line)), logs.join("\n"));
    assert.equal(await healthWith(server.url, a.ca), 200, "the old pair still serves");

    // then the key follows
    await Deno.writeTextFile(join(dir, "key.pem"), b.key, { mode: 0o600 });
    await eventually("certificate B", async () => await healthWith(server.url, b.ca) === 200);
    assert.match(String(await healthWith(server.url, a.ca)), /certificate|UnknownIssuer/i);
    assert.ok(logs.some((line) => /INFO TLS certificate reloaded/.test(line)), logs.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
