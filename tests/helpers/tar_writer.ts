/**
 * A small ustar writer for test fixtures: builds tar archives in memory, or
 * hands out headers and padding so that callers can stream large members.
 *
 * @module
 */

import { concatBytes } from "../../src/concat_bytes.ts";

export { concatBytes };

/** The size of a tar block. */
export const TAR_BLOCK = 512;

/** How long names are written when they do not fit a ustar header. */
export type LongNameStyle = "pax" | "gnu";

/** Options for {@linkcode tarHeader}. */
export interface TarHeaderOptions {
  /**
   * Entry type flag: "0" regular file, "5" directory, "2" symlink, …
   * @default {"0"}
   */
  type?: string;
  /** @default {0o644} */
  mode?: number;
  /** Seconds since the epoch. @default {1700000000} */
  mtime?: number;
  /** Symlink target for type "2". @default {""} */
  linkName?: string;
  /**
   * How a name that does not fit ustar's name/prefix fields is written: a pax
   * extended header (`path=`) or a GNU `././@LongLink` entry.
   * @default {"pax"}
   */
  longNames?: LongNameStyle;
  /** Always split the name into ustar prefix/name when it fits, even if short. @default {false} */
  forcePrefix?: boolean;
}

const encoder = new TextEncoder();

function _octal(value: number, width: number): string {
  // width includes the terminating NUL
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function _put(block: Uint8Array, offset: number, width: number, text: string | Uint8Array): void {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  if (bytes.length > width) throw new Error(`Cannot write tar field: ${bytes.length} > ${width}`);
  block.set(bytes, offset);
}

function _rawHeader(
  name: Uint8Array,
  prefix: Uint8Array,
  size: number,
  type: string,
  mode: number,
  mtime: number,
  linkName: string,
): Uint8Array {
  const block = new Uint8Array(TAR_BLOCK);
  _put(block, 0, 100, name);
  _put(block, 100, 8, _octal(mode, 8));
  _put(block, 108, 8, _octal(0, 8));
  _put(block, 116, 8, _octal(0, 8));
  if (size > 0o77777777777) throw new Error("Cannot write tar header: member larger than 8 GiB");
  _put(block, 124, 12, _octal(size, 12));
  _put(block, 136, 12, _octal(mtime, 12));
  block.fill(0x20, 148, 156); // checksum placeholder: spaces
  _put(block, 156, 1, type);
  _put(block, 157, 100, linkName);
  _put(block, 257, 6, "ustar\0");
  _put(block, 263, 2, "00");
  _put(block, 345, 155, prefix);
  let sum = 0;
  for (const byte of block) sum += byte;
  _put(block, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return block;
}

function _splitUstar(name: Uint8Array, force: boolean): [Uint8Array, Uint8Array] | undefined {
  if (name.length <= 100 && !force) return [name, new Uint8Array()];
  // find a '/' such that prefix <= 155 and name <= 100
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== 0x2f) continue;
    const prefix = name.subarray(0, i);
    const rest = name.subarray(i + 1);
    if (prefix.length <= 155 && rest.length <= 100 && rest.length > 0) return [rest, prefix];
  }
  return name.length <= 100 ? [name, new Uint8Array()] : undefined;
}

function _paxRecord(key: string, value: string): Uint8Array {
  const body = ` ${key}=${value}\n`;
  const bodyLength = encoder.encode(body).length;
  let length = bodyLength + 1;
  while (String(length).length + bodyLength !== length) length++;
  return encoder.encode(`${length}${body}`);
}

/**
 * The header block(s) for one member: a single ustar header, or, for a long
 * name, a pax (or GNU long name) entry followed by the ustar header. The
 * member's data (`size` bytes) and {@linkcode tarPadding} must follow.
 */
export function tarHeader(name: string, size: number, options: TarHeaderOptions = {}): Uint8Array {
  const type = options.type ?? "0";
  const mode = options.mode ?? (type === "5" ? 0o755 : 0o644);
  const mtime = options.mtime ?? 1700000000;
  const linkName = options.linkName ?? "";
  const nameBytes = encoder.encode(name);
  const split = _splitUstar(nameBytes, options.forcePrefix ?? false);
  if (split) return _rawHeader(split[0], split[1], size, type, mode, mtime, linkName);
  const truncated = nameBytes.subarray(0, 99);
  const header = _rawHeader(truncated, new Uint8Array(), size, type, mode, mtime, linkName);
  let extra: Uint8Array;
  if ((options.longNames ?? "pax") === "pax") {
    const record = _paxRecord("path", name);
    extra = concatBytes([
      _rawHeader(
        encoder.encode("PaxHeaders/x"),
        new Uint8Array(),
        record.length,
        "x",
        0o644,
        mtime,
        "",
      ),
      record,
      tarPadding(record.length),
    ]);
  } else {
    const data = concatBytes([nameBytes, new Uint8Array([0])]);
    extra = concatBytes([
      _rawHeader(encoder.encode("././@LongLink"), new Uint8Array(), data.length, "L", 0o644, 0, ""),
      data,
      tarPadding(data.length),
    ]);
  }
  return concatBytes([extra, header]);
}

/** The zero bytes that pad a member of `size` bytes to a whole block. */
export function tarPadding(size: number): Uint8Array {
  const rest = size % TAR_BLOCK;
  return new Uint8Array(rest === 0 ? 0 : TAR_BLOCK - rest);
}

/** The end-of-archive marker: two zero blocks. */
export function tarEnd(): Uint8Array {
  return new Uint8Array(2 * TAR_BLOCK);
}

/** One member for {@linkcode buildTar}. */
export interface TarEntry {
  /** Path inside the archive. */
  name: string;
  /** File content (a string is UTF-8 encoded). */
  data: string | Uint8Array;
  /** Header options for this member. */
  options?: TarHeaderOptions;
}

/** Options for {@linkcode buildTar}. */
export interface BuildTarOptions {
  /** Leave out the two zero end blocks (to append more later). @default {false} */
  omitEnd?: boolean;
}

/** Builds a whole tar archive in memory. */
export function buildTar(entries: TarEntry[], options: BuildTarOptions = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const entry of entries) {
    const data = typeof entry.data === "string" ? encoder.encode(entry.data) : entry.data;
    parts.push(tarHeader(entry.name, data.length, entry.options), data, tarPadding(data.length));
  }
  if (!options.omitEnd) parts.push(tarEnd());
  return concatBytes(parts);
}
