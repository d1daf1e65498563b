/**
 * A minimal streaming tar parser: fed decompressed chunks, it reports each
 * member's header and, for members the caller asks for, their content, and
 * lets the caller stop as soon as it has what it needs. Reads ustar, GNU long
 * names (`././@LongLink`) and pax `path`/`size` records.
 *
 * @module
 */

import { PackageFormatError, PackageLimitError } from "./package_errors.ts";

/** A tar member's header, after long-name and pax records are applied. */
export interface TarEntryHeader {
  /** Path inside the archive, without a leading `./`. */
  name: string;
  /** Size of the member's data in bytes. */
  size: number;
  /** The type flag: `"0"` regular file, `"5"` directory, `"2"` symlink, … */
  type: string;
}

/** What the caller wants done with a member. */
export type TarEntryAction = "skip" | "collect" | "stop";

/** The caller's side of {@linkcode TarReader}. */
export interface TarVisitor {
  /** Called for each member header; `"collect"` asks for its content via `onFile`. */
  onEntry(entry: TarEntryHeader): TarEntryAction;
  /** Called with a collected member's whole content; return `true` to stop reading. */
  onFile(entry: TarEntryHeader, data: Uint8Array): boolean;
}

/** Options for {@linkcode TarReader}. */
export interface TarReaderOptions {
  /**
   * Largest pax extended header or GNU long name accepted, in bytes.
   * @default {1048576}
   */
  maxMetaBytes?: number;
}

const BLOCK = 512;
const decoder = new TextDecoder("utf-8", { fatal: false });

function _isZeroBlock(block: Uint8Array): boolean {
  for (const byte of block) if (byte !== 0) return false;
  return true;
}

function _cString(block: Uint8Array, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return decoder.decode(end === -1 ? field : field.subarray(0, end));
}

function _number(block: Uint8Array, offset: number, length: number, what: string): number {
  const field = block.subarray(offset, offset + length);
  const first = field[0] ?? 0;
  if (first & 0x80) {
    // GNU base-256: big-endian, first byte's high bit set (negative values refused)
    if (first & 0x40) throw new PackageFormatError(`Cannot read package: negative tar ${what}`);
    let value = first & 0x3f;
    for (let i = 1; i < field.length; i++) {
      value = value * 256 + (field[i] ?? 0);
      if (value > Number.MAX_SAFE_INTEGER) {
        throw new PackageFormatError(`Cannot read package: tar ${what} too large`);
      }
    }
    return value;
  }
  const text = decoder.decode(field).replace(/[\0 ]+$/, "").replace(/^ +/, "");
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) {
    throw new PackageFormatError(`Cannot read package: bad tar ${what} field`);
  }
  return parseInt(text, 8);
}

function _checksumOk(block: Uint8Array): boolean {
  const stored = _number(block, 148, 8, "checksum");
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : block[i] ?? 0;
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return stored === unsigned || stored === signed;
}

function _parsePax(data: Uint8Array): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space === -1) break;
    const length = Number(decoder.decode(data.subarray(at, space)));
    if (!Number.isSafeInteger(length) || length <= space - at || at + length > data.length) {
      throw new PackageFormatError("Cannot read package: bad pax header record");
    }
    const record = decoder.decode(data.subarray(space + 1, at + length - 1));
    const equals = record.indexOf("=");
    if (equals > 0) records.set(record.slice(0, equals), record.slice(equals + 1));
    at += length;
  }
  return records;
}

function _normalize(name: string): string {
  let out = name;
  while (out.startsWith("./")) out = out.slice(2);
  return out;
}

type _Meta = "pax" | "longname" | "ignore";

/**
 * Push parser for a tar stream. Feed it with {@linkcode TarReader.push};
 * check {@linkcode TarReader.done} to learn that the visitor stopped it or
 * that the archive ended. Malformed headers throw a `PackageFormatError`.
 *
 * @example Usage
 * ```ts ignore
 * const reader = new TarReader({
 *   onEntry: (entry) => entry.name === "info/index.json" ? "collect" : "skip",
 *   onFile: (_entry, data) => { console.log(data.length); return true; },
 * });
 * reader.push(chunk);
 * ```
 */
export class TarReader {
  #visitor: TarVisitor;
  #maxMeta: number;
  #header = new Uint8Array(BLOCK);
  #headerFill = 0;
  /** Bytes of the current member's data still to come. */
  #remaining = 0;
  /** Padding bytes still to skip after the current member's data. */
  #padding = 0;
  #current: TarEntryHeader | undefined;
  #collect: Uint8Array | undefined;
  #collectFill = 0;
  #meta: _Meta | undefined;
  #pendingPax: Map<string, string> | undefined;
  #pendingLongName: string | undefined;
  #ended = false;
  #stopped = false;

  constructor(visitor: TarVisitor, options: TarReaderOptions = {}) {
    this.#visitor = visitor;
    this.#maxMeta = options.maxMetaBytes ?? 1024 * 1024;
  }

  /** Whether the archive's end marker was read. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Whether reading is over: the visitor stopped it or the archive ended. */
  get done(): boolean {
    return this.#ended || this.#stopped;
  }

  /** Whether the reader is between members (not inside a header or data). */
  get atBoundary(): boolean {
    return this.#headerFill === 0 && this.#remaining === 0 && this.#padding === 0;
  }

  /** Feeds the next chunk of the tar stream. Does nothing once {@linkcode done}. */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && !this.done) {
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - at);
        if (this.#collect) {
          this.#collect.set(chunk.subarray(at, at + n), this.#collectFill);
          this.#collectFill += n;
        }
        this.#remaining -= n;
        at += n;
        if (this.#remaining === 0) this.#finishMember();
        continue;
      }
      if (this.#padding > 0) {
        const n = Math.min(this.#padding, chunk.length - at);
        this.#padding -= n;
        at += n;
        continue;
      }
      const n = Math.min(BLOCK - this.#headerFill, chunk.length - at);
      this.#header.set(chunk.subarray(at, at + n), this.#headerFill);
      this.#headerFill += n;
      at += n;
      if (this.#headerFill === BLOCK) {
        this.#headerFill = 0;
        this.#readHeader(this.#header);
      }
    }
  }

  #readHeader(block: Uint8Array): void {
    if (_isZeroBlock(block)) {
      this.#ended = true;
      return;
    }
    if (!_checksumOk(block)) {
      throw new PackageFormatError("Cannot read package: bad tar header checksum");
    }
    const type = String.fromCharCode(block[156] ?? 0) || "0";
    const magic = _cString(block, 257, 6);
    let name = _cString(block, 0, 100);
    if (magic === "ustar" && block[263] === 0x30) {
      // POSIX ustar ("ustar\0" "00"): a prefix field may hold the leading directories
      const prefix = _cString(block, 345, 155);
      if (prefix !== "") name = `${prefix}/${name}`;
    }
    let size = _number(block, 124, 12, "size");
    const pax = this.#pendingPax;
    if (type !== "x" && type !== "g" && type !== "L" && type !== "K") {
      if (this.#pendingLongName !== undefined) name = this.#pendingLongName;
      const paxPath = pax?.get("path");
      if (paxPath !== undefined) name = paxPath;
      const paxSize = pax?.get("size");
      if (paxSize !== undefined) {
        if (!/^[0-9]+$/.test(paxSize) || !Number.isSafeInteger(Number(paxSize))) {
          throw new PackageFormatError("Cannot read package: bad pax size record");
        }
        size = Number(paxSize);
      }
      this.#pendingLongName = undefined;
      this.#pendingPax = undefined;
    }
    // links, devices, directories and fifos carry no data, whatever their size field says
    const dataSize = "123456".includes(type) ? 0 : size;
    this.#current = { name: _normalize(name), size: dataSize, type };
    this.#collect = undefined;
    this.#collectFill = 0;
    this.#meta = undefined;
    this.#remaining = dataSize;
    this.#padding = (BLOCK - (dataSize % BLOCK)) % BLOCK;
    if (type === "x" || type === "L" || type === "g" || type === "K") {
      this.#meta = type === "x" ? "pax" : type === "L" ? "longname" : "ignore";
      if (this.#meta !== "ignore") {
        if (dataSize > this.#maxMeta) {
          throw new PackageLimitError("Cannot read package: tar extended header too large");
        }
        this.#collect = new Uint8Array(dataSize);
      }
    } else {
      const action = this.#visitor.onEntry(this.#current);
      if (action === "stop") {
        this.#stopped = true;
        return;
      }
      if (action === "collect") this.#collect = new Uint8Array(dataSize);
    }
    if (dataSize === 0) this.#finishMember();
  }

  #finishMember(): void {
    const entry = this.#current;
    const data = this.#collect;
    this.#collect = undefined;
    if (!entry) return;
    if (this.#meta === "pax" && data) {
      this.#pendingPax = _parsePax(data);
    } else if (this.#meta === "longname" && data) {
      const end = data.indexOf(0);
      this.#pendingLongName = decoder.decode(end === -1 ? data : data.subarray(0, end));
    } else if (this.#meta === undefined && data) {
      if (this.#visitor.onFile(entry, data)) this.#stopped = true;
    }
    this.#meta = undefined;
  }
}
