/**
 * Reads the `info/` files of a `.conda` package: finds `info-*.tar.zst` in
 * the zip's central directory and streams only that member through zstd into
 * the tar reader. The `pkg-*` member is never read.
 *
 * @module
 */

import zlib from "node:zlib";
import { DEFAULT_MAX_SCANNED_BYTES, InfoCollector, type InspectOptions } from "./info_collector.ts";
import {
  packageError,
  PackageFormatError,
  PackageLimitError,
  PackageReadError,
} from "./package_errors.ts";
import { TarReader } from "./tar_reader.ts";
import { MemoryPackageSource, type PackageSource } from "./package_source.ts";
import { readZipDirectory, type ZipMember, zipMemberDataOffset } from "./zip_reader.ts";

const READ_CHUNK = 64 * 1024;
/** Bytes read per step of the checksum pass, into one reused buffer. */
const CHECK_CHUNK = 256 * 1024;
const INFO_MEMBER = /^info-[^/\\]*\.tar\.zst$/;
/**
 * Largest info member output decompressed in one call from memory; a larger
 * one (or any failure) takes the streaming path, which has the precise errors.
 */
const MAX_ONE_CALL_BYTES = 16 * 1024 * 1024;

/** Yields `length` bytes of `file` from `offset`, a chunk at a time. */
async function* _readRange(
  file: PackageSource,
  offset: number,
  length: number,
): AsyncGenerator<Uint8Array> {
  try {
    await file.seek(offset, Deno.SeekMode.Start);
  } catch (error) {
    throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
  }
  let left = length;
  while (left > 0) {
    const buffer = new Uint8Array(Math.min(READ_CHUNK, left));
    let n: number | null;
    try {
      n = await file.read(buffer);
    } catch (error) {
      throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
    }
    if (n === null || n === 0) {
      throw new PackageFormatError("Cannot read package: zip member is truncated");
    }
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

/** CRC-32 and length of `length` bytes of `file` from `offset`, read into `buffer`. */
async function _crcOfRange(
  file: PackageSource,
  offset: number,
  length: number,
  buffer: Uint8Array,
): Promise<[crc: number, read: number]> {
  try {
    await file.seek(offset, Deno.SeekMode.Start);
  } catch (error) {
    throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
  }
  let crc = 0;
  let read = 0;
  while (read < length) {
    let n: number | null;
    try {
      n = await file.read(buffer.subarray(0, Math.min(buffer.length, length - read)));
    } catch (error) {
      throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
    }
    if (n === null || n === 0) break;
    crc = zlib.crc32(buffer.subarray(0, n), crc);
    read += n;
  }
  return [crc, read];
}

/**
 * The info member of a package in memory, decompressed in one call, or
 * undefined when it decompresses to more than `maxOutput` bytes or fails at
 * all: the streaming path then reports why, as for a file.
 */
function _decompressInMemory(
  source: MemoryPackageSource,
  offset: number,
  member: ZipMember,
  maxOutput: number,
): Uint8Array | undefined {
  try {
    let compressed = source.bytesAt(offset, member.compressedSize);
    if (member.method === 8) {
      compressed = zlib.inflateRawSync(compressed, { maxOutputLength: MAX_ONE_CALL_BYTES });
    }
    const tar = zlib.zstdDecompressSync(compressed, { maxOutputLength: maxOutput });
    return new Uint8Array(tar.buffer, tar.byteOffset, tar.byteLength);
  } catch {
    return undefined;
  }
}

function _pickInfoMember(members: ZipMember[], stem: string): ZipMember {
  const exact = members.find((m) => m.name === `info-${stem}.tar.zst`);
  const member = exact ?? members.find((m) => INFO_MEMBER.test(m.name));
  if (!member) {
    throw new PackageFormatError("Cannot read package: no info-*.tar.zst member in .conda");
  }
  if (member.flags & 0x1) {
    throw new PackageFormatError("Cannot read package: info member is encrypted");
  }
  if (member.method !== 0 && member.method !== 8) {
    throw new PackageFormatError(
      `Cannot read package: unsupported zip compression method ${member.method}`,
    );
  }
  return member;
}

/**
 * Reads the wanted `info/` files (see `info_collector.ts`) from the
 * `.conda` package open as `file` (`size` bytes; the caller closes it),
 * whose filename stem is `stem`, then (unless `verifyChecksums` is false)
 * checks every zip member's CRC-32. Throws a `PackageFormatError` for a
 * corrupt or truncated archive, a `PackageLimitError` for an oversized one.
 */
export async function readCondaInfo(
  file: PackageSource,
  size: number,
  stem: string,
  options: InspectOptions = {},
): Promise<Map<string, Uint8Array>> {
  const maxScanned = options.maxScannedBytes ?? DEFAULT_MAX_SCANNED_BYTES;
  const collector = new InfoCollector(options);
  const tar = new TarReader(collector);
  let members: ZipMember[];
  try {
    members = await readZipDirectory(file, size);
    const member = _pickInfoMember(members, stem);
    const offset = await zipMemberDataOffset(file, member, size);
    const whole = file instanceof MemoryPackageSource
      ? _decompressInMemory(file, offset, member, Math.min(MAX_ONE_CALL_BYTES, maxScanned))
      : undefined;
    if (whole !== undefined) tar.push(whole);
    let compressed: AsyncIterable<Uint8Array> = _readRange(file, offset, member.compressedSize);
    if (member.method === 8) compressed = _through(zlib.createInflateRaw(), compressed);
    let scanned = 0;
    const stream = whole !== undefined ? [] : _through(zlib.createZstdDecompress(), compressed);
    for await (const chunk of stream) {
      scanned += chunk.length;
      tar.push(chunk);
      if (tar.done) break;
      if (scanned > maxScanned) {
        throw new PackageLimitError(
          `Cannot read package: info member decompresses to more than ${maxScanned} bytes`,
        );
      }
    }
  } catch (error) {
    throw packageError(error, "corrupt info member");
  }
  if (!collector.hasIndex) {
    throw new PackageFormatError(
      tar.ended || tar.atBoundary
        ? "Cannot read package: info/index.json is missing"
        : "Cannot read package: info tar archive is truncated",
    );
  }
  if (options.verifyChecksums !== false) await verifyZipChecksums(file, size, members);
  return collector.files;
}

/**
 * Checks every member of the zip archive open as `file` against the CRC-32
 * of its central directory entry: the stored bytes of a stored member (the
 * `pkg-*.tar.zst` payload of a `.conda`, read once at several GB/s), the
 * inflated bytes of a deflated one. Throws a `PackageFormatError` naming
 * the first member whose bytes do not match.
 */
export async function verifyZipChecksums(
  file: PackageSource,
  size: number,
  members: readonly ZipMember[],
): Promise<void> {
  // One buffer for the whole pass: a GiB read in fresh chunks would pile up
  // garbage faster than the small young generation collects it.
  const buffer = new Uint8Array(CHECK_CHUNK);
  for (const member of members) {
    if (member.method !== 0 && member.method !== 8) continue; // refused when it is the info member
    let crc = 0;
    let length = 0;
    try {
      const offset = await zipMemberDataOffset(file, member, size);
      if (member.method === 0 && file instanceof MemoryPackageSource) {
        const stored = file.bytesAt(offset, member.compressedSize);
        [crc, length] = [zlib.crc32(stored), stored.length];
      } else if (member.method === 0) {
        [crc, length] = await _crcOfRange(file, offset, member.compressedSize, buffer);
      } else {
        const compressed = _readRange(file, offset, member.compressedSize);
        for await (const chunk of _through(zlib.createInflateRaw(), compressed)) {
          crc = zlib.crc32(chunk, crc);
          length += chunk.length;
          if (length > member.size) break;
        }
      }
    } catch (error) {
      throw packageError(error, `corrupt zip member ${member.name}`);
    }
    if (length !== member.size || (crc >>> 0) !== (member.crc32 >>> 0)) {
      throw new PackageFormatError(
        `Cannot read package: zip member ${member.name} is corrupt (CRC-32 or size mismatch)`,
      );
    }
  }
}
