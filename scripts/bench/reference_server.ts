/**
 * The benchmark's yardstick: the least a Deno TLS upload server can do, run
 * as its own process exactly like the real server so that the two are
 * measured the same way.
 *
 * - `--mode hash`: streams the whole request body (the multipart bytes as
 *   sent) into a file while computing its sha256 and md5, syncs the file and
 *   answers 201. The machine's limit for receiving large artifacts.
 * - `--mode store`: reads the multipart form with the built-in
 *   `Request.formData()`, checks the `token` field, writes the `artifact`
 *   file under its name, syncs it and answers 201. No hashing, inspection or
 *   index: the floor for small uploads.
 *
 * Prints `listening url=https://localhost:PORT` to stderr once it listens,
 * as the real server does; SIGTERM stops it.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-write scripts/bench/reference_server.ts \
 *   --mode hash --dir /tmp/ref --cert cert.pem --key key.pem [--token T] [--port 0]
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { parseArgs } from "node:util";

const WRITE_BUFFER_BYTES = 1 << 20;

async function _writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

/** Streams the raw body into `path`, hashing it; returns size and digests. */
async function _hashBody(body: ReadableStream<Uint8Array>, path: string): Promise<unknown> {
  const sha256 = createHash("sha256");
  const md5 = createHash("md5");
  const buffer = new Uint8Array(WRITE_BUFFER_BYTES);
  let buffered = 0;
  let size = 0;
  using file = await Deno.open(path, { createNew: true, write: true });
  for await (const chunk of body) {
    size += chunk.length;
    sha256.update(chunk);
    md5.update(chunk);
    if (buffered + chunk.length > buffer.length) {
      await _writeAll(file, buffer.subarray(0, buffered));
      buffered = 0;
    }
    if (chunk.length >= buffer.length) await _writeAll(file, chunk);
    else {
      buffer.set(chunk, buffered);
      buffered += chunk.length;
    }
  }
  await _writeAll(file, buffer.subarray(0, buffered));
  await file.syncData();
  return { size, sha256: sha256.digest("hex"), md5: md5.digest("hex") };
}

/** Reads the form, writes the artifact as `dir/<its filename>`. */
async function _storeForm(request: Request, dir: string, token: string): Promise<Response> {
  const form = await request.formData();
  if (form.get("token") !== token) return new Response("bad token\n", { status: 401 });
  const artifact = form.get("artifact");
  if (!(artifact instanceof File) || !/^[\w.+-]+$/.test(artifact.name)) {
    return new Response("no artifact\n", { status: 400 });
  }
  const bytes = await artifact.bytes();
  try {
    using file = await Deno.open(join(dir, artifact.name), { createNew: true, write: true });
    await _writeAll(file, bytes);
    await file.syncData();
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      return new Response("exists\n", { status: 409 });
    }
    throw error;
  }
  return Response.json({ filename: artifact.name, size: bytes.length }, { status: 201 });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mode: { type: "string" },
      dir: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      token: { type: "string", default: "" },
      port: { type: "string", default: "0" },
    },
  });
  const mode = values.mode;
  if ((mode !== "hash" && mode !== "store") || !values.dir || !values.cert || !values.key) {
    console.error("usage: reference_server.ts --mode hash|store --dir DIR --cert PEM --key PEM");
    Deno.exit(2);
  }
  const dir = values.dir;
  const token = values.token;
  let counter = 0;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: Number(values.port),
    cert: await Deno.readTextFile(values.cert),
    key: await Deno.readTextFile(values.key),
    onListen: ({ port }) => console.error(`listening url=https://localhost:${port}`),
  }, async (request) => {
    if (request.method !== "POST" || request.body === null) {
      return new Response("not found\n", { status: 404 });
    }
    if (mode === "store") return await _storeForm(request, dir, token);
    const path = join(dir, `upload-${Date.now()}-${counter++}`);
    return Response.json(await _hashBody(request.body, path), { status: 201 });
  });
  const stop = () => void server.shutdown();
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
  Deno.exit(0);
}

if (import.meta.main) await main();
