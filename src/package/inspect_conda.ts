/**
 * Reads the `info/` files of a `.conda` package: finds `info-*.tar.zst` in
 * the zip's central directory and streams only that member through zstd into
 * the tar reader. The `pkg-*` member is never read.
 *
 * @module
 */

import zlib from "node:zlib";
import { unprocessable } from "../http/http_error.ts";
import {
  DEFAULT_MAX_SCANNED_BYTES,
  InfoCollector,
  inspectionError,
  type InspectOptions,
  SpoolReadError,
} from "./info_collector.ts";
import { TarReader } from "./tar_reader.ts";
import { readZipDirectory, type ZipMember, zipMemberDataOffset } from "./zip_reader.ts";

const READ_CHUNK = 64 * 1024;
const INFO_MEMBER = /^info-[^/\\]*\.tar\.zst$/;

/** Yields `length` bytes of `file` from `offset`, a chunk at a time. */
async function* _readRange(
  file: Deno.FsFile,
  offset: number,
  length: number,
): AsyncGenerator<Uint8Array> {
  try {
    await file.seek(offset, Deno.SeekMode.Start);
  } catch (error) {
    throw new SpoolReadError("seek failed", { cause: error });
  }
  let left = length;
  while (left > 0) {
    const buffer = new Uint8Array(Math.min(READ_CHUNK, left));
    let n: number | null;
    try {
      n = await file.read(buffer);
    } catch (error) {
      throw new SpoolReadError("read failed", { cause: error });
    }
    if (n === null || n === 0) throw unprocessable("Cannot read package: zip member is truncated");
    left -= n;
    yield buffer.subarray(0, n);
  }
}

/**
 * Runs `source` through a node:zlib transform, yielding its output with
 * backpressure. Returning early (a `break` in the consumer) destroys the
 * transform and stops reading `source`.
 */
async function* _through(
  transform: zlib.ZstdDecompress | zlib.InflateRaw,
  source: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const queue: Uint8Array[] = [];
  let finished = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const signal = () => {
    const resume = wake;
    wake = undefined;
    resume?.();
  };
  const closed = new Promise<void>((resolve) => transform.once("close", resolve));
  transform.on("data", (chunk: Uint8Array) => {
    queue.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    if (queue.length >= 4) transform.pause();
    signal();
  });
  transform.on("end", () => {
    finished = true;
    signal();
  });
  transform.on("error", (error: unknown) => {
    failure ??= error;
    finished = true;
    signal();
  });
  transform.on("close", () => {
    finished = true;
    signal();
  });
  const feeding = (async () => {
    try {
      for await (const chunk of source) {
        if (finished) return;
        if (!transform.write(chunk)) {
          await Promise.race([
            new Promise<void>((resolve) => transform.once("drain", resolve)),
            closed,
          ]);
        }
      }
      if (!finished) transform.end();
    } catch (error) {
      failure ??= error;
      finished = true;
      transform.destroy();
      signal();
    }
  })();
  try {
    while (true) {
      const chunk = queue.shift();
      if (chunk) {
        if (queue.length < 2 && transform.isPaused()) transform.resume();
        yield chunk;
        continue;
      }
      if (failure !== undefined) throw failure;
      if (finished) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    finished = true;
    transform.destroy();
    await feeding;
  }
}

function _pickInfoMember(members: ZipMember[], stem: string): ZipMember {
  const exact = members.find((m) => m.name === `info-${stem}.tar.zst`);
  const member = exact ?? members.find((m) => INFO_MEMBER.test(m.name));
  if (!member) throw unprocessable("Cannot read package: no info-*.tar.zst member in .conda");
  if (member.flags & 0x1) throw unprocessable("Cannot read package: info member is encrypted");
  if (member.method !== 0 && member.method !== 8) {
    throw unprocessable(`Cannot read package: unsupported zip compression method ${member.method}`);
  }
  return member;
}

/**
 * Reads `info/index.json`, `info/about.json` and `info/run_exports.json`
 * (those present) from the `.conda` package open as `file` (`size` bytes;
 * the caller closes it), whose filename stem is `stem`. Every failure is an `HttpError`: 422 for a corrupt, truncated
 * or oversized archive.
 */
export async function readCondaInfo(
  file: Deno.FsFile,
  size: number,
  stem: string,
  options: InspectOptions = {},
): Promise<Map<string, Uint8Array>> {
  const maxScanned = options.maxScannedBytes ?? DEFAULT_MAX_SCANNED_BYTES;
  const collector = new InfoCollector(options);
  const tar = new TarReader(collector);
  try {
    const members = await readZipDirectory(file, size);
    const member = _pickInfoMember(members, stem);
    const offset = await zipMemberDataOffset(file, member, size);
    let compressed: AsyncIterable<Uint8Array> = _readRange(file, offset, member.compressedSize);
    if (member.method === 8) compressed = _through(zlib.createInflateRaw(), compressed);
    let scanned = 0;
    for await (const chunk of _through(zlib.createZstdDecompress(), compressed)) {
      scanned += chunk.length;
      tar.push(chunk);
      if (tar.done) break;
      if (scanned > maxScanned) {
        throw unprocessable(
          `Cannot read package: info member decompresses to more than ${maxScanned} bytes`,
        );
      }
    }
  } catch (error) {
    throw inspectionError(error, "corrupt info member");
  }
  if (!collector.hasIndex) {
    throw unprocessable(
      tar.ended || tar.atBoundary
        ? "Cannot read package: info/index.json is missing"
        : "Cannot read package: info tar archive is truncated",
    );
  }
  return collector.files;
}
