/**
 * A small zip writer for test fixtures (method STORED, optionally DEFLATE),
 * in memory or streamed to a seekable file, with optional ZIP64 records.
 *
 * @module
 */

import zlib from "node:zlib";
import { concatBytes } from "./tar_writer.ts";

const encoder = new TextEncoder();
const MAX32 = 0xffffffff;
const DOS_TIME = 0;
const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01

/** CRC-32 (the zip/gzip polynomial) of `data`, continuing from `crc`. */
export function crc32(data: Uint8Array, crc = 0): number {
  return zlib.crc32(data, crc) >>> 0;
}

/** Options for a zip member. */
export interface ZipEntryOptions {
  /** Compress the member with raw DEFLATE (method 8) instead of storing it. @default {false} */
  deflate?: boolean;
}

/** One member for {@linkcode buildZip}. */
export interface ZipEntry extends ZipEntryOptions {
  /** Name inside the archive. */
  name: string;
  /** Content (a string is UTF-8 encoded). */
  data: string | Uint8Array;
}

/** Options for {@linkcode buildZip} and {@linkcode ZipFileWriter}. */
export interface ZipOptions {
  /** Write ZIP64 extra fields, a ZIP64 end record and locator even for small archives. @default {false} */
  zip64?: boolean;
  /** Archive comment after the end-of-central-directory record. @default {""} */
  comment?: string;
}

interface _CentralRecord {
  name: Uint8Array;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  offset: number;
}

function _localHeader(
  name: Uint8Array,
  method: number,
  crc: number,
  compressedSize: number,
  size: number,
  zip64: boolean,
): Uint8Array {
  const extraLength = zip64 ? 20 : 0;
  const out = new Uint8Array(30 + name.length + extraLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, 0x04034b50, true);
  view.setUint16(4, zip64 ? 45 : 20, true);
  view.setUint16(6, 0x0800, true); // UTF-8 names
  view.setUint16(8, method, true);
  view.setUint16(10, DOS_TIME, true);
  view.setUint16(12, DOS_DATE, true);
  view.setUint32(14, crc, true);
  view.setUint32(18, zip64 ? MAX32 : compressedSize, true);
  view.setUint32(22, zip64 ? MAX32 : size, true);
  view.setUint16(26, name.length, true);
  view.setUint16(28, extraLength, true);
  out.set(name, 30);
  if (zip64) {
    const at = 30 + name.length;
    view.setUint16(at, 0x0001, true);
    view.setUint16(at + 2, 16, true);
    view.setBigUint64(at + 4, BigInt(size), true);
    view.setBigUint64(at + 12, BigInt(compressedSize), true);
  }
  return out;
}

function _centralHeader(record: _CentralRecord, zip64: boolean): Uint8Array {
  const big = zip64 || record.size >= MAX32 || record.compressedSize >= MAX32 ||
    record.offset >= MAX32;
  const extraLength = big ? 28 : 0;
  const out = new Uint8Array(46 + record.name.length + extraLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, 0x02014b50, true);
  view.setUint16(4, (3 << 8) | 45, true);
  view.setUint16(6, big ? 45 : 20, true);
  view.setUint16(8, 0x0800, true);
  view.setUint16(10, record.method, true);
  view.setUint16(12, DOS_TIME, true);
  view.setUint16(14, DOS_DATE, true);
  view.setUint32(16, record.crc, true);
  view.setUint32(20, big ? MAX32 : record.compressedSize, true);
  view.setUint32(24, big ? MAX32 : record.size, true);
  view.setUint16(28, record.name.length, true);
  view.setUint16(30, extraLength, true);
  view.setUint16(32, 0, true); // comment length
  view.setUint16(34, 0, true); // disk
  view.setUint16(36, 0, true); // internal attributes
  view.setUint32(38, (0o100644 << 16) >>> 0, true);
  view.setUint32(42, big ? MAX32 : record.offset, true);
  out.set(record.name, 46);
  if (big) {
    const at = 46 + record.name.length;
    view.setUint16(at, 0x0001, true);
    view.setUint16(at + 2, 24, true);
    view.setBigUint64(at + 4, BigInt(record.size), true);
    view.setBigUint64(at + 12, BigInt(record.compressedSize), true);
    view.setBigUint64(at + 20, BigInt(record.offset), true);
  }
  return out;
}

function _endRecords(
  records: _CentralRecord[],
  centralOffset: number,
  centralSize: number,
  options: ZipOptions,
): Uint8Array {
  const comment = encoder.encode(options.comment ?? "");
  const big = (options.zip64 ?? false) || centralOffset >= MAX32 || records.length >= 0xffff ||
    records.some((r) => r.offset >= MAX32 || r.size >= MAX32 || r.compressedSize >= MAX32);
  const parts: Uint8Array[] = [];
  if (big) {
    const record = new Uint8Array(56);
    const view = new DataView(record.buffer);
    view.setUint32(0, 0x06064b50, true);
    view.setBigUint64(4, 44n, true);
    view.setUint16(12, (3 << 8) | 45, true);
    view.setUint16(14, 45, true);
    view.setUint32(16, 0, true);
    view.setUint32(20, 0, true);
    view.setBigUint64(24, BigInt(records.length), true);
    view.setBigUint64(32, BigInt(records.length), true);
    view.setBigUint64(40, BigInt(centralSize), true);
    view.setBigUint64(48, BigInt(centralOffset), true);
    const locator = new Uint8Array(20);
    const locatorView = new DataView(locator.buffer);
    locatorView.setUint32(0, 0x07064b50, true);
    locatorView.setUint32(4, 0, true);
    locatorView.setBigUint64(8, BigInt(centralOffset + centralSize), true);
    locatorView.setUint32(16, 1, true);
    parts.push(record, locator);
  }
  const end = new Uint8Array(22 + comment.length);
  const view = new DataView(end.buffer);
  view.setUint32(0, 0x06054b50, true);
  view.setUint16(8, big ? 0xffff : records.length, true);
  view.setUint16(10, big ? 0xffff : records.length, true);
  view.setUint32(12, big ? MAX32 : centralSize, true);
  view.setUint32(16, big ? MAX32 : centralOffset, true);
  view.setUint16(20, comment.length, true);
  end.set(comment, 22);
  parts.push(end);
  return concatBytes(parts);
}

function _centralDirectory(
  records: _CentralRecord[],
  centralOffset: number,
  options: ZipOptions,
): Uint8Array {
  const central = concatBytes(records.map((r) => _centralHeader(r, options.zip64 ?? false)));
  return concatBytes([central, _endRecords(records, centralOffset, central.length, options)]);
}

/** Builds a whole zip archive in memory. */
export function buildZip(entries: ZipEntry[], options: ZipOptions = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  const records: _CentralRecord[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = encoder.encode(entry.name);
    const data = typeof entry.data === "string" ? encoder.encode(entry.data) : entry.data;
    const method = entry.deflate ? 8 : 0;
    const stored = entry.deflate ? new Uint8Array(zlib.deflateRawSync(data)) : data;
    const crc = crc32(data);
    const header = _localHeader(
      name,
      method,
      crc,
      stored.length,
      data.length,
      options.zip64 ?? false,
    );
    records.push({ name, method, crc, compressedSize: stored.length, size: data.length, offset });
    parts.push(header, stored);
    offset += header.length + stored.length;
  }
  parts.push(_centralDirectory(records, offset, options));
  return concatBytes(parts);
}

/**
 * Streams a stored zip archive to a seekable file: each member's local header
 * is written with placeholders and patched once its CRC and size are known,
 * so memory stays flat however large a member is.
 */
export class ZipFileWriter {
  #file: Deno.FsFile;
  #options: ZipOptions;
  #records: _CentralRecord[] = [];
  #offset = 0;

  private constructor(file: Deno.FsFile, options: ZipOptions) {
    this.#file = file;
    this.#options = options;
  }

  /** Creates (or truncates) `path` and returns a writer for it. */
  static async create(path: string, options: ZipOptions = {}): Promise<ZipFileWriter> {
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    return new ZipFileWriter(file, options);
  }

  async #write(data: Uint8Array): Promise<void> {
    let written = 0;
    while (written < data.length) written += await this.#file.write(data.subarray(written));
    this.#offset += data.length;
  }

  /** Adds a stored member from bytes. */
  async addBytes(name: string, data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    await this.addStream(name, [bytes]);
  }

  /** Adds a stored member whose content is streamed from `source`. */
  async addStream(
    name: string,
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<void> {
    const nameBytes = encoder.encode(name);
    const zip64 = this.#options.zip64 ?? false;
    const offset = this.#offset;
    await this.#write(_localHeader(nameBytes, 0, 0, 0, 0, zip64));
    let crc = 0;
    let size = 0;
    for await (const chunk of source) {
      crc = crc32(chunk, crc);
      size += chunk.length;
      await this.#write(chunk);
    }
    if (!zip64 && size >= MAX32) {
      throw new Error("Cannot write zip member: larger than 4 GiB without zip64");
    }
    const header = _localHeader(nameBytes, 0, crc, size, size, zip64);
    await this.#file.seek(offset, Deno.SeekMode.Start);
    let written = 0;
    while (written < header.length) written += await this.#file.write(header.subarray(written));
    await this.#file.seek(0, Deno.SeekMode.End);
    this.#records.push({ name: nameBytes, method: 0, crc, compressedSize: size, size, offset });
  }

  /** Writes the central directory and end records, closes the file and returns its size. */
  async close(): Promise<number> {
    try {
      await this.#write(_centralDirectory(this.#records, this.#offset, this.#options));
      return this.#offset;
    } finally {
      this.#file.close();
    }
  }
}
