/**
 * The bzip2 worker pool with its real worker (libbzip2 in WebAssembly on a
 * worker thread): what it verifies whole and what it hands back as "not
 * verified" for the streaming reader; and, with a stand-in worker that
 * crashes, exits or hangs on request, that a failing worker fails only its
 * own request (a 500 with a one-line reason) and is replaced.
 *
 * @module
 */

import assert from "node:assert/strict";
import { httpErrorOf } from "../src/http/http_error.ts";
import { STATUS } from "../src/http/status.ts";
import { findStreamEndMarkers } from "../src/package/bzip2_worker.ts";
import { Bzip2WorkerPool } from "../src/package/bzip2_worker_pool.ts";
import { PackageReadError } from "../src/package/package_errors.ts";
import { concatBytes } from "../src/concat_bytes.ts";
import { bzip2Compress, EMPTY_BZIP2_STREAM } from "./helpers/conda_package.ts";
import { rejectionOf } from "./helpers/rejection.ts";

const MiB = 1024 * 1024;

/** `length` bytes of text that bzip2 compresses about 3:1, different for each `seed`. */
function sampleText(length: number, seed: number): Uint8Array {
  const words = ["conda", "package", "index", "channel", "info", "json", "tar", "bz2"];
  const parts: string[] = [];
  let state = seed;
  let size = 0;
  while (size < length) {
    state = (state * 1103515245 + 12345) >>> 0;
    const word = `${words[state % words.length]}${state % 1000} `;
    parts.push(word);
    size += word.length;
  }
  return new TextEncoder().encode(parts.join("")).subarray(0, length);
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return concatBytes(parts) as Uint8Array<ArrayBuffer>;
}

const EMPTY_STREAM = EMPTY_BZIP2_STREAM;

Deno.test("Bzip2WorkerPool.decode() verifies single and multi-stream files whole", async () => {
  await using pool = new Bzip2WorkerPool();
  const first = sampleText(300_000, 1);
  const second = sampleText(200_000, 2);
  const [packedFirst, packedSecond] = [await bzip2Compress(first), await bzip2Compress(second)];
  const single = await pool.decode(concat(packedFirst), 4 * MiB);
  assert.ok(single.verified);
  assert.deepEqual(single.output, first);
  // pbzip2/lbzip2 style: several streams one after the other, empty ones between
  const several = await pool.decode(
    concat(packedFirst, EMPTY_STREAM, EMPTY_STREAM, packedSecond),
    4 * MiB,
  );
  assert.ok(several.verified);
  assert.deepEqual(several.output, concat(first, second));
  // the bound counts the output of every stream together
  const over = await pool.decode(concat(packedFirst, packedSecond), first.length + 1000);
  assert.deepEqual(over, { verified: false, reason: "libbzip2 error -8 (BZ_OUTBUFF_FULL)" });
});

Deno.test("Bzip2WorkerPool.decode() verifies nothing it did not check: trailing bytes, corrupt or cut streams, empty-stream runs", async () => {
  await using pool = new Bzip2WorkerPool();
  const packed = await bzip2Compress(sampleText(300_000, 3));
  const other = await bzip2Compress(sampleText(100_000, 4));
  const garbage = new TextEncoder().encode("trailing garbage");
  const cases: [string, Uint8Array<ArrayBuffer>, RegExp][] = [
    ["trailing bytes", concat(packed, garbage), /end-of-stream marker not followed by a stream/],
    [
      "bytes between two streams",
      concat(packed, garbage, other),
      /end-of-stream marker not followed by a stream/,
    ],
    [
      "a stream cut short",
      packed.slice(0, packed.length - 20),
      /bytes after the last end-of-stream marker/,
    ],
    ["a cut trailer", packed.slice(0, packed.length - 2), /marker without its CRC/],
    [
      "a run of 9 empty streams",
      concat(...Array(9).fill(EMPTY_STREAM), packed),
      /a run of empty streams/,
    ],
  ];
  // a flipped byte in the second stream's data: its block CRC fails
  const corrupt = concat(packed, other);
  corrupt[packed.length + Math.floor(other.length / 2)]! ^= 0x10;
  cases.push(["a corrupt second stream", corrupt, /libbzip2 error -4 \(BZ_DATA_ERROR\)/]);
  for (const [what, bytes, reason] of cases) {
    const result = await pool.decode(bytes, 8 * MiB);
    assert.equal(result.verified, false, what);
    assert.match((result as { reason: string }).reason, reason, what);
  }
  // 8 empty streams in a row are padding, and accepted
  const padded = await pool.decode(concat(...Array(8).fill(EMPTY_STREAM), packed), 8 * MiB);
  assert.ok(padded.verified);
});

Deno.test("Bzip2WorkerPool fails only the request of a worker that crashes, exits or hangs, and replaces it", async () => {
  const workerUrl = new URL("./helpers/faulty_bzip2_worker.ts", import.meta.url);
  await using pool = new Bzip2WorkerPool({ workerUrl, timeoutMs: 5000 });
  const request = (first: number) => pool.decode(new Uint8Array([first, 0, 0]), 1024);
  const threadOf = async () => ((await request(0)) as { reason: string }).reason;
  let thread = await threadOf();
  assert.equal(await threadOf(), thread, "an idle worker is kept");
  for (
    const [first, message] of [
      [
        0x01,
        /^Cannot read package: bzip2 decoder worker crashed \(.*faulty worker asked to throw\)$/,
      ],
      // a worker that ends without a word is caught by the deadline
      [0x02, /^Cannot read package: bzip2 decoder worker did not answer in 5 s$/],
      [0x03, /^Cannot read package: bzip2 decoder worker did not answer in 5 s$/],
    ] as const
  ) {
    // requests queued behind the failing one are answered by its successor
    const [failed, queued] = await Promise.allSettled([request(first), request(0)]);
    assert.equal(failed.status, "rejected");
    const error = (failed as PromiseRejectedResult).reason;
    assert.ok(error instanceof PackageReadError, String(error));
    const mapped = httpErrorOf(error);
    assert.equal(mapped?.status, STATUS.InternalServerError);
    assert.match(mapped.message, message);
    assert.equal(queued.status, "fulfilled");
    const next = (queued as PromiseFulfilledResult<{ reason: string }>).value.reason;
    assert.notEqual(next, thread, "the failed worker was replaced");
    thread = next;
  }
  await pool.close();
  const closed = await rejectionOf(request(0));
  assert.ok(closed instanceof PackageReadError);
  assert.equal(closed.message, "Cannot read package: bzip2 decoder is shut down");
});

Deno.test("Bzip2WorkerPool replaces a worker whose memory grew past the bound, and keeps answering", async () => {
  await using pool = new Bzip2WorkerPool({ maxHeapBytes: 0 });
  const text = sampleText(100_000, 5);
  const packed = await bzip2Compress(text);
  for (let i = 0; i < 3; i++) {
    const result = await pool.decode(packed.slice(), MiB);
    assert.ok(result.verified);
    assert.deepEqual(result.output, text);
  }
  // each answer from another worker (the stand-in reports 0 bytes of memory)
  const workerUrl = new URL("./helpers/faulty_bzip2_worker.ts", import.meta.url);
  await using replaced = new Bzip2WorkerPool({ workerUrl, maxHeapBytes: -1 });
  const ids = new Set<string>();
  for (let i = 0; i < 3; i++) {
    ids.add(((await replaced.decode(new Uint8Array([0]), 1024)) as { reason: string }).reason);
  }
  assert.equal(ids.size, 3);
});

Deno.test("Bzip2WorkerPool stops an idle worker, so that it does not keep the process alive", async () => {
  const pool = new URL("../src/package/bzip2_worker_pool.ts", import.meta.url).href;
  const packed = await bzip2Compress(sampleText(50_000, 6));
  const script = `
    import { Bzip2WorkerPool } from ${JSON.stringify(pool)};
    const bytes = new Uint8Array([${packed.join(",")}]);
    const result = await new Bzip2WorkerPool({ idleMs: 500 }).decode(bytes, 1 << 20);
    console.log(result.verified, result.output.length);
  `;
  const started = performance.now();
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.equal(new TextDecoder().decode(output.stderr), "");
  assert.equal(new TextDecoder().decode(output.stdout), "true 50000\n");
  assert.ok(output.success);
  // the process ends once the worker is stopped, not at the 60 s abort
  assert.ok(performance.now() - started < 30_000);
});

Deno.test("findStreamEndMarkers() finds the end-of-stream magic at every bit offset", () => {
  const magic = 0x177245385090n;
  for (let offset = 0; offset < 64; offset++) {
    // 16 zero bytes with the 48-bit magic written from bit `offset + 8`
    const bytes = new Uint8Array(16);
    const position = offset + 8;
    for (let bit = 0; bit < 48; bit++) {
      if ((magic >> BigInt(47 - bit)) & 1n) {
        const at = position + bit;
        bytes[at >> 3]! |= 0x80 >> (at & 7);
      }
    }
    assert.deepEqual(findStreamEndMarkers(bytes), [position], `offset ${offset}`);
  }
  assert.deepEqual(findStreamEndMarkers(new Uint8Array(64)), []);
});
