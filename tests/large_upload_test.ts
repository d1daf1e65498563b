/**
 * A ~300 MiB `.conda` and a ~300 MiB `.tar.bz2` uploaded with real curl to
 * the real program (a subprocess under the shipped permissions): the bytes
 * arrive intact, and the server's peak memory does not grow with them.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { writeLargePackage, writePackage } from "./helpers/conda_package.ts";
import { curlUpload, startServerProcess, writeTestTls } from "./helpers/server_process.ts";

const MiB = 1024 * 1024;
/** Payload of each large package. */
const PAYLOAD_BYTES = 300 * MiB;
/** Payload of the warm-up package, a tenth of the large ones. */
const WARM_UP_BYTES = 30 * MiB;
/**
 * Largest growth of the server's peak RSS allowed from after a 30 MiB upload
 * to after two 300 MiB uploads: a quarter of one artifact. A server that
 * holds a quarter of an artifact in memory fails it, while a streaming one
 * only has buffers and garbage-collector slack, most of which a 30 MiB upload
 * already reaches (measured on fresh servers: peak RSS 156 MiB after a
 * 50 MiB upload, 160 after 150, 163 after 300, 165 after 600; here the
 * growth is about 30 MiB).
 */
const MAX_RSS_GROWTH_KIB = (PAYLOAD_BYTES / 4) / 1024;
/** Largest peak RSS allowed at all (measured: 165 MiB; Deno alone is ~90 MiB). */
const MAX_RSS_PEAK_KIB = 200 * 1024;

/** sha256 (hex) of a file, streamed. */
async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

Deno.test("a 300 MiB .conda and .tar.bz2 upload intact, with flat server memory", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "auh-large-" });
  try {
    const channel = join(dir, "channel");
    await Deno.mkdir(channel);
    const tls = await writeTestTls(dir);
    const token = `large-${crypto.randomUUID()}`;
    const hash = createHash("sha256").update("42679ad04d44c96ed27470c02bfb28c3" + token)
      .digest("hex");
    await using server = await startServerProcess([
      "-d",
      channel,
      "-p",
      "0",
      "-c",
      tls.certFile,
      "-k",
      tls.keyFile,
      "-t",
      hash,
    ]);
    // warm up every code path, and the heap, on smaller packages: what follows is growth
    const startKiB = await server.rssPeakKiB();
    const small = await writePackage(dir, { name: "small", version: "1.0" });
    const medium = join(dir, "medium-1.0-0.conda");
    await writeLargePackage(medium, { name: "medium", version: "1.0" }, WARM_UP_BYTES);
    for (const file of [small, medium]) {
      const warm = await curlUpload(server.url, { token, file }, { caFile: tls.caFile });
      assert.equal(warm.status, 201, warm.body);
    }
    await Deno.remove(medium);
    const baselineKiB = await server.rssPeakKiB();

    for (const format of [".conda", ".tar.bz2"] as const) {
      await t.step(`${format} of ${PAYLOAD_BYTES / MiB} MiB`, async () => {
        const filename = `big-1.0-0${format}`;
        const path = join(dir, filename);
        try {
          let started = performance.now();
          const size = await writeLargePackage(
            path,
            { name: "big", version: "1.0", format },
            PAYLOAD_BYTES,
          );
          const buildMs = performance.now() - started;
          assert.ok(size > PAYLOAD_BYTES, `${size}`);
          const expected = await sha256File(path);

          started = performance.now();
          const result = await curlUpload(server.url, { token, file: path }, {
            caFile: tls.caFile,
            maxTimeSeconds: 45,
          });
          const uploadMs = performance.now() - started;
          assert.equal(result.status, 201, result.body);
          const stored = JSON.parse(result.body) as {
            filename: string;
            size: number;
            sha256: string;
          };
          assert.equal(stored.filename, filename);
          assert.equal(stored.size, size);
          assert.equal(stored.sha256, expected);

          const storedPath = join(channel, "linux-64", filename);
          assert.equal((await Deno.stat(storedPath)).size, size);
          assert.equal(await sha256File(storedPath), expected);
          await Deno.remove(storedPath);
          console.log(
            `${format}: ${(size / MiB).toFixed(1)} MiB built in ${Math.round(buildMs)} ms, ` +
              `uploaded in ${Math.round(uploadMs)} ms (${
                (size / MiB / (uploadMs / 1000)).toFixed(0)
              } MiB/s); server peak RSS ${Math.round((await server.rssPeakKiB()) / 1024)} MiB`,
          );
        } finally {
          await Deno.remove(path).catch(() => {});
        }
      });
    }

    const peakKiB = await server.rssPeakKiB();
    const growthKiB = peakKiB - baselineKiB;
    const mib = (kib: number) => Math.round(kib / 1024);
    console.log(
      `server peak RSS: ${mib(startKiB)} MiB at start, ${mib(baselineKiB)} MiB after a ` +
        `${WARM_UP_BYTES / MiB} MiB upload, ${mib(peakKiB)} MiB after two ` +
        `${PAYLOAD_BYTES / MiB} MiB uploads (growth ${mib(growthKiB)} MiB)`,
    );
    assert.ok(
      growthKiB < MAX_RSS_GROWTH_KIB,
      `peak RSS grew by ${mib(growthKiB)} MiB from a ${WARM_UP_BYTES / MiB} MiB upload to ` +
        `${PAYLOAD_BYTES / MiB} MiB ones: memory grows with the artifact`,
    );
    assert.ok(peakKiB < MAX_RSS_PEAK_KIB, `peak RSS ${mib(peakKiB)} MiB`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
