/**
 * What is verified at upload (README, "What is verified at upload"): a
 * `.conda` whose payload bytes were changed is refused by the CRC-32 of its
 * zip members, a small `.tar.bz2` by its bzip2 block CRCs; the payload of a
 * large `.tar.bz2` is not decoded, and a client that needs the guarantee
 * sends a sha256.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { type PackageSpec, writeLargePackage } from "./helpers/conda_package.ts";
import {
  snapshotDirectory,
  startTestServer,
  type TestServer,
  uploadForm,
} from "./helpers/test_server.ts";

/** A package of `payload` random bytes with two bytes flipped at 60 % of the file. */
async function corruptPackage(
  spec: PackageSpec,
  payload = 1536 * 1024,
): Promise<{ filename: string; bytes: Uint8Array }> {
  const dir = await Deno.makeTempDir({ prefix: "auh-integrity-" });
  try {
    const filename = `${spec.name}-${spec.version}-0${spec.format}`;
    const path = join(dir, filename);
    await writeLargePackage(path, spec, payload);
    const bytes = await Deno.readFile(path);
    const at = Math.floor(bytes.length * 0.6);
    bytes[at]! ^= 0x55;
    bytes[at + 1]! ^= 0xaa;
    return { filename, bytes };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function post(server: TestServer, filename: string, bytes: Uint8Array, extra = {}) {
  const response = await server.fetch("/", {
    method: "POST",
    body: uploadForm(server.token, filename, bytes, extra),
  });
  return { status: response.status, text: await response.text() };
}

Deno.test("POST / refuses a .conda whose payload is corrupt with 422 and keeps nothing", async () => {
  await using server = await startTestServer();
  const before = await snapshotDirectory(server.channelRoot);
  const { filename, bytes } = await corruptPackage({
    name: "rotten",
    version: "1.0",
    format: ".conda",
  });
  const { status, text } = await post(server, filename, bytes);
  assert.equal(status, 422, text);
  assert.match(text, /^Cannot read package: zip member pkg-rotten-1\.0-0\.tar\.zst is corrupt/);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
});

Deno.test("POST / refuses a small .tar.bz2 whose payload is corrupt by its block CRCs", async () => {
  await using server = await startTestServer();
  const before = await snapshotDirectory(server.channelRoot);
  const { filename, bytes } = await corruptPackage({
    name: "rotten",
    version: "1.0",
    format: ".tar.bz2",
  });
  const { status, text } = await post(server, filename, bytes);
  assert.equal(status, 422, text);
  assert.match(text, /^Cannot read package: corrupt bzip2 data \(.*Bad block CRC/);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
});

Deno.test("POST / catches a corrupt payload of a .tar.bz2 over 2 MiB only by the sha256 the client sends", async () => {
  await using server = await startTestServer();
  const { filename, bytes } = await corruptPackage(
    { name: "rotten", version: "1.0", format: ".tar.bz2" },
    6 * 1024 * 1024,
  );
  assert.ok(bytes.length > 2 * 1024 * 1024);
  // The sha256 of the bytes as built (before the flip): what a client computed before sending.
  const original = bytes.slice();
  const at = Math.floor(bytes.length * 0.6);
  original[at]! ^= 0x55;
  original[at + 1]! ^= 0xaa;
  const sha256 = createHash("sha256").update(original).digest("hex");
  const before = await snapshotDirectory(server.channelRoot);
  const refused = await post(server, filename, bytes, { sha256 });
  assert.equal(refused.status, 400, refused.text);
  assert.match(refused.text, /sha256 mismatch/);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before);
  // Without a sha256 the payload after info/ is not decoded (documented): accepted.
  const accepted = await post(server, filename, bytes);
  assert.equal(accepted.status, 201, accepted.text);
});
