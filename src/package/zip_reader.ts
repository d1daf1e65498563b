/**
 * Reads a zip archive's central directory from the end of a seekable file
 * (with ZIP64 end records), and locates one member's data, so that one
 * member can be read without touching the others.
 *
 * @module
 */

import { PackageFormatError, PackageLimitError } from "./package_errors.ts";
import type { PackageSource } from "./package_source.ts";

/** One member as listed in the central directory. */
export interface ZipMember {
  /** Name inside the archive. */
  name: string;
  /** Compression method: 0 stored, 8 deflate. */
  method: number;
  /** General purpose bit flags (bit 0: encrypted). */
  flags: number;
  /** CRC-32 of the uncompressed data. */
  crc32: number;
  /** Size of the member's data in the file. */
  compressedSize: number;
  /** Uncompressed size. */
  size: number;
  /** Offset of the member's local header. */
  localHeaderOffset: number;
}

/** Options for {@linkcode readZipDirectory}. */
export interface ZipDirectoryOptions {
  /**
   * Largest central directory accepted, in bytes.
   * @default {16777216} 16 MiB
   */
  maxDirectoryBytes?: number;
}

const EOCD_SIGNATURE = 0x06054b50;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
const decoder = new TextDecoder();

/** Reads exactly `length` bytes at `offset` (fewer only at the end of the file). */
export async function readAt(
  file: PackageSource,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < length) {
    const n = await file.read(buffer.subarray(filled));
    if (n === null || n === 0) break;
    filled += n;
  }
  return buffer.subarray(0, filled);
}

function _u64(view: DataView, offset: number): number {
  const value = view.getBigUint64(offset, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PackageFormatError("Cannot read package: zip field out of range");
  }
  return Number(value);
}

interface _Directory {
  offset: number;
  size: number;
  entries: number;
}

async function _findDirectory(file: PackageSource, fileSize: number): Promise<_Directory> {
  if (fileSize < EOCD_SIZE) {
    throw new PackageFormatError("Cannot read package: zip file is truncated");
  }
  const tailLength = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT);
  const tailStart = fileSize - tailLength;
  const tail = await readAt(file, tailStart, tailLength);
  const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  let eocd = -1;
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (view.getUint32(i, true) !== EOCD_SIGNATURE) continue;
    // the comment must reach exactly to the end of the file
    if (i + EOCD_SIZE + view.getUint16(i + 20, true) === tail.length) {
      eocd = i;
      break;
    }
  }
  if (eocd === -1) {
    throw new PackageFormatError(
      "Cannot read package: no zip end of central directory (truncated?)",
    );
  }
  let directory: _Directory = {
    entries: view.getUint16(eocd + 10, true),
    size: view.getUint32(eocd + 12, true),
    offset: view.getUint32(eocd + 16, true),
  };
  let directoryEnd = tailStart + eocd;
  const locator = eocd - 20;
  if (locator >= 0 && view.getUint32(locator, true) === ZIP64_LOCATOR_SIGNATURE) {
    const zip64Offset = _u64(view, locator + 8);
    if (zip64Offset + 56 > tailStart + locator) {
      throw new PackageFormatError(
        "Cannot read package: bad zip64 end of central directory locator",
      );
    }
    const record = await readAt(file, zip64Offset, 56);
    const recordView = new DataView(record.buffer, record.byteOffset, record.byteLength);
    if (record.length < 56 || recordView.getUint32(0, true) !== ZIP64_EOCD_SIGNATURE) {
      throw new PackageFormatError("Cannot read package: bad zip64 end of central directory");
    }
    directory = {
      entries: _u64(recordView, 32),
      size: _u64(recordView, 40),
      offset: _u64(recordView, 48),
    };
    directoryEnd = zip64Offset;
  }
  if (directory.offset + directory.size > directoryEnd) {
    throw new PackageFormatError("Cannot read package: zip central directory out of bounds");
  }
  return directory;
}

function _zip64Extra(
  view: DataView,
  start: number,
  end: number,
  member: ZipMember,
  raw: { size: number; compressedSize: number; offset: number },
): void {
  let at = start;
  while (at + 4 <= end) {
    const id = view.getUint16(at, true);
    const length = view.getUint16(at + 2, true);
    const dataStart = at + 4;
    if (dataStart + length > end) break;
    if (id === 0x0001) {
      let field = dataStart;
      const take = () => {
        if (field + 8 > dataStart + length) {
          throw new PackageFormatError("Cannot read package: bad zip64 extra field");
        }
        const value = _u64(view, field);
        field += 8;
        return value;
      };
      if (raw.size === 0xffffffff) member.size = take();
      if (raw.compressedSize === 0xffffffff) member.compressedSize = take();
      if (raw.offset === 0xffffffff) member.localHeaderOffset = take();
      return;
    }
    at = dataStart + length;
  }
}

/**
 * Lists the members of the zip archive in `file` (of `fileSize` bytes) from
 * its central directory. A malformed archive is a `PackageFormatError`.
 */
export async function readZipDirectory(
  file: PackageSource,
  fileSize: number,
  options: ZipDirectoryOptions = {},
): Promise<ZipMember[]> {
  const directory = await _findDirectory(file, fileSize);
  const maxBytes = options.maxDirectoryBytes ?? 16 * 1024 * 1024;
  if (directory.size > maxBytes) {
    throw new PackageLimitError("Cannot read package: zip central directory too large");
  }
  const bytes = await readAt(file, directory.offset, directory.size);
  if (bytes.length < directory.size) {
    throw new PackageFormatError("Cannot read package: zip central directory is truncated");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const members: ZipMember[] = [];
  let at = 0;
  while (at + 46 <= bytes.length && members.length < directory.entries) {
    if (view.getUint32(at, true) !== CENTRAL_SIGNATURE) {
      throw new PackageFormatError("Cannot read package: bad zip central directory entry");
    }
    const nameLength = view.getUint16(at + 28, true);
    const extraLength = view.getUint16(at + 30, true);
    const commentLength = view.getUint16(at + 32, true);
    const next = at + 46 + nameLength + extraLength + commentLength;
    if (next > bytes.length) {
      throw new PackageFormatError("Cannot read package: zip central directory is truncated");
    }
    const raw = {
      compressedSize: view.getUint32(at + 20, true),
      size: view.getUint32(at + 24, true),
      offset: view.getUint32(at + 42, true),
    };
    const member: ZipMember = {
      name: decoder.decode(bytes.subarray(at + 46, at + 46 + nameLength)),
      flags: view.getUint16(at + 8, true),
      method: view.getUint16(at + 10, true),
      crc32: view.getUint32(at + 16, true),
      compressedSize: raw.compressedSize,
      size: raw.size,
      localHeaderOffset: raw.offset,
    };
    const extraStart = at + 46 + nameLength;
    _zip64Extra(view, extraStart, extraStart + extraLength, member, raw);
    members.push(member);
    at = next;
  }
  if (members.length !== directory.entries) {
    throw new PackageFormatError("Cannot read package: zip central directory is truncated");
  }
  return members;
}

/**
 * The offset of `member`'s data in `file` (after its local header), checked
 * to lie, with its `compressedSize` bytes, within the first `limit` bytes.
 */
export async function zipMemberDataOffset(
  file: PackageSource,
  member: ZipMember,
  limit: number,
): Promise<number> {
  const header = await readAt(file, member.localHeaderOffset, 30);
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (header.length < 30 || view.getUint32(0, true) !== LOCAL_SIGNATURE) {
    throw new PackageFormatError(`Cannot read package: bad zip local header for ${member.name}`);
  }
  const dataOffset = member.localHeaderOffset + 30 + view.getUint16(26, true) +
    view.getUint16(28, true);
  if (dataOffset + member.compressedSize > limit) {
    throw new PackageFormatError(`Cannot read package: zip member ${member.name} out of bounds`);
  }
  return dataOffset;
}
