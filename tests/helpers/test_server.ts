/**
 * Starts the real application in process on a real TLS port 0, with a fresh
 * temporary channel, a generated certificate and token, and a log capture.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { type RunningServer, startApplication } from "../../src/app.ts";
import { hashToken } from "../../src/auth/token_hash.ts";
import type { ServerFlags } from "../../src/cli/command_line.ts";
import { resolveServerConfig } from "../../src/config.ts";
import { AUXILIARY_INTERVAL_MS } from "../../src/index/index_write_cycle.ts";
import { createLogger } from "../../src/log.ts";
import {
  createSelfSignedCertificate,
  type PemKeyPair,
} from "../../src/tls/self_signed_certificate.ts";

/** A running test server and what a client needs to talk to it. */
export interface TestServer {
  /** Base URL, `https://localhost:PORT`. */
  url: string;
  /** The valid upload token. */
  token: string;
  /** The channel root (a temp directory). */
  channelRoot: string;
  /** Path of the CA certificate file (for curl --cacert). */
  caFile: string;
  /** A fetch client trusting the test CA. */
  client: Deno.HttpClient;
  /** fetch through {@linkcode TestServer.client}. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** Log lines written so far. */
  logs: string[];
  /** The running application. */
  server: RunningServer;
  /** Stops the server, closes the client, removes the temp dir. */
  [Symbol.asyncDispose](): Promise<void>;
}

let certificates: Promise<PemKeyPair> | undefined;

/** One certificate per test process is enough (key generation is not free). */
export function testCertificates(): Promise<PemKeyPair> {
  certificates ??= createSelfSignedCertificate();
  return certificates;
}

/** Options for {@linkcode startTestServer}. */
export interface TestServerOptions {
  /** Extra flags (as parsed) on top of the test defaults. */
  flags?: Partial<ServerFlags>;
  /** Files to place in the channel before start: relative path → bytes. */
  channelFiles?: Record<string, Uint8Array>;
  /** Use an existing channel root instead of a new temp dir (not removed at the end). */
  channelRoot?: string;
}

/** Starts the application on `https://localhost:0` with a temp channel. */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const tempDir = await Deno.makeTempDir({ prefix: "auh-test-" });
  const channelRoot = options.channelRoot ?? join(tempDir, "channel");
  await Deno.mkdir(channelRoot, { recursive: true });
  for (const [relative, bytes] of Object.entries(options.channelFiles ?? {})) {
    const path = join(channelRoot, relative);
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeFile(path, bytes);
  }
  const token = `test-token-${crypto.randomUUID()}`;
  const pem = await testCertificates();
  const caFile = join(tempDir, "ca.pem");
  await Deno.writeTextFile(caFile, pem.ca);
  const config = await resolveServerConfig({
    writeDir: channelRoot,
    port: "0",
    host: "127.0.0.1",
    tokenHashes: [await hashToken(token)],
    allowOverwrite: false,
    noServe: false,
    insecureNoTls: false,
    dev: false,
    certfile: "unused",
    keyfile: "unused",
    ...options.flags,
  });
  const logs: string[] = [];
  const logger = createLogger({ write: (line) => logs.push(line) });
  const server = await startApplication(config, { logger, tls: { cert: pem.cert, key: pem.key } });
  const client = Deno.createHttpClient({ caCerts: [pem.ca] });
  return {
    url: server.url,
    token,
    channelRoot,
    caFile,
    client,
    fetch: (path, init) => fetch(new URL(path, server.url), { ...init, client }),
    logs,
    server,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      client.close();
      await Deno.remove(tempDir, { recursive: true }).catch(() => {});
    },
  };
}

/** Builds the original tool's multipart form: token first, then the artifact. */
export function uploadForm(
  token: string | undefined,
  filename: string,
  bytes: Uint8Array,
  extra: Record<string, string> = {},
): FormData {
  const form = new FormData();
  if (token !== undefined) form.append("token", token);
  for (const [name, value] of Object.entries(extra)) form.append(name, value);
  form.append("artifact", new Blob([bytes as Uint8Array<ArrayBuffer>]), filename);
  return form;
}

/**
 * Every file under `root` with the sha256 of its content, sorted: a snapshot
 * of a channel, taken once `index.html` and `channeldata.json` have followed
 * the last index write (they lag behind it by about `AUXILIARY_INTERVAL_MS`):
 * two readings that far apart must agree.
 */
export async function snapshotDirectory(root: string): Promise<string[]> {
  const settle = () => new Promise((resolve) => setTimeout(resolve, AUXILIARY_INTERVAL_MS + 100));
  await settle();
  let previous = await _readSnapshot(root);
  for (let reading = 0; reading < 20; reading++) {
    await settle();
    const next = await _readSnapshot(root);
    if (next.join("\n") === previous.join("\n")) return next;
    previous = next;
  }
  return previous;
}

async function _readSnapshot(root: string): Promise<string[]> {
  const entries: string[] = [];
  const walk = async (directory: string, prefix: string) => {
    for await (const entry of Deno.readDir(directory)) {
      // A replaced index file's old version, kept under a temporary name until
      // the write that replaced it removes it (off the JS thread): not content.
      if (entry.name.endsWith(".old.tmp")) continue;
      const relative = prefix + entry.name;
      if (entry.isDirectory) {
        await walk(join(directory, entry.name), relative + "/");
      } else {
        // A file renamed away meanwhile (a write in progress) is not in this reading.
        const bytes = await Deno.readFile(join(directory, entry.name)).catch((error) => {
          if (error instanceof Deno.errors.NotFound) return undefined;
          throw error;
        });
        if (bytes === undefined) continue;
        entries.push(`${relative} ${createHash("sha256").update(bytes).digest("hex")}`);
      }
    }
  };
  await walk(root, "");
  return entries.sort();
}
